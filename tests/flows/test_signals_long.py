"""Long work seen from outside, on the real tiny model through the CLI: `sphere train` killed
with SIGKILL resumes at the next step; SIGINT / SIGTERM mid-training write a checkpoint and exit
130 / 143 with the one line naming the command that resumes; SIGTERM mid-evaluation exits 143
within seconds; a second `sphere train` of the same run and round waits for the first and
reuses its result instead of training again.

Pairs come from a fast `sphere generate` on the orchestration fakes; DPO then trains
``embedded-small`` on them (one-pair steps, a checkpoint every step).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.flows.conftest import sphere_cli
from tests.flows.orch_fakes import fake_overrides
from tests.flows.test_signals import Reader, final_line, start, stop, wait_for_first_shard

pytestmark = pytest.mark.slow

STEPS = 6
TRAIN_SETS = [
    "models.policy={path: embedded-small, backend: hf, device: cpu}",
    f"training.max_steps={STEPS}",
    "training.per_device_batch_size=1",
    "training.max_length=96",
    "training.lora_r=4",
    "training.lora_alpha=8",
    "training.save_steps=1",
    "training.eval_steps=100",
    "training.warmup_ratio=0.0",
]


def _sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture
def home(tmp_path, session_models_dir) -> Path:
    """A home whose converted tiny model is the session's (converted once)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(session_models_dir, target_is_directory=True)
    return home


@pytest.fixture
def run_with_pairs(prefect_api, home, questions_file):
    """(home, run id): a run whose pairs exist (generated on the fakes)."""
    run_id = "long-1"
    done = sphere_cli(
        ["generate", "--run-id", run_id, *_sets(fake_overrides(questions_file))], home, prefect_api
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (home / "runs" / run_id / "pairs" / "train.parquet").is_file()
    return home, run_id


def _checkpoint(home: Path, run_id: str, step: int) -> Path:
    return home / "runs" / run_id / "model" / "checkpoints" / f"checkpoint-{step}"


def _wait_for_checkpoint(home, run_id, step, proc, err, timeout=240) -> None:
    marker = _checkpoint(home, run_id, step) / "sphere_checkpoint.json"
    deadline = time.time() + timeout
    while not marker.is_file():
        assert proc.poll() is None, err.text()[-3000:]
        assert time.time() < deadline, f"no checkpoint-{step}: {err.lines[-5:]}"
        time.sleep(0.2)


def _train_log(home: Path, run_id: str) -> dict:
    return json.loads((home / "runs" / run_id / "model" / "train_log.json").read_text())


def test_sigkill_mid_dpo_then_rerun_resumes_at_the_next_step(prefect_api, run_with_pairs):
    home, run_id = run_with_pairs
    args = ["train", "--run", run_id, *_sets(TRAIN_SETS)]
    proc, _, err = start(args, home, prefect_api)
    _wait_for_checkpoint(home, run_id, 2, proc, err)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = sphere_cli(args, home, prefect_api)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = [ln for ln in again.stderr.splitlines() if "resuming from step" in ln]
    assert resumed, again.stderr[-3000:]
    k = int(resumed[0].split("resuming from step ")[1].split()[0])
    assert k >= 2
    assert f"dpo step {k + 1}/{STEPS}" in again.stderr
    assert f"dpo step {k}/{STEPS}" not in again.stderr  # step k is not trained twice
    log = _train_log(home, run_id)
    assert log["metrics"]["global_step"] == STEPS and log["metrics"]["resumed_from_step"] == k
    assert [h["step"] for h in log["log_history"] if "loss" in h] == list(range(1, STEPS + 1))


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [
        (signal.SIGINT, 130, "interrupted (SIGINT)"),
        (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    ],
)
def test_a_signal_mid_dpo_writes_a_checkpoint_and_names_the_command(
    prefect_api, run_with_pairs, signum, code, word
):
    home, run_id = run_with_pairs
    args = ["train", "--run", run_id, *_sets(TRAIN_SETS + ["training.save_steps=0"])]
    proc, _, err = start(args, home, prefect_api)
    deadline = time.time() + 240
    while not any("dpo step 1/" in ln for ln in err.lines):
        assert proc.poll() is None and time.time() < deadline, err.text()[-3000:]
        time.sleep(0.1)
    os.killpg(proc.pid, signum)  # as a terminal sends Ctrl-C: to the whole process group
    took = _wait(proc, 90)
    assert proc.returncode == code, err.text()[-3000:]
    assert took < 60
    line = final_line(err.text())
    assert line.startswith(f"{word}; continue with `sphere train --run {run_id}")
    stopped = [ln for ln in err.lines if "dpo: stopped at step" in ln]
    assert stopped, err.text()[-3000:]
    step = int(stopped[0].split("stopped at step ")[1].split("/")[0])
    assert 1 <= step < STEPS
    assert (_checkpoint(home, run_id, step) / "sphere_checkpoint.json").is_file()
    assert not (home / "runs" / run_id / "model" / "adapter").exists()


def _wait(proc, timeout: float) -> float:
    began = time.monotonic()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running {timeout} s after the signal")
    return time.monotonic() - began


def test_sigterm_mid_evaluation_exits_143_within_seconds(prefect_api, home, tmp_path):
    questions = tmp_path / "bench.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"id": f"b{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)})
            + "\n"
            for i in range(40)
        )
    )
    args = [
        "evaluate",
        "--model",
        "embedded-small",
        "--benchmark-file",
        str(questions),
        *_sets(
            [
                "models.policy.batch_size=1",
                "evaluation.max_new_tokens=64",
                "models.policy.device=cpu",
            ]
        ),
    ]
    proc, _, err = start(args, home, prefect_api)
    deadline = time.time() + 240
    while not any("answers in" in ln for ln in err.lines):
        assert proc.poll() is None and time.time() < deadline, err.text()[-3000:]
        time.sleep(0.1)
    took = stop(proc, signal.SIGTERM, timeout=60)
    assert proc.returncode == 143, err.text()[-3000:]
    assert took < 20
    assert final_line(err.text()).startswith("terminated (SIGTERM); continue with `sphere evaluate")


