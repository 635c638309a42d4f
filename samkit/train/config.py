"""The options of a training run, their checks, and the phases they make.

``distill`` (EdgeSAM): phase ``encoder`` (``encoder_steps``: the student's image encoder, MSE to the
teacher's cached embeddings), then phase ``loop`` (``loop_steps``: prompt-in-the-loop, encoder and
mask decoder, prompt encoder frozen). ``recipe="mobilesam"`` is MobileSAM's decoupled distillation:
phase ``encoder`` only. ``finetune``: one phase ``finetune`` (``steps``) on the ground-truth masks,
decoder plus optionally the encoder (``encoder="full"``) or LoRA adapters on it (``"lora"``).

Steps count optimiser updates; one update sees ``world x batch_size x accum`` images.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..errors import InputError

#: options that do not change what is trained (they may differ between a run and its resume)
NOT_RUN_DEFINING = ("out", "resume", "eval_every", "eval_masks", "save_every", "device", "workers",
                    "tensorboard", "progress", "log_every", "cache", "amp")


@dataclass
class TrainConfig:
    mode: str                               # "distill" | "finetune"
    data: str
    out: str
    student: str                            # NAME[:CHECKPOINT] (finetune: the model)
    teacher: Optional[str] = None           # NAME[:CHECKPOINT] (distill)
    images: Optional[str] = None            # COCO image folder
    recipe: str = "edgesam"                 # "edgesam" | "mobilesam"
    encoder_steps: int = 1000
    loop_steps: int = 1000
    steps: int = 1000                       # finetune
    batch_size: int = 2                     # images per process and micro-step
    accum: int = 1
    masks_per_image: int = 8
    loop_iters: int = 3                     # decode passes: the prompt, then one added point each
    box_prob: float = 0.5
    box_noise: float = 0.1
    lr: float = 1e-3                        # phase "encoder" and "finetune"
    loop_lr: float = 1e-4                   # phase "loop"
    weight_decay: float = 0.01
    warmup: float = 0.05                    # fraction of a phase's steps
    clip_grad: float = 0.0                  # max gradient norm (0: off)
    encoder: str = "none"                   # finetune: "none" | "full" | "lora"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    adapter: bool = False                   # distill: learned projection when embedding shapes differ
    init_heads: bool = True                 # distill: a random student starts from the teacher's heads
    iou_weight: float = 1.0                 # finetune: weight of the IoU-head loss
    holdout: float = 0.1
    val_data: Optional[str] = None
    eval_every: int = 0
    eval_masks: int = 16
    save_every: int = 100
    cache: Optional[str] = None             # teacher embeddings (default OUT/teacher-cache)
    seed: int = 0
    device: str = "auto"
    amp: Optional[bool] = None              # None: on with CUDA
    workers: int = 2                        # threads decoding the images of a micro-batch
    tensorboard: bool = False
    progress: bool = True
    log_every: int = 1
    resume: Optional[str] = None
    extra: Dict[str, str] = field(default_factory=dict)

    def run_fields(self) -> Dict[str, object]:
        """The options that define the run (compared on ``--resume``)."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in sorted(d.items()) if k not in NOT_RUN_DEFINING}

    def run_id(self) -> str:
        return hashlib.sha256(json.dumps(self.run_fields(), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Phase:
    """``name``: "encoder" | "loop" | "finetune"; steps ``[start, end)`` of the run; ``lr``."""

    name: str
    start: int
    end: int
    lr: float


def _positive(cfg: TrainConfig, names: List[str], minimum: int = 1) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not isinstance(v, int) or v < minimum:
            flag = "--" + n.replace("_", "-")
            raise InputError(f"{flag} must be a whole number >= {minimum}, got {v!r}. Fix: pass e.g. {flag} "
                             f"{max(minimum, 1)}.")


def check(cfg: TrainConfig) -> None:
    """Refuse inconsistent options (before any file is read)."""
    if cfg.mode not in ("distill", "finetune"):
        raise InputError(f"unknown training mode {cfg.mode!r}. Fix: use distill or finetune.")
    if cfg.mode == "distill" and not cfg.teacher:
        raise InputError("distillation needs a teacher. Fix: pass --teacher NAME[:CHECKPOINT] (e.g. sam_vit_b).")
    if cfg.recipe not in ("edgesam", "mobilesam"):
        raise InputError(f"--recipe {cfg.recipe!r} is unknown. Fix: pass edgesam or mobilesam.")
    if cfg.encoder not in ("none", "full", "lora"):
        raise InputError(f"--encoder {cfg.encoder!r} is unknown. Fix: pass none, full or lora.")
    _positive(cfg, ["batch_size", "accum", "masks_per_image", "loop_iters", "eval_masks", "log_every",
                    "lora_rank"])
    _positive(cfg, ["encoder_steps", "loop_steps", "steps", "save_every", "eval_every", "workers"], 0)
    if not 0.0 <= cfg.box_prob <= 1.0:
        raise InputError(f"--box-prob must be in [0, 1], got {cfg.box_prob}. Fix: pass e.g. 0.5.")
    if not 0.0 <= cfg.warmup < 1.0:
        raise InputError(f"--warmup must be in [0, 1), got {cfg.warmup}. Fix: pass e.g. 0.05.")
    if not phases(cfg):
        raise InputError("there is nothing to train: every phase has 0 steps. Fix: pass --steps / "
                         "--encoder-steps / --loop-steps above 0.")


def phases(cfg: TrainConfig) -> List[Phase]:
    """The phases of the run, in order, without the empty ones."""
    if cfg.mode == "finetune":
        plan = [("finetune", cfg.steps, cfg.lr)]
    else:
        plan = [("encoder", cfg.encoder_steps, cfg.lr)]
        if cfg.recipe == "edgesam":
            plan.append(("loop", cfg.loop_steps, cfg.loop_lr))
    out, start = [], 0
    for name, steps, lr in plan:
        if steps > 0:
            out.append(Phase(name, start, start + steps, lr))
            start += steps
    return out


def total_steps(cfg: TrainConfig) -> int:
    p = phases(cfg)
    return p[-1].end if p else 0
