"""A merged model dir from a trained adapter (``training.save_merged``) is a complete policy:
it loads through SPHERE's model resolver, generates, keeps the base's chat template and
architecture, and its weights differ from the base's."""

from __future__ import annotations

import hashlib

from sphere_core.training.dpo import MERGED_FILES, train_dpo
from tests.unit.test_dpo import SYSTEM, make_pairs, quick_cfg


def _state_hash(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_merged_dir_is_a_complete_policy_that_differs_from_the_base(tmp_path, sphere_home):
    import json

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sphere_core.backends.embedded import resolve_model_path
    from sphere_core.backends.hf import HFGenerator

    make_pairs(2).to_parquet(tmp_path / "train.parquet")
    cfg = quick_cfg(
        **{
            "training.max_steps": "1",
            "training.per_device_batch_size": "1",
            "training.learning_rate": "5e-3",
            "training.max_length": "64",
            "training.save_merged": "true",
        }
    )
    result = train_dpo(cfg, tmp_path / "train.parquet", None, tmp_path / "model", sphere_home)

    merged = result.merged_dir
    assert merged is not None and merged.name == "merged"
    assert all((merged / name).is_file() for name in MERGED_FILES)
    assert list(merged.glob("*.safetensors")) and not (merged / "adapter_config.json").exists()
    assert resolve_model_path(str(merged), sphere_home) == merged.resolve()

    base_dir = resolve_model_path("embedded-small", sphere_home)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert model.state_dict().keys() == base.state_dict().keys()
    assert _state_hash(model) != _state_hash(base)
    # the difference is exactly the trained LoRA update: W + (alpha / r) * B @ A
    lora = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    adapter_cfg = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    scale = adapter_cfg["lora_alpha"] / adapter_cfg["r"]
    key = next(k for k in lora if k.endswith("layers.0.self_attn.q_proj.lora_A.weight"))
    delta = scale * lora[key.replace("lora_A", "lora_B")] @ lora[key]
    w_base, w_merged = (
        base.model.layers[0].self_attn.q_proj.weight,
        model.model.layers[0].self_attn.q_proj.weight,
    )
    assert delta.abs().max() > 0 and torch.allclose(w_merged, w_base + delta, atol=1e-6)

    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    assert AutoTokenizer.from_pretrained(merged).apply_chat_template(
        messages, tokenize=False
    ) == AutoTokenizer.from_pretrained(base_dir).apply_chat_template(messages, tokenize=False)
    gen = HFGenerator(merged, device="cpu", batch_size=2)
    out = gen.generate_steps([gen.apply_chat_template(messages)], 1, 0.0, None, 8, seed=0)
    assert len(out) == 1 and out[0][0].text.strip()
