"""Run-level sections: the header (status, rounds reached, unreadable parts) and the setup
(policy, π_small, PRM, DPO settings; says when π_small = π or is of another family)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sphere_core.evaluation.report.loading import RunParts
from sphere_core.evaluation.report.markdown import Figures


def _status_lines(record: dict, planned: int, reached: int) -> list[str]:
    status = str(record.get("status") or "unknown")
    lines = [
        (
            f"Run status: **{status}** · rounds reached: **{reached} of {planned}** · "
            f"kind: {record.get('kind', '?')} · "
            f"report generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC."
        ),
        "",
    ]
    if status in ("running", "pending"):
        lines += [
            (
                f"> The store still says **{status}**: either the run is in progress or it "
                "stopped without updating its record. The sections below show the parts "
                "that exist now."
            ),
            "",
        ]
    elif status in ("failed", "cancelled"):
        lines += [
            f"> The run was **{status}**"
            + (f": {record['error']}" if record.get("error") else "")
            + ". The sections below show the parts it finished"
            + (" (`sphere resume` continues a cancelled run)." if status == "cancelled" else "."),
            "",
        ]
    elif status == "completed" and record.get("error"):  # errors within the error budget
        lines += [f"> Completed with errors: {record['error']} (`sphere resume` retries them).", ""]
    return lines


def header(run: RunParts, figs: Figures) -> list[str]:
    """Title, run status and rounds reached, then the run-level unreadable parts."""
    lines = [f"# SPHERE run report: `{run.run_id}`", ""]
    if run.record is None:
        lines += [
            (
                f"Run status: **unknown** (no run record in the store); rounds found on disk: "
                f"{run.reached}."
            ),
            f"Report generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
            "",
        ]
    else:
        lines += _status_lines(run.record, max(run.planned, run.last), run.reached)
    if run.problems:
        lines += ["> **Unreadable parts:** " + "; ".join(run.problems), ""]
    return lines


def model_family(path: str, home: Path) -> tuple[str, str] | None:
    """(how it was found, family) of a model path, or None when it cannot be told offline.

    Embedded models are named by their title (``Qwen2.5``, ``SmolLM2``); local Hugging Face
    dirs by ``model_type`` in their config.json. Families are only compared within one kind.
    """
    from sphere_core.backends.embedded import EMBEDDED_MODELS

    if path in EMBEDDED_MODELS:
        return "title", EMBEDDED_MODELS[path].title.split("-")[0].lower()
    config = Path(path).expanduser() / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return ("model_type", str(model_type)) if model_type else None


def describe_model(path: str | None) -> str:
    from sphere_core.backends.embedded import EMBEDDED_MODELS

    if path is None:
        return "?"
    model = EMBEDDED_MODELS.get(path)
    return f"`{path}` ({model.title})" if model else f"`{path}`"


def _small_model_note(policy: str, small: str | None, home: Path) -> list[str]:
    if small is None or small == policy:
        return [
            "",
            (
                "> **Note:** π_small = π in this run (models.small is not set or equals the "
                f"policy {describe_model(policy)}), so the diversity stage's negatives come "
                "from sampling more candidates with the same model, not from a smaller "
                "model as in the paper."
            ),
        ]
    fam_p, fam_s = model_family(policy, home), model_family(small, home)
    if fam_p and fam_s and fam_p[0] == fam_s[0] and fam_p[1] != fam_s[1]:
        return [
            "",
            (
                "> **Note:** π_small is a weaker model of another family, not a smaller "
                f"sibling as in the paper (π: {fam_p[1]}, π_small: {fam_s[1]}). Its wrong "
                "answers are still verified wrong, but they are another family's mistakes "
                "rather than a smaller π's."
            ),
        ]
    return []


def setup(run: RunParts, figs: Figures) -> list[str]:
    """Models, PRM, DPO and self-evolution settings from the run's stored configuration."""
    out = ["## Setup", ""]
    config = run.config
    if not config:
        return out + ["_No run record in the store: the configuration is unknown._", ""]
    models = config.get("models") or {}
    policy = (models.get("policy") or {}).get("path", "?")
    small_spec = models.get("small")
    small = (small_spec or {}).get("path") if small_spec else None
    prm = config.get("prm") or {}
    tr = config.get("training") or {}
    prm_model = (prm.get("model") or {}).get("path") if prm.get("model") else None
    out += [
        f"- Policy π: {describe_model(policy)}",
        f"- π_small (the diversity stage's model): {describe_model(small or policy)}",
        f"- PRM: `{prm.get('kind', '?')}`"
        + (f" on {describe_model(prm_model)}" if prm_model else " (on the policy model)"),
        (
            f"- DPO: β={tr.get('beta')}, lr={tr.get('learning_rate')}, "
            f"warmup={tr.get('warmup_ratio')}, epochs={tr.get('num_epochs')}, "
            f"max_steps={tr.get('max_steps')}, LoRA r={tr.get('lora_r')}/α={tr.get('lora_alpha')}"
            f"/dropout={tr.get('lora_dropout')}"
        ),
    ]
    evo = config.get("evolution") or {}
    if int(evo.get("rounds") or 1) > 1:
        out.append(
            f"- Self-evolution: {evo.get('rounds')} rounds; questions per round: "
            f"{evo.get('question_schedule', 'same')} schedule; π_small "
            + ("follows the trained policy" if evo.get("evolve_small") else "stays as configured")
        )
    return out + _small_model_note(policy, small, run.home) + [""]
