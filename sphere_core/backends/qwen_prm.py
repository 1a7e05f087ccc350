"""``qwen-prm``: Qwen2.5-Math-PRM checkpoints (the paper's PRM), without ``trust_remote_code``.

Input format (the model card's): system "Please reason step by step, and put your final
answer within \\boxed{}.", user = the problem, assistant = every step followed by the step tag
``<extra_0>``, rendered with the checkpoint's chat template (no generation prompt). The reward
of step j is softmax(logits)[1] at the j-th ``<extra_0>`` position, so ONE forward pass per
candidate scores all of its steps (``score_last`` costs the same as ``score``).

The checkpoint is a Qwen2 backbone (weights ``model.*``) plus the value head ``score`` =
Sequential(Linear(h, h), ReLU, Linear(h, 2)) (weights ``score.0.*`` and ``score.2.*``, as in
the reference ``modeling_qwen2_rm.py``). The transformers path builds ``Qwen2Model`` from the
local ``config.json``, loads ``model.*`` through ``from_pretrained`` (missing backbone weights
are an error, not a silent random init) and loads ``score.*`` from the safetensors files itself.
Batches of ``prm.batch_size`` candidates are length-sorted and right-padded (causal attention:
pads after a token never change it).

With ``prm.model.backend = vllm`` the same prompts go to vLLM's pooling runner (imported
lazily; ``BackendError`` when vLLM is missing). Steps that contain the literal tag have it
removed first; a prompt over ``max_model_len`` tokens is a ``BackendError``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sphere_core.backends.prm import BasePRM
from sphere_core.backends.registry import register_prm
from sphere_core.config import ModelSpec, SphereConfig
from sphere_core.errors import BackendError, ModelLoadError

log = logging.getLogger(__name__)

STEP_TAG = "<extra_0>"
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
HEAD_PREFIX = "score."
BACKBONE_PREFIX = "model."


def qwen_prm_messages(question: str, steps: Sequence[str]) -> list[dict[str, str]]:
    clean = [s.replace(STEP_TAG, "").strip() for s in steps]
    return [
        {"role": "system", "content": QWEN_PRM_SYSTEM},
        {"role": "user", "content": question},
        {"role": "assistant", "content": STEP_TAG.join(clean) + STEP_TAG},
    ]


def step_tag_id(tokenizer: Any) -> int:
    ids = tokenizer.encode(STEP_TAG, add_special_tokens=False)
    if len(ids) != 1:
        raise ModelLoadError(
            f"qwen-prm: the tokenizer does not have {STEP_TAG} as one token (got ids {ids})"
        )
    return int(ids[0])


def build_head(hidden_size: int, num_labels: int = 2):
    from torch import nn

    return nn.Sequential(
        nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_labels)
    )


def read_head_weights(model_dir: Path) -> dict[str, Any]:
    """The ``score.*`` tensors of a (possibly sharded) safetensors checkpoint, prefix stripped."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({weight_map[k] for k in weight_map if k.startswith(HEAD_PREFIX)})
    else:
        files = sorted(p.name for p in model_dir.glob("*.safetensors"))
    tensors: dict[str, Any] = {}
    for name in files:
        with safe_open(str(model_dir / name), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                if key.startswith(HEAD_PREFIX):
                    tensors[key[len(HEAD_PREFIX) :]] = f.get_tensor(key)
    if not tensors:
        raise ModelLoadError(
            f"qwen-prm: no value-head weights ({HEAD_PREFIX}*) in the safetensors files of "
            f"{model_dir}; is this a Qwen2.5-Math-PRM checkpoint?"
        )
    return tensors


def load_transformers(model_dir: Path, device: str, dtype: Any):
    """(backbone, head) with every checkpoint weight loaded, in eval mode on ``device``."""
    from transformers import AutoConfig, Qwen2Model
    from transformers.utils import logging as hf_logging

    config = AutoConfig.from_pretrained(str(model_dir))
    if getattr(config, "model_type", None) != "qwen2":
        raise ModelLoadError(
            f"qwen-prm expects a Qwen2 checkpoint, {model_dir} has model_type {config.model_type!r}"
        )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the score.* keys are "unexpected" for the bare backbone
    try:
        backbone, info = Qwen2Model.from_pretrained(
            str(model_dir), dtype=dtype, output_loading_info=True
        )
    except OSError as err:
        raise ModelLoadError(f"qwen-prm: cannot load the backbone from {model_dir}: {err}") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    if info.get("missing_keys"):
        raise ModelLoadError(
            f"qwen-prm: {model_dir} lacks backbone weights {sorted(info['missing_keys'])[:5]}"
        )
    head = build_head(config.hidden_size)
    weights = read_head_weights(model_dir)
    try:
        head.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ModelLoadError(
            f"qwen-prm: value head weights in {model_dir} do not fit: {err}"
        ) from err
    backbone = backbone.to(device).eval()
    head = head.to(device=device, dtype=dtype).eval()
    return backbone, head


class QwenPRM(BasePRM):
    """transformers implementation (CPU or GPU)."""

    name = "qwen-prm"

    def __init__(
        self, backbone: Any, head: Any, tokenizer: Any, *, batch_size: int = 16, max_len: int = 4096
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tokenizer = tokenizer
        self.step_id = step_tag_id(tokenizer)
        self.batch_size = int(batch_size)
        self.max_len = int(max_len)
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.pad_id = int(pad) if pad is not None else 0

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        max_len: int = 4096,
    ) -> QwenPRM:
        from transformers import AutoTokenizer

        from sphere_core.devices import pick_device, pick_dtype

        dev = pick_device(device)
        backbone, head = load_transformers(Path(model_dir), dev, pick_dtype(dtype, dev))
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return cls(backbone, head, tokenizer, batch_size=batch_size, max_len=max_len)

    def encode(self, question: str, steps: Sequence[str]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            qwen_prm_messages(question, steps), tokenize=False, add_generation_prompt=False
        )
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        if len(ids) > self.max_len:
            raise BackendError(
                f"qwen-prm: a candidate is {len(ids)} tokens, over max_model_len={self.max_len}"
            )
        return ids

    def _score(self, questions, steps, golds):
        import torch

        encoded = [self.encode(q, s) for q, s in zip(questions, steps)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out: list[list[float]] = [[] for _ in encoded]
        device = next(self.backbone.parameters()).device
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[r, : len(encoded[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            with torch.inference_mode():
                hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
                tagged = (ids == self.step_id) & mask.bool()
                probs = torch.softmax(self.head(hidden[tagged]).float(), dim=-1)[:, 1]
            counts = tagged.sum(dim=1).tolist()
            flat = probs.tolist()
            start = 0
            for r, i in enumerate(idx):
                out[i] = flat[start : start + counts[r]]
                start += counts[r]
        return out


class VLLMQwenPRM(BasePRM):
    """vLLM pooling-runner implementation (GPU); same prompts, same reward definition."""

    name = "qwen-prm"

    def __init__(self, model_dir: Path, spec: ModelSpec) -> None:
        super().__init__()
        try:
            from vllm import LLM
        except ImportError as err:
            raise BackendError(
                "prm.model.backend=vllm needs vLLM, which is not installed (pip install "
                "'sphere-dpo[gpu]')"
            ) from err
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.step_id = step_tag_id(self.tokenizer)
        self.max_len = spec.max_model_len
        kwargs = {
            "model": str(model_dir),
            "max_model_len": spec.max_model_len,
            "gpu_memory_utilization": spec.gpu_memory_utilization,
            "enable_prefix_caching": False,
        }
        if spec.dtype != "auto":
            kwargs["dtype"] = spec.dtype
        self.llm = _vllm_llm(LLM, kwargs, self.step_id)

    def _score(self, questions, steps, golds):
        import torch

        prompts: list[list[int]] = []
        for q, s in zip(questions, steps):
            text = self.tokenizer.apply_chat_template(
                qwen_prm_messages(q, s), tokenize=False, add_generation_prompt=False
            )
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))
            if len(ids) > self.max_len:
                raise BackendError(
                    f"qwen-prm: a candidate is {len(ids)} tokens, over max_model_len={self.max_len}"
                )
            prompts.append(ids)
        outputs = _vllm_encode(self.llm, [{"prompt_token_ids": p} for p in prompts])
        scores: list[list[float]] = []
        for ids, out, s in zip(prompts, outputs, steps):
            data = torch.as_tensor(out.outputs.data).float().cpu()
            if data.shape[0] == len(ids):  # per-token output: keep the step-tag positions
                data = data[torch.tensor(ids) == self.step_id]
            if data.ndim != 2 or data.shape[0] != len(s):
                raise BackendError(
                    f"qwen-prm (vLLM): expected one score per step ({len(s)}), got shape "
                    f"{tuple(data.shape)}"
                )
            if not torch.allclose(data.sum(-1), torch.ones(data.shape[0]), atol=1e-3):
                data = torch.softmax(data, dim=-1)  # raw logits (no softmax in this vLLM's pooler)
            scores.append(data[:, 1].tolist())
        return scores


def _vllm_llm(LLM: Any, kwargs: dict, step_id: int) -> Any:
    """Pooling-runner ``LLM`` whose STEP pooler reads our tokenizer's step tag (API differs by
    version)."""
    try:
        from vllm.config import PoolerConfig

        pooler = PoolerConfig(step_tag_id=step_id)
    except (ImportError, TypeError):
        pooler = None
    attempts = [
        {"runner": "pooling", "pooler_config": pooler},
        {"task": "reward", "override_pooler_config": pooler},
    ]
    last: Exception | None = None
    for extra in attempts:
        try:
            return LLM(**kwargs, **{k: v for k, v in extra.items() if v is not None})
        except TypeError as err:  # an argument this vLLM version does not know
            last = err
    raise BackendError(f"qwen-prm: this vLLM version cannot start a pooling model: {last}")


def _vllm_encode(llm: Any, prompts: list[dict]) -> list[Any]:
    try:
        return llm.encode(prompts, pooling_task="token_classify", use_tqdm=False)
    except TypeError:  # older vLLM: no pooling_task argument
        return llm.encode(prompts, use_tqdm=False)


@register_prm("qwen-prm")
def _factory(cfg: SphereConfig, home: Path) -> BasePRM:
    from sphere_core.backends.embedded import resolve_model_path

    spec = cfg.prm_model
    model_dir = resolve_model_path(spec.path, home)
    if spec.backend == "vllm":
        return VLLMQwenPRM(model_dir, spec)
    if spec.backend != "hf":
        raise BackendError(
            f"qwen-prm runs on the hf or vllm backend, not {spec.backend!r} (prm.model.backend)"
        )
    return QwenPRM.load(
        model_dir,
        device=spec.device,
        dtype=spec.dtype,
        batch_size=cfg.prm.batch_size,
        max_len=spec.max_model_len,
    )
