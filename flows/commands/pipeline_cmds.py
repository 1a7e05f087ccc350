"""`sphere run | generate | resume | serve`: start the Prefect flows from the command line.

Flows run in-process on the local ephemeral Prefect API unless ``PREFECT_API_URL`` points at
a server. A background thread polls the run plan and the artifact store to show stage/shard
progress (works for the thread and the Ray task runner alike).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Self

import typer

from flows.commands.common import ConfigOpt, PresetOpt, SetOpt, console, out, resolve_config

RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="Run id (default: a new one).")]
RunnerOpt = Annotated[
    str | None, typer.Option("--task-runner", help="Shard task runner: thread | ray.")
]


class ShardProgress:
    """Rich progress bars fed by polling ``runs/<id>/_plan.json`` and the artifact store."""

    def __init__(self, home: Path, run_id: str, interval: float = 0.5):
        self.home, self.run_id, self.interval = home, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sphere-progress", daemon=True)

    def __enter__(self) -> Self:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("shards"), TimeElapsedColumn(), console=console, transient=False,
        )
        self.progress.start()
        self._bars: dict[str, Any] = {}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()
        self.progress.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        from flows.common import read_plan
        from sphere_core.storage.artifacts import ArtifactStore
        from tasks.common import routing_stage

        plan = read_plan(self.home, self.run_id)
        if not plan:
            return
        store = ArtifactStore(self.home)
        for stage, key in plan["stages"].items():
            if stage not in self._bars:
                self._bars[stage] = self.progress.add_task(stage, total=plan["n_shards"])
            done = len(store.list_shards(routing_stage(stage), key))
            self.progress.update(self._bars[stage], completed=done)


def _overrides(set_: list[str] | None, task_runner: str | None) -> list[str]:
    extra = [f"orchestration.task_runner={task_runner}"] if task_runner else []
    return list(set_ or []) + extra


def _home(cfg: Any) -> Path:
    from flows.common import home_for

    return home_for(cfg)


def _run_flow(flow_fn: Callable[..., Any], cfg: Any, run_id: str) -> Any:
    from flows import prefect_env  # noqa: F401

    out.print(f"run id: {run_id}", markup=False, highlight=False)
    with ShardProgress(_home(cfg), run_id):
        return flow_fn(run_id=run_id, config=cfg.to_dict())


def print_summary(cfg: Any, run_id: str) -> None:
    """D's routing summary table from the run's materialised routing and pairs."""
    import pandas as pd

    from sphere_core.generate import summary_table
    from sphere_core.paths import run_dir

    base = run_dir(_home(cfg), run_id)
    routing = pd.concat([pd.read_parquet(p) for p in sorted((base / "routing").glob("*.parquet"))])
    pairs = pd.concat([pd.read_parquet(base / "pairs" / f"{s}.parquet") for s in ("train", "eval")])
    out.print(summary_table(routing, pairs))
    out.print(f"pairs: {base / 'pairs'}", markup=False, highlight=False)


def run(
    preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
    run_id: RunIdOpt = None, task_runner: RunnerOpt = None,
) -> None:
    """Run the whole pipeline (generate -> train -> evaluate -> report) as a Prefect flow."""
    from flows.common import new_run_id
    from flows.pipeline import pipeline_flow

    cfg = resolve_config(preset, config, _overrides(set_, task_runner))
    run_id = run_id or new_run_id()
    _run_flow(pipeline_flow, cfg, run_id)
    out.print(f"run {run_id} completed", markup=False, highlight=False)


def generate(
    preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
    run_id: RunIdOpt = None, task_runner: RunnerOpt = None,
) -> None:
    """Generate preference pairs (ingest -> search -> routing -> pairs); prints the routing summary."""
    from flows.common import new_run_id
    from flows.generate import generate_flow

    cfg = resolve_config(preset, config, _overrides(set_, task_runner))
    run_id = run_id or new_run_id()
    _run_flow(generate_flow, cfg, run_id)
    print_summary(cfg, run_id)


def resume(run_id: Annotated[str, typer.Argument(help="The run to resume.")]) -> None:
    """Re-run a run with its stored config; finished shards are reused, not recomputed."""
    from flows.common import repository
    from flows.generate import generate_flow
    from flows.pipeline import pipeline_flow
    from sphere_core.config import config_from_dict, load_config
    from sphere_core.errors import RunNotFoundError

    defaults = load_config()
    with repository(defaults, _home(defaults)) as repo:
        record = repo.get_run(run_id)
    if record is None:
        raise RunNotFoundError(f"no run {run_id!r} in the metadata store (see `sphere runs`)")
    cfg = config_from_dict(record["config"])
    kind = record.get("kind") or "pipeline"
    _run_flow(generate_flow if kind == "generate" else pipeline_flow, cfg, run_id)
    if kind == "generate":
        print_summary(cfg, run_id)
    out.print(f"run {run_id} completed", markup=False, highlight=False)


def serve(
    preset: PresetOpt = "demo",
    cron: Annotated[str, typer.Option(help="Cron schedule of the pipeline deployment.")] = "0 3 * * *",
) -> None:
    """Serve the generate/pipeline/train/evaluate deployments (start and schedule runs from the UI)."""
    from prefect import serve as prefect_serve

    from flows.pipeline import build_deployments

    out.print(f"serving deployments: generate, pipeline (cron {cron}), train, evaluate, report")
    prefect_serve(*build_deployments(preset=preset, cron=cron))


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("generate")(generate)
    app.command("resume")(resume)
    app.command("serve")(serve)
