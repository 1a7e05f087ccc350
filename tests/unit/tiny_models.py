"""Tiny, randomly initialised models and a tiny BPE tokenizer for fast PRM tests (no downloads).

``tiny_tokenizer()`` trains a byte-level BPE on a few sentences in well under a second; it has a
ChatML template and the special tokens ``<|im_start|>``, ``<|im_end|>``, ``<extra_0>``, and
single tokens for "Yes"/" Yes"/"No"/" No". ``save_tiny_qwen_prm(dir)`` writes a Qwen2.5-Math-PRM
shaped checkpoint (``model.*`` backbone + ``score.0/2`` head, plus an ``lm_head`` the PRM must
ignore) and returns the reference modules so a test can recompute rewards by hand.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
CORPUS = [
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "Tom has 3 apples and buys 2 more. How many apples does he have? 3 + 2 = 5. 4 + 4 = 8.",
    "Final Answer: The final answer is $5$. I hope it is correct.",
    "Problem: Solution so far: Step 1: Step 2: Is Step correct? Answer Yes or No.",
    "system user assistant You are a meticulous math teacher.",
] + ["Yes No yes no Yes No"] * 20


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<extra_0>"],
    )
    fast.chat_template = CHATML
    for word in ("Yes", " Yes", "No", " No"):
        assert len(fast.encode(word, add_special_tokens=False)) == 1, word
    return fast


def tiny_llama(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(cfg).eval()


def save_tiny_qwen_prm(out_dir: Path, seed: int = 0):
    """Write the checkpoint + tokenizer to ``out_dir``; return (backbone, head, tokenizer)."""
    import torch
    from safetensors.torch import save_file
    from torch import nn
    from transformers import Qwen2Config, Qwen2Model

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    cfg.architectures = ["Qwen2ForProcessRewardModel"]
    cfg.auto_map = {  # as in the real checkpoint; must load WITHOUT trust_remote_code
        "AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
        "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel",
    }
    backbone = Qwen2Model(cfg).eval()
    head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2)).eval()
    tensors = {f"model.{k}": v for k, v in backbone.state_dict().items()}
    tensors.update({f"score.{k}": v for k, v in head.state_dict().items()})
    tensors["lm_head.weight"] = torch.randn(len(tokenizer), 32)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "model.safetensors"))
    cfg.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return backbone, head, tokenizer
