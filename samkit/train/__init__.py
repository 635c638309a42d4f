"""Training: EdgeSAM-style distillation (encoder MSE to cached teacher embeddings, then
prompt-in-the-loop), MobileSAM's decoupled distillation (phase 1 only), and fine-tuning of any
image family (decoder, optionally the encoder or LoRA adapters on it) on user masks.

``samkit train distill|finetune ...`` or ``torchrun --nproc_per_node N -m samkit.train
distill|finetune ...``; from Python, :func:`train` with a :class:`TrainConfig`. See
:mod:`samkit.train.run` for the output folder. Heavy modules are imported on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "train", "evaluate"]


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    if name in ("train", "evaluate"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'samkit.train' has no attribute {name!r}")