def test_a_second_train_of_the_same_round_waits_and_reuses(prefect_api, run_with_pairs):
    home, run_id = run_with_pairs
    args = ["train", "--run", run_id, *_sets(TRAIN_SETS + ["training.max_steps=3"])]
    first, _, first_err = start(args, home, prefect_api)
    deadline = time.time() + 240
    while not any("dpo: " in ln and "train /" in ln for ln in first_err.lines):
        assert first.poll() is None and time.time() < deadline, first_err.text()[-3000:]
        time.sleep(0.1)
    second = sphere_cli(args, home, prefect_api)
    assert first.wait(timeout=300) == 0, first_err.text()[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert "is being trained by pid" in second.stderr
    assert "dpo step" not in second.stderr  # it trained nothing itself
    assert _train_log(home, run_id)["metrics"]["global_step"] == 3


def test_sigint_stops_sphere_started_with_sigint_ignored(prefect_api, tmp_path, questions_file):
    """A script's background job (`sphere generate ... &`) starts with SIGINT ignored; Ctrl-C
    sent to its process group still stops it (exit 130, the line naming `sphere resume`)."""
    from tests.flows.conftest import REPO_ROOT

    home = tmp_path / "home"
    env = {
        **os.environ,
        "SPHERE_HOME": str(home),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "SPHERE_FAKE_DELAY_S": "0.3",
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("SPHERE_DATABASE_URL", None)
    code = (
        "import sys, tests.flows.orch_fakes; from flows.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    args = [
        "generate",
        "--run-id",
        "bg-1",
        *_sets(fake_overrides(questions_file, backend="fake-slow")),
    ]
    ignoring = ["sh", "-c", 'trap "" INT; exec "$0" "$@"']  # what `cmd &` in a script does
    proc = subprocess.Popen(
        [*ignoring, sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    err = Reader(proc.stderr)
    Reader(proc.stdout)
    wait_for_first_shard(home, proc, err, timeout=120)
    os.killpg(proc.pid, signal.SIGINT)
    _wait(proc, 60)
    assert proc.returncode == 130, err.text()[-3000:]
    assert final_line(err.text()).startswith(
        "interrupted (SIGINT); run bg-1 stopped, continue it with `sphere resume bg-1`"
    )


CANCEL_STEPS = 40


def _as_tree(assignments: list[str]) -> dict:
    """``a.b=c`` settings as the nested dict a deployment's ``config`` parameter takes."""
    from sphere_core.config.resolve import apply_override

    tree: dict = {}
    for assignment in assignments:
        tree = apply_override(tree, assignment)
    return tree


def _final_state(client, flow_run_id, timeout: float):
    deadline = time.time() + timeout
    while True:
        state = client.read_flow_run(flow_run_id).state
        if state is not None and state.is_final():
            return state
        assert time.time() < deadline, f"flow run still {state and state.type} after {timeout} s"
        time.sleep(0.5)


def test_cancelling_a_training_flow_run_from_the_ui_checkpoints_then_resumes(
    prefect_api, run_with_pairs, tmp_path, monkeypatch
):
    """What the UI's Cancel does to a deployment run served by `sphere serve`: the flow run is set
    to Cancelling, the runner sends SIGTERM to its process (SIGKILL 30 s later). DPO finishes the
    step under way, writes a checkpoint and stops; the flow run ends Cancelled; `sphere train` of
    the same run and settings resumes from that checkpoint. The deployment gets only the run id
    and the training settings: models and the rest come from the run's recorded config."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    home, run_id = run_with_pairs
    # the flow-run process the runner starts must know the test backends of the recorded config
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import tests.flows.orch_fakes  # noqa: F401\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    sets = TRAIN_SETS + [f"training.max_steps={CANCEL_STEPS}"]
    serve, out, err = start(["serve"], home, prefect_api, {"PREFECT_RUNNER_POLL_FREQUENCY": "2"})
    try:
        out.wait_for("serving deployments", serve, timeout=120)
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("train/sphere-train")
            flow_run = client.create_flow_run_from_deployment(
                deployment.id, parameters={"run_id": run_id, "config": _as_tree(sets)}
            )
            _wait_for_checkpoint(home, run_id, 1, serve, err, timeout=300)
            client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
            state = _final_state(client, flow_run.id, timeout=120)
        assert state.is_cancelled(), (state, out.lines[-20:], err.lines[-20:])
    finally:
        stop(serve, signal.SIGTERM)
    logs = out.text() + "\n" + err.text()
    stopped = [ln for ln in logs.splitlines() if "dpo: stopped at step" in ln]
    assert stopped, logs[-6000:]  # the graceful path, not the runner's SIGKILL
    step = int(stopped[0].split("stopped at step ")[1].split("/")[0])
    assert 1 <= step < CANCEL_STEPS
    assert (_checkpoint(home, run_id, step) / "sphere_checkpoint.json").is_file()
    assert not (home / "runs" / run_id / "model" / "adapter").exists()

    again = sphere_cli(["train", "--run", run_id, *_sets(sets)], home, prefect_api)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from step {step}" in again.stderr, again.stderr[-3000:]
    assert _train_log(home, run_id)["metrics"]["global_step"] == CANCEL_STEPS
