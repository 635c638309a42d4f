"""Models of a run and the loss of one micro-batch, for every image family (only the model API
of :class:`samkit.models.base.PromptableModel` is used: ``preprocess``, ``encode``, ``decode``).

* :func:`load_teacher` / :func:`load_student`: ``NAME[:CHECKPOINT]``; a distillation student given
  without a checkpoint starts from random weights, its prompt encoder and mask decoder copied from
  the teacher when their shapes match (EdgeSAM initialises the student's heads from SAM).
* :func:`check_pair`: teacher and student must resize images the same way and give embeddings of
  one shape (``C x h x w``), else an :class:`EmbedAdapter` (``--adapter``: a 1x1 convolution to the
  teacher's channels, bilinear resize to its grid) is needed.
* :func:`encoder_loss`: phase 1, MSE of the student's embeddings to the teacher's cached ones.
* :func:`loop_loss`: phase 2 and fine-tuning: ``loop_iters`` decode passes; the first uses the
  sampled box or point, each later pass adds one point per mask drawn from where the student's mask
  and the target disagree (:func:`samkit.train.sampling.disagreement_points`). The target is the
  binarised teacher mask (distillation, decoded from the cached teacher features with the same
  prompts) or the ground truth (fine-tuning). Loss: BCE + Dice per pass (+ the IoU-head MSE when
  fine-tuning), averaged over passes; masks are weighted (0 for empty ones) and divided by the
  nominal count ``batch x masks_per_image`` so that N processes average to exactly the loss of one
  process with the N-times batch.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..models.base import ImageFeatures
from .losses import bce_dice, embedding_mse, iou_mse
from .sampling import Prepared, cells_to_frame, disagreement_points, random_fields


def split_name(text: str) -> Tuple[str, Optional[str]]:
    """``NAME[:CHECKPOINT]`` -> (name, checkpoint or None)."""
    name, sep, ckpt = str(text).partition(":")
    if not name:
        raise InputError(f"model {text!r} has no name. Fix: pass NAME or NAME:CHECKPOINT (e.g. edge_sam).")
    return name, (ckpt or None) if sep else None


def _spec_of(name: str):
    from ..registry import _spec
    from .layouts import check_trainable_spec

    spec = _spec(name)
    check_trainable_spec(spec)
    return spec


def load_teacher(text: str, device: torch.device) -> nn.Module:
    """The teacher, loaded, in eval mode, every parameter frozen."""
    from ..registry import load_model

    name, ckpt = split_name(text)
    _spec_of(name)
    model = load_model(name, checkpoint=ckpt, device=device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_student(text: str, device: torch.device, teacher: Optional[nn.Module] = None,
                 init_heads: bool = True) -> nn.Module:
    """The model to train: loaded from its checkpoint, or (distillation without one) built with
    random weights (seeded by the caller), heads copied from ``teacher`` where shapes match."""
    from ..registry import build_model, load_model

    name, ckpt = split_name(text)
    spec = _spec_of(name)
    if ckpt is not None or teacher is None:
        model = load_model(name, checkpoint=ckpt, device=device)
    else:
        model = build_model(spec).to(device)
        if init_heads:
            copy_heads(teacher, model)
    model.spec = spec
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()  # BatchNorm statistics and dropout stay frozen (see samkit.train docs)


def copy_heads(teacher: nn.Module, student: nn.Module) -> List[str]:
    """Copy the prompt encoder and mask decoder of ``teacher`` into ``student`` when every tensor
    has the same shape; returns the modules copied."""
    done = []
    for attr in ("prompt_encoder", "mask_decoder"):
        t, s = getattr(teacher, attr, None), getattr(student, attr, None)
        if t is None or s is None:
            continue
        ts, ss = t.state_dict(), s.state_dict()
        if set(ts) == set(ss) and all(ts[k].shape == ss[k].shape for k in ts):
            s.load_state_dict(ts)
            done.append(attr)
    return done


class EmbedAdapter(nn.Module):
    """Student embedding ``B x Cs x hs x ws`` -> teacher shape ``B x Ct x ht x wt``: 1x1 conv, then
    bilinear resize when the grids differ. Used only by the encoder loss."""

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        super().__init__()
        self.proj = nn.Conv2d(int(student_shape[0]), int(teacher_shape[0]), 1)
        self.grid = (int(teacher_shape[1]), int(teacher_shape[2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if tuple(x.shape[-2:]) != self.grid:
            x = F.interpolate(x, self.grid, mode="bilinear", align_corners=False)
        return x


def _geometry(model: nn.Module) -> Tuple[float, float]:
    """Fraction of the frame a 30 x 50 image covers (rows, cols): the family's resize rule."""
    _, t = model.preprocess(np.zeros((30, 50, 3), dtype=np.uint8))
    return t.input_size[0] / t.frame, t.input_size[1] / t.frame


