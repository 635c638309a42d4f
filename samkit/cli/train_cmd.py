"""``samkit train``: distillation (EdgeSAM / MobileSAM recipes) and fine-tuning.

```
samkit train distill  --teacher NAME[:CKPT] --student NAME[:CKPT] --data DIR --out OUT [...]
samkit train finetune --model NAME[:CKPT] --data DIR --out OUT [--encoder none|full|lora] [...]
torchrun --nproc_per_node N -m samkit.train distill ...        (same options, N processes)
```
``OUT/model.pt`` loads with ``load_model(NAME, checkpoint="OUT/model.pt")``; ``OUT/train-state.pt``
resumes (``--resume``); ``OUT/metrics.jsonl`` holds the losses and the held-out mIoU. See
:mod:`samkit.train`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import require

typer = require("typer", "cli", "The samkit command line")

app = typer.Typer(help="Train models: distil a small model from a large one (EdgeSAM / MobileSAM recipes) or "
                       "fine-tune any image family on your masks. Multi-process: torchrun -m samkit.train.",
                  no_args_is_help=True, add_completion=False)

EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "  samkit train distill --teacher sam_vit_h --student edge_sam --data sa1b/ --out runs/edge\n\n"
    "  samkit train distill --teacher sam_vit_h --student mobile_sam --recipe mobilesam --data imgs/ --out runs/m\n\n"
    "  samkit train finetune --model sam_vit_b --data mydata/ --out runs/ft --encoder lora\n\n"
    "  torchrun --nproc_per_node 4 -m samkit.train distill --teacher sam_vit_h --student edge_sam --data sa1b/ "
    "--out runs/edge\n\n"
    "Data: SA-1B (image + same-stem JSON), COCO instances JSON (--images DIR), or DIR/images + DIR/masks PNGs. "
    "Output: OUT/model.pt (official layout), OUT/model.json, OUT/train-state.pt (--resume), OUT/metrics.jsonl."
)

# shared options -----------------------------------------------------------------------------
_DATA = typer.Option(..., "--data", help="Data folder (SA-1B, images/ + masks/) or COCO instances JSON.",
                     show_default=False)
_OUT = typer.Option(..., "--out", "-o", help="Output folder (model.pt, train-state.pt, metrics.jsonl).",
                    show_default=False)
_IMAGES = typer.Option(None, "--images", help="COCO image folder (default: next to the JSON file).")
_BATCH = typer.Option(2, "--batch-size", help="Images per process and micro-step.")
_ACCUM = typer.Option(1, "--accum", help="Gradient accumulation: micro-steps per optimiser step.")
_MASKS = typer.Option(8, "--masks-per-image", help="Prompts (masks) drawn per image.")
_ITERS = typer.Option(3, "--loop-iters", help="Decode passes per prompt: the first, then one added point each.")
_BOXP = typer.Option(0.5, "--box-prob", help="Probability that a mask is prompted by its box (else a point).")
_SAVE = typer.Option(100, "--save-every", help="Write model.pt and train-state.pt every K steps (0: at the end).")
_EVAL = typer.Option(0, "--eval-every", help="Held-out mIoU every K steps (0: at the start/end only when held-out).")
_EVALM = typer.Option(16, "--eval-masks", help="Masks per held-out image in the evaluation.")
_HOLD = typer.Option(0.1, "--holdout", help="Fraction of images held out for evaluation (by name hash).")
_VAL = typer.Option(None, "--val-data", help="A separate evaluation set (instead of --holdout).")
_SEED = typer.Option(0, "--seed", help="Seed of the data order, the prompts and random weights.")
_DEVICE = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda.")
_AMP = typer.Option(None, "--amp/--no-amp", help="Mixed precision (default: on with CUDA; never on the CPU).")
_RESUME = typer.Option(None, "--resume", help="Continue a run from its train-state.pt (or its --out folder).")
_TB = typer.Option(False, "--tensorboard", help="Also write TensorBoard logs (extra: samkit[train]).")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress lines.")
_WD = typer.Option(0.01, "--weight-decay", help="AdamW weight decay.")
_WARM = typer.Option(0.05, "--warmup", help="Linear warm-up, fraction of each phase (then cosine decay).")
_CLIP = typer.Option(0.0, "--clip-grad", help="Clip the gradient norm (0: off).")
_LOG = typer.Option(1, "--log-every", help="Metrics line every K steps.")


def _run(**kw) -> None:
    from ..train.config import TrainConfig
    from ..train.run import train
    from .common import info

    quiet = kw.pop("quiet")
    for k in ("data", "out", "images", "val_data", "resume"):
        if kw.get(k) is not None:
            kw[k] = str(kw[k])
    cfg = TrainConfig(progress=not quiet, **kw)
    summary = train(cfg)
    if summary.get("rank", 0) == 0 and not quiet:
        ev = summary.get("eval")
        tail = f"; held-out mIoU vs {ev['against']} {ev['miou']:.4f}" if ev else ""
        info(f"trained {summary['model']} for {summary['step']} steps: {summary['checkpoint']}{tail}")


@app.command(epilog=EPILOG, no_args_is_help=True)
def distill(
    teacher: str = typer.Option(..., "--teacher", help="Teacher NAME[:CHECKPOINT] (e.g. sam_vit_h).",
                                show_default=False),
    student: str = typer.Option(..., "--student", help="Student NAME[:CHECKPOINT]; without a checkpoint its "
                                "encoder starts random, its heads from the teacher.", show_default=False),
    data: Path = _DATA, out: Path = _OUT, images: Optional[Path] = _IMAGES,
    recipe: str = typer.Option("edgesam", "--recipe", help="edgesam (phase 1 + prompt-in-the-loop) or mobilesam "
                               "(phase 1 only: decoupled encoder distillation)."),
    encoder_steps: int = typer.Option(1000, "--encoder-steps", help="Phase 1 steps (encoder MSE)."),
    loop_steps: int = typer.Option(1000, "--loop-steps", help="Phase 2 steps (prompt-in-the-loop)."),
    lr: float = typer.Option(1e-3, "--lr", help="Phase 1 learning rate."),
    loop_lr: float = typer.Option(1e-4, "--loop-lr", help="Phase 2 learning rate."),
    adapter: bool = typer.Option(False, "--adapter", help="Learned 1x1 projection when the embedding shapes "
                                 "differ."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Teacher embedding cache (default OUT/teacher-cache)."),
    batch_size: int = _BATCH, accum: int = _ACCUM, masks_per_image: int = _MASKS, loop_iters: int = _ITERS,
    box_prob: float = _BOXP, save_every: int = _SAVE, eval_every: int = _EVAL, eval_masks: int = _EVALM,
    holdout: float = _HOLD, val_data: Optional[Path] = _VAL, seed: int = _SEED, device: str = _DEVICE,
    amp: Optional[bool] = _AMP, resume: Optional[Path] = _RESUME, tensorboard: bool = _TB, quiet: bool = _QUIET,
    weight_decay: float = _WD, warmup: float = _WARM, clip_grad: float = _CLIP, log_every: int = _LOG,
) -> None:
    """Distil a student from a teacher (EdgeSAM: encoder MSE, then prompt-in-the-loop)."""
    _run(mode="distill", teacher=teacher, student=student, data=data, out=out, images=images, recipe=recipe,
         encoder_steps=encoder_steps, loop_steps=loop_steps, lr=lr, loop_lr=loop_lr, adapter=adapter,
         cache=str(cache) if cache else None, batch_size=batch_size, accum=accum, masks_per_image=masks_per_image,
         loop_iters=loop_iters, box_prob=box_prob, save_every=save_every, eval_every=eval_every,
         eval_masks=eval_masks, holdout=holdout, val_data=val_data, seed=seed, device=device, amp=amp,
         resume=resume, tensorboard=tensorboard, quiet=quiet, weight_decay=weight_decay, warmup=warmup,
         clip_grad=clip_grad, log_every=log_every)


@app.command(epilog=EPILOG, no_args_is_help=True)
def finetune(
    model: str = typer.Option(..., "--model", help="Model NAME[:CHECKPOINT] to fine-tune (`samkit models ls`).",
                              show_default=False),
    data: Path = _DATA, out: Path = _OUT, images: Optional[Path] = _IMAGES,
    steps: int = typer.Option(1000, "--steps", help="Optimiser steps."),
    lr: float = typer.Option(1e-4, "--lr", help="Learning rate."),
    encoder: str = typer.Option("none", "--encoder", help="none (decoder only), full, or lora (adapters on the "
                                "encoder's linear layers, merged into model.pt)."),
    lora_rank: int = typer.Option(8, "--lora-rank", help="LoRA rank."),
    lora_alpha: float = typer.Option(16.0, "--lora-alpha", help="LoRA scale numerator (scale = alpha / rank)."),
    iou_weight: float = typer.Option(1.0, "--iou-weight", help="Weight of the IoU-head loss."),
    batch_size: int = _BATCH, accum: int = _ACCUM, masks_per_image: int = _MASKS, loop_iters: int = _ITERS,
    box_prob: float = _BOXP, save_every: int = _SAVE, eval_every: int = _EVAL, eval_masks: int = _EVALM,
    holdout: float = _HOLD, val_data: Optional[Path] = _VAL, seed: int = _SEED, device: str = _DEVICE,
    amp: Optional[bool] = _AMP, resume: Optional[Path] = _RESUME, tensorboard: bool = _TB, quiet: bool = _QUIET,
    weight_decay: float = _WD, warmup: float = _WARM, clip_grad: float = _CLIP, log_every: int = _LOG,
) -> None:
    """Fine-tune a model's mask decoder (and optionally its encoder or LoRA adapters) on your masks."""
    _run(mode="finetune", student=model, data=data, out=out, images=images, steps=steps, lr=lr, encoder=encoder,
         lora_rank=lora_rank, lora_alpha=lora_alpha, iou_weight=iou_weight, batch_size=batch_size, accum=accum,
         masks_per_image=masks_per_image, loop_iters=loop_iters, box_prob=box_prob, save_every=save_every,
         eval_every=eval_every, eval_masks=eval_masks, holdout=holdout, val_data=val_data, seed=seed,
         device=device, amp=amp, resume=resume, tensorboard=tensorboard, quiet=quiet, weight_decay=weight_decay,
         warmup=warmup, clip_grad=clip_grad, log_every=log_every)
