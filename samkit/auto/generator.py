"""Segment everything: prompt a model with a grid of points and keep the good, distinct masks.

Algorithm (SAM's automatic mask generation, Kirillov et al. 2023, as released):

1. Crops: the whole image, plus ``crop_n_layers`` layers of overlapping crops; every crop is
   preprocessed and encoded on its own.
2. Per crop, an n x n grid of points (cell centres) is decoded in batches of
   ``points_per_batch`` single-point prompts with three masks each.
3. Per batch: keep masks with predicted IoU ``> pred_iou_thresh``, stability score (IoU of
   the masks thresholded at ``mask_threshold +- stability_score_offset``,
   ``samkit.ops.stability_score``) ``>= stability_score_thresh``; binarise at
   ``mask_threshold``; drop masks whose box lies within 20 px of a crop border that is not an
   image border. An empty mask has stability 0, so any threshold > 0 drops it, as the official
   filter drops its NaN (0 / 0) score.
4. Per crop: NMS by predicted IoU (``nms`` kind, ``nms_thresh``).
5. Across crops: NMS preferring masks from smaller crops (score ``1 / crop area``).
6. Optionally (``min_mask_region_area > 0``): fill small holes, drop small islands (OpenCV
   8-connected components), then NMS again preferring unchanged masks.

SAM 2 option ``use_m2m``: every mask is refined once by decoding its point again with the
mask's own low-resolution logits (clamped to +-32) as mask input, single-mask output.

With ``nms="greedy"`` and the official settings the result equals the official generators'.
Step 2 runs the decoder's factored path (``samkit.heads.factored_decoder``: the image side
prepared once, then per point little more than its prompt tokens) 16 prompts at a time: the
same function as the reference decoder with float sums in another order.

``mode="fast"`` (opt-in) spends less work in step 2: per crop it decodes the points of the same
grid coarse to fine (evenly spread sub-grids of about n/8, n/4, n/2 points per side, then the
rest; ``samkit.auto.grid.coarse_to_fine_levels``) and, after each level, skips every later point
that lies inside a mask kept so far (the masks surviving the crop's NMS among the candidates
found that are their point's best mask). It never decodes more points than the exact mode, and every candidate it decodes is one
the exact mode has too; an object is missed when all its grid points lie inside other kept
masks, and NMS among fewer candidates can keep another point's mask of the same region (the
more a model's mask depends on where in the object the point lands, the more often).

Open vocabulary (``vocabulary=`` "coco" | "lvis" | "ade20k" | a file | a list of names, with
``clip=`` a ``samkit.vocab.DenseClip``): after step 6 every mask is named by mask-pooled dense
CLIP features against the vocabulary's prompt-ensembled text embeddings
(``samkit.vocab.classify``): ``Masks.labels`` and ``Masks.label_scores`` are set. The masks
themselves do not change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..ops import (fast_nms, greedy_nms, is_box_near_crop_edge, mask_nms, masks_to_boxes, remove_small_regions,
                   stability_score)
from ..ops.rle import masks_to_coco_rle
from .grid import crop_boxes as make_crop_boxes
from .grid import coarse_to_fine_levels, layer_point_grids

NMS_KINDS = ("greedy", "fast", "mask")
MODES = ("exact", "fast")
OUTPUTS = ("masks", "coco_rle")


@dataclass
class _Candidates:
    """Masks of one crop (``masks`` N x h x w in crop pixels) or of the whole image."""

    masks: torch.Tensor
    iou: torch.Tensor
    stability: torch.Tensor
    boxes: torch.Tensor  # N x 4 int64, inclusive pixel indices
    points: torch.Tensor  # N x 2 float64
    low_res: Optional[torch.Tensor] = None
    crop_boxes: Optional[torch.Tensor] = None  # N x 4 int64

    def take(self, idx: torch.Tensor) -> "_Candidates":
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return _Candidates(self.masks[idx], self.iou[idx], self.stability[idx], self.boxes[idx], self.points[idx],
                           pick(self.low_res), pick(self.crop_boxes))

    @staticmethod
    def cat(parts: List["_Candidates"]) -> "_Candidates":
        def join(name):
            vals = [getattr(p, name) for p in parts]
            return None if any(v is None for v in vals) else torch.cat(vals)

        return _Candidates(*(join(n) for n in ("masks", "iou", "stability", "boxes", "points", "low_res",
                                               "crop_boxes")))


@dataclass
class AutoMaskInfo:
    """Per-mask side data of a segment-everything run, row-aligned with the returned ``Masks``.

    ``boxes`` K x 4 int64 xyxy (inclusive pixel indices, SAM convention), ``point_coords``
    K x 2 float64 prompt point in image pixels, ``predicted_iou`` K, ``stability`` K,
    ``crop_boxes`` K x 4 int64 xyxy crop that produced the mask, ``areas`` K int64,
    ``rles``: COCO compressed RLE dicts when ``output="coco_rle"``, else None; ``labels`` (K str)
    and ``label_scores`` (K,) when the generator has a vocabulary, else None.
    """

    boxes: np.ndarray
    point_coords: np.ndarray
    predicted_iou: np.ndarray
    stability: np.ndarray
    crop_boxes: np.ndarray
    areas: np.ndarray
    rles: Optional[List[dict]] = None
    stats: dict = field(default_factory=dict)
    labels: Optional[List[str]] = None
    label_scores: Optional[np.ndarray] = None

    def to_records(self) -> List[dict]:
        """One dict per mask with the official generator's record keys (bbox/crop_box in XYWH)."""
        out = []
        for i in range(len(self.areas)):
            b, c = self.boxes[i].tolist(), self.crop_boxes[i].tolist()
            rec = {"area": int(self.areas[i]), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                   "predicted_iou": float(self.predicted_iou[i]), "point_coords": [self.point_coords[i].tolist()],
                   "stability_score": float(self.stability[i]), "crop_box": [c[0], c[1], c[2] - c[0], c[3] - c[1]]}
            if self.rles is not None:
                rec["segmentation"] = self.rles[i]
            if self.labels is not None:
                rec["label"] = self.labels[i]
                rec["label_score"] = float(self.label_scores[i])
            out.append(rec)
        return out