@torch.no_grad()
def embed_shape(model: nn.Module) -> Tuple[int, ...]:
    """``(C, h, w)`` of ``model``'s image embedding (one forward pass of a blank frame)."""
    x = torch.zeros(1, 3, model.image_size, model.image_size, device=model.device)
    return tuple(int(s) for s in model.encode(x).embed.shape[1:])


def check_pair(teacher: nn.Module, student: nn.Module, teacher_shape: Sequence[int], adapter: bool,
               tnames: Tuple[str, str]) -> Optional[EmbedAdapter]:
    """Refuse a teacher/student pair that cannot be distilled; the adapter when one is needed."""
    gt, gs = _geometry(teacher), _geometry(student)
    if abs(gt[0] - gs[0]) > 0.02 or abs(gt[1] - gs[1]) > 0.02:
        raise InputError(f"teacher {tnames[0]} and student {tnames[1]} resize images differently (one keeps the "
                         "aspect ratio and pads, the other stretches), so their embeddings are not aligned. Fix: "
                         "choose a student of the teacher's resize rule (SAM, MobileSAM, EdgeSAM pad; "
                         "EfficientSAM and the SAM 2 family stretch).")
    s_shape = embed_shape(student)
    t_shape = tuple(int(s) for s in teacher_shape)
    if s_shape == t_shape:
        return None
    if not adapter:
        raise InputError(f"the teacher's image embeddings are {' x '.join(map(str, t_shape))} but the student's "
                         f"are {' x '.join(map(str, s_shape))}. Fix: pass --adapter (a learned 1x1 projection for "
                         "the encoder loss), or choose a student with the teacher's embedding shape.")
    return EmbedAdapter(s_shape, t_shape).to(student.device)


# --------------------------------------------------------------------------- batches
def stack_x(batch: Sequence[Prepared], device: torch.device) -> torch.Tensor:
    return torch.cat([b.x for b in batch]).to(device)


def expand(features: ImageFeatures, index: torch.Tensor) -> ImageFeatures:
    """Features of ``B`` images -> one row per prompt (``index``: N image indices)."""
    hr = None if features.high_res is None else tuple(t.index_select(0, index) for t in features.high_res)
    return ImageFeatures(features.embed.index_select(0, index), hr)


def stack_features(items: Sequence[ImageFeatures], device: torch.device) -> ImageFeatures:
    embed = torch.cat([f.embed for f in items]).to(device)
    hr = None
    if items[0].high_res is not None:
        hr = tuple(torch.cat([f.high_res[i] for f in items]).to(device) for i in range(len(items[0].high_res)))
    return ImageFeatures(embed, hr)


def encoder_loss(student: nn.Module, adapter: Optional[nn.Module], batch: Sequence[Prepared],
                 teacher_embed: torch.Tensor) -> torch.Tensor:
    """Phase 1: MSE of the student's ``B x C x h x w`` embeddings to the teacher's."""
    embed = student.encode(stack_x(batch, student.device)).embed
    if adapter is not None:
        embed = adapter(embed)
    return embedding_mse(embed, teacher_embed.to(embed.device))


