"""storage/keys.py: one place for every key, and a code version that cannot be forgotten."""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from pathlib import Path

import pandas as pd

from sphere_core.config import resolve_config
from sphere_core.search.sampling_search import search_config
from sphere_core.stages import all_stages
from sphere_core.storage import keys

STAGE_HOOKS = ("artifact_config", "model", "num_candidates", "uses_orm")


def _normalised(source: str) -> str:
    """The AST of ``source`` without docstrings, comments or layout."""
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def keyed_source_hash() -> str:
    """Hash of the code that computes keys: keys.py's functions, the stages' key hooks."""
    module = ast.parse(Path(keys.__file__).read_text())
    parts = [
        _normalised(ast.unparse(node))
        for node in module.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    ]
    for stage in all_stages():
        for hook in STAGE_HOOKS:
            owner = next(c for c in type(stage).__mro__ if hook in vars(c))
            parts.append(
                f"{owner.__name__}.{hook}:" + _normalised(inspect.getsource(vars(owner)[hook]))
            )
    parts.append(_normalised(inspect.getsource(search_config)))
    return hashlib.sha256("\n".join(sorted(set(parts))).encode()).hexdigest()[:16]


def test_keyed_code_changes_only_with_a_decision_about_the_code_version():
    got = keyed_source_hash()
    assert got == keys.KEYED_SOURCE, (
        f"the code that computes artifact keys changed (hash {got}, recorded "
        f"{keys.KEYED_SOURCE}). If stored outputs made before this change are no longer valid, "
        f"bump CODE_VERSION (now {keys.CODE_VERSION!r}); either way set KEYED_SOURCE = {got!r} "
        "in sphere_core/storage/keys.py"
    )


def test_the_source_hash_ignores_docstrings_and_layout_but_not_code():
    base = 'def f(x):\n    """Doc."""\n    return {"a": x}\n'
    assert _normalised(base) == _normalised('def f(x):\n    return {"a":  x}  # note\n')
    assert _normalised(base) != _normalised('def f(x):\n    return {"b": x}\n')


def test_artifact_keys_are_unchanged_for_the_same_inputs():
    """Pinned values: a refactor must not move every cache (CODE_VERSION "2")."""
    assert keys.CODE_VERSION == "2"
    assert keys.artifact_key("stage1", {"e": 5, "t": 0.8}, ["abc"]) == "71377520b0a36ac5"


def test_input_fingerprint_names_and_content(tmp_path):
    a = tmp_path / "q.jsonl"
    a.write_bytes(b'{"q": 1}\n' * 100_000)
    first = keys.input_fingerprint(a)
    assert first.startswith("file-") and len(first) == 5 + 24
    assert keys.file_sha256(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    a.write_bytes(b'{"q": 2}\n' * 100_000)
    assert keys.input_fingerprint(a) != first
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"x")
    before = keys.input_fingerprint(folder)
    (folder / "w.bin").rename(folder / "v.bin")
    assert keys.input_fingerprint(folder) != before  # names count, not only bytes


def test_weights_id_follows_the_record(tmp_path):
    merged, adapter = tmp_path / "merged", tmp_path / "adapter"
    merged.mkdir()
    adapter.mkdir()
    assert keys.weights_id(str(merged)) is None
    (adapter / "adapter_model.safetensors").write_bytes(b"one")
    keys.write_weights_record(merged, "embedded-small", adapter)
    first = keys.weights_id(str(merged))
    (adapter / "adapter_model.safetensors").write_bytes(b"two")
    keys.write_weights_record(merged, "embedded-small", adapter)
    assert first is not None and keys.weights_id(str(merged)) not in (None, first)


def test_stage_and_pairs_keys_chain():
    cfg = resolve_config("demo")
    stages, pairs = keys.stage_keys(cfg, "q1")
    assert list(stages) == cfg.routing.stages
    again, pairs_again = keys.stage_keys(cfg, "q1")
    assert (again, pairs_again) == (stages, pairs)
    other, other_pairs = keys.stage_keys(cfg, "q2")
    assert set(other.values()).isdisjoint(stages.values()) and other_pairs != pairs


def test_training_key_ignores_the_checkpoint_schedule():
    cfg = resolve_config("demo")
    tree = cfg.to_dict()
    tree["training"]["save_total_limit"] = tree["training"].get("save_total_limit", 2) + 1
    changed = resolve_config(base=tree)
    assert keys.training_key(changed, "p") == keys.training_key(cfg, "p")
    tree["training"]["seed"] += 1
    assert keys.training_key(resolve_config(base=tree), "p") != keys.training_key(cfg, "p")


def test_questions_fingerprint_reads_the_question_columns_only():
    q = pd.DataFrame({"question_id": ["a"], "problem": ["1+1"], "answer": ["2"]})
    assert keys.questions_fingerprint(q) == keys.questions_fingerprint(q.assign(source="x"))
    assert keys.questions_fingerprint(q) != keys.questions_fingerprint(q.assign(answer=["3"]))