class AutoMaskGenerator:
    """Segment everything with any :class:`~samkit.models.base.PromptableModel`.

    ``generate(image) -> Masks`` (K x H x W bool masks, ``scores`` = predicted IoU,
    ``stability``, ``low_res_logits`` K x 256 x 256); ``generate_with_info(image) -> (Masks,
    AutoMaskInfo)`` also returns boxes, prompt points, crop boxes and, for
    ``output="coco_rle"``, COCO RLEs.

    ``nms``: "greedy" (official), "fast" (YOLACT Fast NMS) or "mask" (greedy on mask IoU);
    ``nms_thresh`` within a crop, ``crop_nms_thresh`` (default: ``nms_thresh``) across crops.
    ``pred_iou_thresh`` defaults to 0.88 (SAM's generator; SAM 2's uses 0.8).
    ``mask_threshold`` defaults to ``model.mask_threshold``.
    ``vocabulary`` + ``clip``: name every mask (module docstring).
    ``mode``: "exact" (the official masks) or "fast" (coarse-to-fine grids that skip points
    inside masks already found; needs ``points_per_side``). ``AutoMaskInfo.stats`` holds
    ``point_batches`` and ``points_decoded``.
    """

    #: full-resolution float logits upscaled at a time on CPU (at least one mask): 1 mask of a
    #: 1200 x 1800 image, 2 of DAVIS 480p, 9 of the truck; larger chunks leave the cache, and
    #: fresh tensors over glibc's mmap threshold are paged in anew on every call
    _UPSCALE_BYTES = 4 << 20
    _DECODE_CHUNK = 16  # point prompts per model.decode call on CPU (bounds the decoder's temporaries)

    def __init__(self, model, points_per_side: Optional[int] = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, crop_n_layers: int = 0, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, min_mask_region_area: int = 0, nms: str = "greedy",
                 nms_thresh: float = 0.7, crop_nms_thresh: Optional[float] = None, output: str = "masks",
                 point_grids: Optional[Sequence[np.ndarray]] = None, use_m2m: bool = False,
                 multimask: bool = True, mask_threshold: Optional[float] = None, keep_low_res: bool = True,
                 vocabulary=None, clip=None, mode: str = "exact") -> None:
        for name in ("preprocess", "encode", "decode", "postprocess"):
            if not callable(getattr(model, name, None)):
                raise InputError(f"AutoMaskGenerator needs a neural promptable model with .{name}(); got "
                                 f"{type(model).__name__}. Fix: load a SAM-family model with samkit.load_model")
        if nms not in NMS_KINDS:
            raise InputError(f"nms must be one of {NMS_KINDS}, got {nms!r}; fix: use nms='greedy'")
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}; fix: use mode='exact' (the official "
                             f"masks) or mode='fast' (coarse-to-fine grid)")
        if mode == "fast" and point_grids is not None:
            raise InputError("mode='fast' builds its coarse-to-fine grids from points_per_side and cannot use "
                             "point_grids; fix: pass points_per_side=N, or use mode='exact' with point_grids")
        if output not in OUTPUTS:
            raise InputError(f"output must be one of {OUTPUTS}, got {output!r}; fix: use output='masks'")
        if (points_per_side is None) == (point_grids is None):
            raise InputError("give exactly one of points_per_side and point_grids; fix: e.g. points_per_side=32")
        if points_per_batch < 1:
            raise InputError(f"points_per_batch must be >= 1, got {points_per_batch}; fix: use e.g. 64")
        if not 0.0 <= crop_overlap_ratio < 1.0:
            raise InputError(f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio}; fix: use 512 / 1500")
        if points_per_side is not None:
            self.point_grids = layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(self.point_grids) != crop_n_layers + 1:
                raise InputError(f"point_grids has {len(self.point_grids)} grids for {crop_n_layers + 1} crop layers; "
                                 f"fix: pass one N x 2 grid in [0, 1] per layer")
        if min_mask_region_area > 0:
            from ..errors import require

            require("cv2", "cv", "min_mask_region_area > 0")
        if output == "coco_rle":
            from ..errors import require

            require("pycocotools", "coco", "output='coco_rle'")
        self.mode = mode
        # per crop layer, the selections of its grid points decided in turn: all at once, or coarse to fine
        self._levels = [coarse_to_fine_levels(int(round(len(g) ** 0.5))) if mode == "fast"
                        else [np.ones(len(g), bool)] for g in self.point_grids]
        self.model = model
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = int(min_mask_region_area)
        self.nms = nms
        self.nms_thresh = float(nms_thresh)
        self.crop_nms_thresh = float(nms_thresh if crop_nms_thresh is None else crop_nms_thresh)
        self.output = output
        self.use_m2m = bool(use_m2m)
        self.multimask = bool(multimask)
        self.mask_threshold = float(getattr(model, "mask_threshold", 0.0) if mask_threshold is None else mask_threshold)
        self.keep_low_res = bool(keep_low_res)
        self.vocabulary, self.clip, self._text = None, None, None
        if vocabulary is not None or clip is not None:
            from ..vocab import check_dense_clip, load_vocabulary

            if vocabulary is None:
                raise InputError("clip= was given without a vocabulary. Fix: add vocabulary='coco' (or 'lvis', "
                                 "'ade20k', a file, a list of names) to name the masks.")
            self.vocabulary = load_vocabulary(vocabulary)
            self.clip = check_dense_clip(clip)

    # ------------------------------------------------------------------ public API
    def generate(self, image, progress: Optional[Callable[[int, int], None]] = None):
        """``image``: H x W x 3 uint8 RGB array, PIL image or path -> ``Masks``."""
        return self.generate_with_info(image, progress)[0]

    @torch.inference_mode()
    def generate_with_info(self, image, progress: Optional[Callable[[int, int], None]] = None):
        """-> ``(Masks, AutoMaskInfo)``. ``progress(done, total)`` is called after every point batch."""
        img = self._load(image)
        h, w = img.shape[:2]
        boxes, layers = make_crop_boxes((h, w), self.crop_n_layers, self.crop_overlap_ratio)
        total = sum(-(-len(self.point_grids[l]) // self.points_per_batch) for l in layers)
        state = {"done": 0, "total": total, "points": 0}
        parts = [self._process_crop(img, box, layer, state, progress) for box, layer in zip(boxes, layers)]
        data = _Candidates.cat(parts)
        if len(boxes) > 1 and len(data.iou) > 0:
            areas = (data.crop_boxes[:, 2] - data.crop_boxes[:, 0]) * (data.crop_boxes[:, 3] - data.crop_boxes[:, 1])
            pref = 1 / areas  # int64 areas -> float32, as in the official generator
            keep = self._nms(data, pref, self.crop_nms_thresh, (h, w))
            data = data.take(keep)
        if self.min_mask_region_area > 0 and len(data.iou) > 0:
            data = self._clean_small_regions(data, (h, w))
        masks, info = self._finish(data, (h, w), state)
        if self.vocabulary is not None:
            masks = self._name(masks, img)
            info.labels, info.label_scores = masks.labels, masks.label_scores
        return masks, info

    def _name(self, masks, img: np.ndarray):
        """``masks`` with labels and label scores from the vocabulary (``samkit.vocab.classify``)."""
        from ..vocab.classify import classify
        from ..vocab.embeddings import text_embeddings

        if self._text is None:  # the vocabulary's embeddings, once per generator
            self._text = text_embeddings(self.clip, self.vocabulary.names)
        return classify(masks, self.vocabulary, self.clip, img, embeddings=self._text)

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _load(image) -> np.ndarray:
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
            return image
        from ..io.image import load_image

        return load_image(image)

    def _process_crop(self, img: np.ndarray, crop_box: List[int], layer: int, state: dict,
                      progress: Optional[Callable[[int, int], None]]) -> _Candidates:
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(img[y0:y1, x0:x1])
        ch, cw = crop.shape[:2]
        x, transform = self.model.preprocess(crop)
        features = self.model.encode(x)
        all_points = self.point_grids[layer] * np.array([[cw, ch]], dtype=np.float64)
        parts, covered = [], None
        todo = np.ones(len(all_points), bool)
        levels = self._levels[layer]
        ppb, used = self.points_per_batch, 0
        estimate = -(-len(all_points) // ppb)  # this crop's batches as counted in state["total"]
        for i, level in enumerate(levels):
            pick = level & todo
            todo &= ~level
            if covered is not None:  # fast mode: a point inside a mask kept so far adds nothing new
                pick &= ~_points_inside(covered, all_points)
            points = all_points[pick]
            used += -(-len(points) // ppb)
            if len(levels) > 1:  # fast mode: the batches so far plus at most the undecided points
                state["total"] += used + -(-int(todo.sum()) // ppb) - estimate
                estimate = used + -(-int(todo.sum()) // ppb)
            for s in range(0, len(points), self.points_per_batch):
                parts.append(self._process_batch(features, transform, points[s : s + self.points_per_batch],
                                                 crop_box, img.shape[:2]))
                state["done"] += 1
                if progress is not None:
                    progress(state["done"], state["total"])
            state["points"] += len(points)
            if i + 1 < len(levels):
                covered = self._coverage(parts, (ch, cw))
        data = _Candidates.cat(parts)
        del features
        if len(data.iou) > 0:
            data = data.take(self._nms(data, data.iou, self.nms_thresh, None))
        off = torch.tensor([x0, y0, x0, y0], dtype=torch.int64)
        data.boxes = data.boxes + off
        data.points = data.points + torch.tensor([x0, y0], dtype=torch.float64)
        data.crop_boxes = torch.tensor([crop_box], dtype=torch.int64).repeat(len(data.iou), 1)
        if crop_box != [0, 0, img.shape[1], img.shape[0]]:
            data.masks = self._uncrop(data.masks, crop_box, img.shape[:2])
        return data

    def _coverage(self, parts: List[_Candidates], crop_hw) -> torch.Tensor:
        """Fast mode: the union (h x w bool, crop pixels) of the masks that survive this crop's
        NMS among the candidates so far and are their prompt point's best (highest predicted
        IoU) mask: a larger, less certain mask that merges several objects covers nothing."""
        data = _Candidates.cat(parts)
        if len(data.iou) == 0:
            return torch.zeros(crop_hw, dtype=torch.bool)
        _, point_id = torch.unique(data.points, dim=0, return_inverse=True)
        best = torch.full((int(point_id.max()) + 1,), -float("inf")).scatter_reduce(0, point_id, data.iou, "amax")
        keep = self._nms(data, data.iou, self.nms_thresh, None)
        keep = keep[data.iou[keep] >= best[point_id[keep]]]
        return data.masks[keep].any(dim=0)

    def _decode(self, features, transform, points: torch.Tensor, mask_input: Optional[torch.Tensor],
                multimask: bool):
        """Image-pixel ``points`` N x 2 -> low-res logits N x K x h x w and predicted IoU N x K."""
        device = self.model.device
        frame_pts = transform.coords_to_frame(points.to(device=device))
        pts = frame_pts.to(torch.float32)[:, None, :]
        labels = torch.ones(pts.shape[0], 1, dtype=torch.int, device=device)
        # the factored decoder (a per-image plan, then per point little more than its tokens)
        # runs in chunks that bound its B x m x L temporaries
        chunk = self._DECODE_CHUNK if mask_input is None and device.type == "cpu" else pts.shape[0]
        outs = [self.model.decode(features, pts[s : s + chunk], labels[s : s + chunk], None, mask_input, multimask)
                for s in range(0, pts.shape[0], chunk)]
        if len(outs) == 1:
            return outs[0].low_res, outs[0].iou
        return torch.cat([o.low_res for o in outs]), torch.cat([o.iou for o in outs])

    def _process_batch(self, features, transform, points: np.ndarray, crop_box: List[int],
                       image_hw) -> _Candidates:
        pts = torch.as_tensor(points, dtype=torch.float64)
        low_res, iou = self._decode(features, transform, pts, None, self.multimask)
        k = low_res.shape[1]
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)
        pts = pts.repeat_interleave(k, dim=0)
        if self.use_m2m:
            low_res, iou = self._refine_m2m(features, transform, pts, low_res)
        # The official generators upscale every mask and then filter by predicted IoU;
        # upscaling is per mask, so filtering first gives the same masks for less work.
        if self.pred_iou_thresh > 0.0:
            idx = torch.where(iou > self.pred_iou_thresh)[0]
            if len(idx) < len(iou):
                low_res, iou, pts = low_res[idx], iou[idx], pts[idx.cpu()]
        idx, stab, masks, boxes = self._upscale(low_res, transform)
        if len(idx) < len(iou):
            low_res, iou, pts = low_res[idx], iou[idx], pts[idx.cpu()]
        h, w = image_hw
        near = is_box_near_crop_edge(boxes, crop_box, [0, 0, w, h])
        if bool(near.any()):
            idx = torch.where(~near)[0]
            masks, iou, low_res, stab, boxes = masks[idx], iou[idx], low_res[idx], stab[idx], boxes[idx]
            pts = pts[idx.cpu()]
        return _Candidates(masks.cpu(), iou.float().cpu(), stab.float().cpu(), boxes.cpu(), pts,
                           low_res.float().cpu() if self.keep_low_res else None)

    def _upscale(self, low_res: torch.Tensor, transform):
        """Low-res logits N x h x w -> ``(kept, stability, masks, boxes)``: indices (int64) of the
        masks passing the stability filter, their stability (float32), binary masks K x H x W at
        the crop's size and boxes K x 4 int64.

        On CPU the model's upscaling runs ``_UPSCALE_BYTES`` of output logits at a time, so
        that they stay in cache; the interpolation treats every mask on its own,
        so the logits are bit-identical to upscaling the whole batch at once (the official
        order). Stability and thresholding run on each chunk's logits (per mask, so the same
        numbers), the stability filter and boxes once on the whole batch.
        """
        n = low_res.shape[0]
        if n == 0:
            hw = tuple(transform.original_size)
            dev = low_res.device
            return (torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros(0, device=dev),
                    torch.zeros((0,) + hw, dtype=torch.bool, device=dev),
                    torch.zeros(0, 4, dtype=torch.int64, device=dev))
        h, w = transform.original_size
        chunk = max(1, self._UPSCALE_BYTES // (4 * h * w)) if low_res.device.type == "cpu" else n
        stabs, bins = [], []
        for s in range(0, n, chunk):  # stability and the binary mask while the chunk's logits are in cache
            logits = self.model.postprocess(low_res[s : s + chunk, None], transform)[:, 0]
            stabs.append(stability_score(logits, self.mask_threshold, self.stability_score_offset))
            bins.append(logits > self.mask_threshold)
        del logits
        stab = stabs[0] if len(stabs) == 1 else torch.cat(stabs)
        masks = bins[0] if len(bins) == 1 else torch.cat(bins)
        del bins
        kept = torch.arange(n, device=stab.device)
        if self.stability_score_thresh > 0.0:  # drops empty masks (stability 0; NaN upstream, dropped too)
            ok = torch.where(stab >= self.stability_score_thresh)[0]
            if len(ok) < n:
                kept, stab, masks = ok, stab[ok], masks[ok]
        return kept, stab, masks, masks_to_boxes(masks)

    def _refine_m2m(self, features, transform, pts: torch.Tensor, low_res: torch.Tensor):
        """SAM 2's mask-to-mask refinement: re-decode each point with its own low-res mask."""
        lows, ious = [], []
        for s in range(0, len(pts), self.points_per_batch):
            mask_in = low_res[s : s + self.points_per_batch].clamp(-32.0, 32.0)[:, None]
            low, iou = self._decode(features, transform, pts[s : s + self.points_per_batch], mask_in, False)
            lows.append(low[:, 0])
            ious.append(iou[:, 0])
        return torch.cat(lows), torch.cat(ious)

    def _nms(self, data: _Candidates, scores: torch.Tensor, thresh: float, full_hw) -> torch.Tensor:
        if self.nms == "greedy":
            return greedy_nms(data.boxes.float(), scores, thresh)
        if self.nms == "fast":
            return fast_nms(data.boxes.float(), scores, thresh)
        return mask_nms(data.masks, scores, thresh)

    @staticmethod
    def _uncrop(masks: torch.Tensor, crop_box: List[int], image_hw) -> torch.Tensor:
        h, w = image_hw
        x0, y0, x1, y1 = crop_box
        out = torch.zeros(masks.shape[0], h, w, dtype=torch.bool)
        out[:, y0:y1, x0:x1] = masks
        return out

    def _clean_small_regions(self, data: _Candidates, image_hw) -> _Candidates:
        new_masks, unchanged = [], []
        for m in data.masks.numpy():
            m2, changed_holes = remove_small_regions(m, self.min_mask_region_area, "holes")
            m3, changed_islands = remove_small_regions(m2, self.min_mask_region_area, "islands")
            new_masks.append(torch.from_numpy(np.ascontiguousarray(m3)))
            unchanged.append(float(not (changed_holes or changed_islands)))
        masks = torch.stack(new_masks)
        boxes = masks_to_boxes(masks)
        cleaned = _Candidates(masks, data.iou, data.stability, boxes, data.points, data.low_res, data.crop_boxes)
        keep = self._nms(cleaned, torch.as_tensor(unchanged), max(self.nms_thresh, self.crop_nms_thresh), image_hw)
        return cleaned.take(keep)

    def _finish(self, data: _Candidates, image_hw, state: dict):
        from ..masks import Masks

        areas = data.masks.flatten(1).sum(1).numpy().astype(np.int64) if len(data.iou) else np.zeros(0, np.int64)
        rles = masks_to_coco_rle(data.masks) if self.output == "coco_rle" else None
        info = AutoMaskInfo(boxes=data.boxes.numpy(), point_coords=data.points.numpy(),
                            predicted_iou=data.iou.numpy(), stability=data.stability.numpy(),
                            crop_boxes=data.crop_boxes.numpy() if data.crop_boxes is not None else np.zeros((0, 4), np.int64),
                            areas=areas, rles=rles,
                            stats={"point_batches": state["total"], "points_decoded": state["points"]})
        h, w = image_hw
        masks = Masks(masks=data.masks.numpy().reshape(-1, h, w), scores=data.iou.numpy().astype(np.float32),
                      low_res_logits=None if data.low_res is None else data.low_res.numpy().astype(np.float32),
                      ids=np.arange(len(data.iou), dtype=np.int64),
                      stability=data.stability.numpy().astype(np.float32))
        return masks, info


def _points_inside(covered: torch.Tensor, points: np.ndarray) -> np.ndarray:
    """``covered`` h x w bool, ``points`` N x 2 (x, y) pixels -> N bool: the pixel under each point is set."""
    h, w = covered.shape
    xi = np.clip(np.floor(points[:, 0]).astype(np.int64), 0, w - 1)
    yi = np.clip(np.floor(points[:, 1]).astype(np.int64), 0, h - 1)
    return covered.numpy()[yi, xi]
