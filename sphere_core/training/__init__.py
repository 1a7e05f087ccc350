"""DPO training of the policy on the generated preference pairs (TRL + PEFT LoRA)."""

from sphere_core.training.dpo import TrainResult, load_pairs, train_dpo

__all__ = ["TrainResult", "load_pairs", "train_dpo"]