class Prompts:
    """The prompts of ``N`` masks: the first (box or point) and the points added by the loop, in
    the student's frame (``scale`` maps them to another model's frame)."""

    def __init__(self, batch: Sequence[Prepared], device: torch.device) -> None:
        self.boxes = torch.cat([b.boxes for b in batch]).to(device)
        self.first = torch.cat([b.points for b in batch]).to(device)
        self.use_box = torch.cat([b.use_box for b in batch]).to(device)
        self.points = torch.zeros(len(self.boxes), 0, 2, device=device)
        self.labels = torch.zeros(len(self.boxes), 0, device=device)

    def add(self, xy: torch.Tensor, labels: torch.Tensor) -> None:
        self.points = torch.cat([self.points, xy[:, None, :]], 1)
        self.labels = torch.cat([self.labels, labels[:, None].to(self.labels.dtype)], 1)

    def decode(self, model: nn.Module, features: ImageFeatures, scale: float = 1.0):
        """``N x h x w`` logits and ``N`` predicted IoUs (single-mask output) of ``model``."""
        n = len(self.boxes)
        rows = [torch.nonzero(self.use_box)[:, 0], torch.nonzero(~self.use_box)[:, 0]]
        logits, ious = [], []
        for is_box, idx in zip((True, False), rows):
            if len(idx) == 0:
                continue
            pts, lbl = self.points[idx] * scale, self.labels[idx]
            if not is_box:
                pts = torch.cat([self.first[idx] * scale, pts], 1)
                lbl = torch.cat([torch.ones(len(idx), 1, device=lbl.device), lbl], 1)
            out = model.decode(expand(features, idx), pts if pts.shape[1] else None,
                               lbl if pts.shape[1] else None, self.boxes[idx] * scale if is_box else None,
                               None, False)
            logits.append(out.low_res[:, 0])
            ious.append(out.iou[:, 0])
        order = torch.cat(rows)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=order.device)
        return torch.cat(logits)[inverse], torch.cat(ious)[inverse]


def resize_logits(logits: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(grid):
        return logits
    return F.interpolate(logits[:, None], grid, mode="bilinear", align_corners=False)[:, 0]


def loop_loss(student: nn.Module, batch: Sequence[Prepared], iters: int, seed: int,
              target_fn: Callable[[Prompts], torch.Tensor], iou_weight: float = 0.0) -> torch.Tensor:
    """Prompt-in-the-loop loss of one micro-batch (see the module docstring). ``target_fn(prompts)``
    gives the ``N x h x w`` bool target for the current prompts (constant when fine-tuning)."""
    dev = student.device
    per = batch[0].targets.shape[0]
    index = torch.arange(len(batch), device=dev).repeat_interleave(per)
    features = expand(student.encode(stack_x(batch, dev)), index)
    valid = batch[0].valid.to(dev)
    weight = torch.cat([b.weight for b in batch]).to(dev)
    nominal = float(len(batch) * per)
    prompts = Prompts(batch, dev)
    grid = tuple(valid.shape)
    total = torch.zeros((), device=dev)
    for it in range(iters):
        logits, iou = prompts.decode(student, features)
        logits = logits.float()
        target = target_fn(prompts)
        loss = bce_dice(logits, target, valid)
        if iou_weight > 0:
            loss = loss + iou_weight * iou_mse(iou, logits, target, valid, student.mask_threshold)
        total = total + (loss * weight).sum() / nominal
        if it + 1 < iters:
            field = random_fields(seed, [b.pos for b in batch], per, it, grid).to(dev)
            cells, labels = disagreement_points(logits.detach() > student.mask_threshold, target, valid, field)
            prompts.add(cells_to_frame(cells, grid, student.image_size), labels)
    return total / iters


def teacher_target(teacher: nn.Module, features: ImageFeatures, per: int, grid: Tuple[int, int],
                   scale: float) -> Callable[[Prompts], torch.Tensor]:
    """Distillation target: the teacher's binarised mask for the current prompts (``features``:
    the cached teacher features of the batch's images)."""
    index = torch.arange(features.embed.shape[0], device=features.embed.device).repeat_interleave(per)
    rows = expand(features, index)

    def target(prompts: Prompts) -> torch.Tensor:
        with torch.no_grad():
            logits, _ = prompts.decode(teacher, rows, scale)
        return resize_logits(logits.float(), grid) > teacher.mask_threshold

    return target


def ground_truth(batch: Sequence[Prepared], device: torch.device) -> Callable[[Prompts], torch.Tensor]:
    targets = torch.cat([b.targets for b in batch]).to(device)
    return lambda prompts: targets
