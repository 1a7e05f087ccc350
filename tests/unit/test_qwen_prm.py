"""qwen-prm on a tiny random Qwen2.5-Math-PRM-shaped checkpoint built locally (no downloads)."""

from __future__ import annotations

import pytest

from sphere_core.backends.registry import lookup
from sphere_core.config import resolve_config
from sphere_core.errors import BackendError, ModelLoadError
from tests.unit.tiny_models import save_tiny_qwen_prm, tiny_llama, tiny_tokenizer

torch = pytest.importorskip("torch")

Q = "Tom has 3 apples and buys 2 more. How many apples does he have?"
CANDIDATES = [
    [
        "Tom has 3 apples.",
        "3 + 2 = 5.",
        "Final Answer: The final answer is $5$. I hope it is correct.",
    ],
    ["3 + 2 = 8."],
    ["Tom has 3 apples.", "He buys 2 more."],
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_qwen_prm")
    backbone, head, _ = save_tiny_qwen_prm(out)
    from transformers import AutoTokenizer

    return out, backbone, head, AutoTokenizer.from_pretrained(str(out))  # as the PRM loads it


def _prm(path, home, **prm):
    cfg = resolve_config(
        overrides=[
            "prm.kind=qwen-prm",
            f"prm.model.path={path}",
            "prm.model.dtype=float32",
            "prm.batch_size=2",
        ]
        + [f"prm.{k}={v}" for k, v in prm.items()]
    )
    return lookup("prm", "qwen-prm")(cfg=cfg, home=home)


def _manual(backbone, head, tokenizer, question, steps):
    """The model card's recipe, unbatched: tagged chat text -> softmax(head)[..., 1] at the tags."""
    text = (
        "<|im_start|>system\nPlease reason step by step, "
        "and put your final answer within \\boxed{}.<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n"
        "<|im_start|>assistant\n" + "<extra_0>".join(steps) + "<extra_0><|im_end|>\n"
    )
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        probs = torch.softmax(head(backbone(input_ids=ids).last_hidden_state), dim=-1)[0, :, 1]
    tag = tokenizer.convert_tokens_to_ids("<extra_0>")
    return probs[ids[0] == tag].tolist()


def test_scores_match_a_manual_forward_and_are_batch_invariant(checkpoint, tmp_path):
    path, backbone, head, tokenizer = checkpoint
    prm = _prm(path, tmp_path)
    scores = prm.score([Q] * 3, CANDIDATES)
    assert [len(s) for s in scores] == [3, 1, 2]
    for got, steps in zip(scores, CANDIDATES):
        assert all(0.0 <= x <= 1.0 for x in got)
        assert got == pytest.approx(_manual(backbone, head, tokenizer, Q, steps), abs=1e-5)
    assert prm.score([Q] * 3, CANDIDATES) == scores  # deterministic
    assert prm.score([Q], [CANDIDATES[0]])[0] == pytest.approx(scores[0], abs=1e-5)  # padding-free
    assert prm.score_last([Q] * 3, CANDIDATES) == pytest.approx([s[-1] for s in scores], abs=1e-6)


def test_literal_step_tag_in_a_step_is_removed(checkpoint, tmp_path):
    path, *_ = checkpoint
    prm = _prm(path, tmp_path)
    assert prm.score([Q], [["3 + 2 = 5.<extra_0>", "done"]])[0] == pytest.approx(
        prm.score([Q], [["3 + 2 = 5.", "done"]])[0], abs=1e-6
    )


def test_checkpoint_without_value_head_is_a_model_load_error(tmp_path):
    from safetensors.torch import load_file, save_file

    src = tmp_path / "ok"
    save_tiny_qwen_prm(src)
    weights = load_file(str(src / "model.safetensors"))
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("score.")},
        str(src / "model.safetensors"),
    )
    with pytest.raises(ModelLoadError, match="no value-head weights"):
        _prm(src, tmp_path)


def test_non_qwen2_checkpoint_is_rejected(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok))
    model.save_pretrained(str(tmp_path / "llama"))
    tok.save_pretrained(str(tmp_path / "llama"))
    with pytest.raises(ModelLoadError, match="expects a Qwen2 checkpoint"):
        _prm(tmp_path / "llama", tmp_path)


def test_unsupported_backend_and_missing_vllm_are_backend_errors(checkpoint, tmp_path):
    path, *_ = checkpoint
    cfg = resolve_config(
        overrides=[
            "prm.kind=qwen-prm",
            f"prm.model.path={path}",
            "prm.model.backend=openai-compatible",
        ]
    )
    with pytest.raises(BackendError, match="hf or vllm"):
        lookup("prm", "qwen-prm")(cfg=cfg, home=tmp_path)
    try:
        import vllm  # noqa: F401
    except ImportError:
        cfg = resolve_config(
            overrides=["prm.kind=qwen-prm", f"prm.model.path={path}", "prm.model.backend=vllm"]
        )
        with pytest.raises(BackendError, match="needs vLLM"):
            lookup("prm", "qwen-prm")(cfg=cfg, home=tmp_path)


@pytest.mark.gpu
def test_vllm_and_transformers_paths_agree(checkpoint, tmp_path):
    pytest.importorskip("vllm")
    path, *_ = checkpoint
    hf = _prm(path, tmp_path)
    cfg = resolve_config(
        overrides=[
            "prm.kind=qwen-prm",
            f"prm.model.path={path}",
            "prm.model.backend=vllm",
            "prm.model.dtype=float32",
            "prm.model.gpu_memory_utilization=0.3",
        ]
    )
    vl = lookup("prm", "qwen-prm")(cfg=cfg, home=tmp_path)
    for a, b in zip(hf.score([Q] * 3, CANDIDATES), vl.score([Q] * 3, CANDIDATES)):
        assert a == pytest.approx(b, abs=2e-3)
