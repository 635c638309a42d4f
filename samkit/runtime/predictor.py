"""``OnnxImagePredictor``: ``ImagePredictor``'s contract on an export folder, without torch.

```python
from samkit.runtime import OnnxImagePredictor
predictor = OnnxImagePredictor("sam_vit_b-onnx/")     # checks the sha256 of every file
predictor.set_image("photo.jpg")                       # path, PIL image or H x W x 3 uint8
out = predictor.predict(points=[[x, y]], labels=[1])   # samkit.masks.Masks, as ImagePredictor
```
Prompts are checked by :mod:`samkit.prompts` (the same rules and errors as ``ImagePredictor``);
preprocessing, token choice (``multimask``, ``selection``), stability and the mask upsampling
follow the family's rules recorded in the manifest (``image`` section), in numpy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import InputError
from ..io.image import load_image
from ..masks import Masks
from ..prompts import check_mask_input, check_prompt, require_prompt
from . import imageops
from .manifest import ExportFolder, read_export
from .session import open_graph

SELECTIONS = ("native", "iou", "stability")
PRECISIONS = ("auto", "fp32", "int8", "int8-static")


@dataclass
class _Image:
    image: np.ndarray
    features: Dict[str, np.ndarray]
    input_hw: tuple  # (h, w) of the resized image inside the model frame
    first: Optional[Dict[str, np.ndarray]] = None  # the fast decoder's per-image inputs (``decoder_image``)


class OnnxImagePredictor:
    """Prompted segmentation with the graphs of an export folder (``samkit export``).

    ``selection``: as ``ImagePredictor`` (default: the model's, from the manifest).
    ``precision``: ``"auto"`` (the folder's default encoder), ``"fp32"``, ``"int8"`` (dynamic)
    or ``"int8-static"``. ``threads``: onnxruntime intra-op threads (default: usable CPUs).
    ``providers``: onnxruntime execution providers (default CPU). ``verify``: check the sha256
    of every file of the folder first (default True). ``fast``: prompts without a mask input run
    the folder's fast decoder pair when it has one (``samkit.export.fast_decoder``: the same masks
    for about half the work); False always runs the reference decoder.
    """

    def __init__(self, path: Union[str, Path, ExportFolder], selection: Optional[str] = None,
                 stability_offset: float = 1.0, precision: str = "auto", threads: Optional[int] = None,
                 providers: Sequence[str] = (), verify: bool = True, fast: bool = True) -> None:
        self.export = path if isinstance(path, ExportFolder) else read_export(path, verify=verify)
        m = self.export.manifest
        self.spec = m.get("image")
        if not isinstance(self.spec, dict) or self.spec.get("layout") not in ("sam", "efficient_sam", "sam2"):
            raise InputError(f"the export folder {self.export.folder} has no image pipeline this samkit knows. Fix: "
                             "re-export the model with this samkit version.")
        self.layout = self.spec["layout"]
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision {precision!r}. Fix: use one of {', '.join(PRECISIONS)}.")
        want = self.spec.get("default_precision", "fp32") if precision == "auto" else precision
        enc, dec = self.export.graph("image_encoder", want), self.export.graph("prompt_decoder")
        opset = m.get("opset")
        self.encoder = open_graph(self.export.path(enc), opset, threads, providers)
        self.decoder = open_graph(self.export.path(dec), opset, threads, providers)
        self.precision = want
        self.decoder_inputs = [i.name for i in self.decoder.get_inputs()]
        single = self.spec.get("mask_tokens", {}).get("returned") == "single"  # the graph picks: keep it
        #: whether prompts without a mask input run the fast decoder pair (opened on first use)
        self.fast = bool(fast and not single and self.export.graphs("decoder_image")
                         and self.export.graphs("prompt_decoder_fast"))
        self._fast_graphs = None
        self._open_args = (opset, threads, providers)
        selection = selection or self.spec.get("default_selection", "native")
        if selection not in SELECTIONS:
            raise InputError(f"unknown selection {selection!r}. Fix: use one of {', '.join(SELECTIONS)}.")
        self.selection = selection
        self.stability_offset = stability_offset
        self.mask_threshold = float(self.spec.get("mask_threshold", 0.0))
        self.mask_input_size = tuple(self.spec["mask_input_size"])
        self._state: Optional[_Image] = None

    @property
    def model_name(self) -> str:
        return self.export.model

    # ------------------------------------------------------------------ image
    def preprocess(self, image: np.ndarray):
        """H x W x 3 uint8 -> (encoder feeds, (h, w) of the resized image in the model frame)."""
        return imageops.preprocess(image, self.spec, self.encoder.get_inputs()[0].name)

    def set_image(self, image) -> "OnnxImagePredictor":
        """Load (path, PIL image or H x W x 3 uint8 array) and encode once."""
        img = load_image(image)
        feeds, input_hw = self.preprocess(img)
        outs = self.encoder.run(None, feeds)
        names = [o.name for o in self.encoder.get_outputs()]
        self._state = _Image(img, dict(zip(names, outs)), tuple(int(v) for v in input_hw))
        return self

    def _fast_pair(self, state: _Image):
        """The fast decoder session, and ``state.first`` filled (``decoder_image``, once per image)."""
        if self._fast_graphs is None:
            self._fast_graphs = tuple(open_graph(self.export.path(self.export.graph(g)), *self._open_args)
                                      for g in ("decoder_image", "prompt_decoder_fast"))
        image, decoder = self._fast_graphs
        if state.first is None:
            emb = state.features["image_embed" if self.layout == "sam2" else "image_embeddings"]
            state.first = dict(zip([o.name for o in image.get_outputs()], image.run(None, {"image_embeddings": emb})))
        return decoder

    def reset_image(self) -> None:
        self._state = None

    @property
    def image_size(self):
        """(H, W) of the current image."""
        return None if self._state is None else self._state.image.shape[:2]

    @property
    def features(self) -> Dict[str, np.ndarray]:
        """The encoder outputs of the current image, by name."""
        return self._require().features

    def _require(self) -> _Image:
        if self._state is None:
            raise InputError("no image is set. Fix: call predictor.set_image(image) before predict().")
        return self._state

    # ------------------------------------------------------------------ prompts
    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask: bool = True) -> Masks:
        """Points N x 2 (x, y) with labels N (1 / 0), box (4,) xyxy pixels, mask_input
        1 x h x w low-res logits -> ``Masks`` with K = 3 (multimask) or 1, as ``ImagePredictor``."""
        state = self._require()
        prompt = check_prompt(points, labels, box, state.image.shape[:2])
        require_prompt(prompt, mask_input)
        pts, lab, bx = prompt.points, prompt.labels, prompt.box
        return self._decode(None if pts is None else pts[None], None if lab is None else lab[None],
                            None if bx is None else bx[None], self._mask_input(mask_input, 1), multimask)[0]

    def predict_batch(self, boxes=None, points=None, labels=None, multimask: bool = False,
                      mask_input=None) -> List[Masks]:
        """Many prompts in one decoder run: boxes N x 4, points N x P x 2, labels N x P -> N ``Masks``."""
        state = self._require()
        prompt = check_prompt(points, labels, boxes, state.image.shape[:2], batched=True)
        pts, lab, bx = prompt.points, prompt.labels, prompt.box
        sizes = {a.shape[0] for a in (pts, bx) if a is not None}
        if not sizes:
            raise InputError("predict_batch needs boxes and/or points. Fix: pass boxes=N x 4 or points=N x P x 2.")
        if len(sizes) > 1:
            raise InputError(f"boxes and points have different batch sizes {sorted(sizes)}. Fix: one row per prompt.")
        n = sizes.pop()
        return self._decode(pts, lab, bx, self._mask_input(mask_input, n), multimask)

    def _mask_input(self, mask_input, batch: int) -> Optional[np.ndarray]:
        if mask_input is None:
            return None
        if not self.spec.get("supports_mask_input", True):
            raise InputError(f"{self.model_name} takes no mask_input. Fix: prompt with points/boxes only.")
        return check_mask_input(mask_input, self.mask_input_size, batch=batch)

    def _prompt_arrays(self, pts, lab, bx, n: int):
        """The decoder's ``point_coords`` N x P x 2 (model frame) and ``point_labels`` N x P float32
        in the layout's order (see the manifest's ``prompts``)."""
        h, w = self._require().image.shape[:2]
        nh, nw = self._require().input_hw
        scale = np.array([nw / w, nh / h], dtype=np.float64)  # scale in float64, then cast (as torch)
        coords, labels = [], []
        corners = None if bx is None else (bx.astype(np.float64).reshape(-1, 2, 2) * scale).astype(np.float32)
        clicks = None if pts is None else (pts.astype(np.float64) * scale).astype(np.float32)
        corner_labels = np.broadcast_to(np.array([2.0, 3.0], np.float32), (n, 2))
        parts = [(clicks, None if lab is None else lab.astype(np.float32)), (corners, corner_labels)]
        if self.layout == "sam2":
            parts.reverse()  # SAM 2: box corners first, then the clicks
        for c, lb in parts:
            if c is not None:
                coords.append(c)
                labels.append(lb)
        if self.layout == "sam" and bx is None and pts is not None:  # segment-anything: one padding point
            coords.append(np.zeros((n, 1, 2), np.float32))
            labels.append(np.full((n, 1), -1.0, np.float32))
        if not coords:
            return np.zeros((n, 0, 2), np.float32), np.zeros((n, 0), np.float32)
        return np.concatenate(coords, 1), np.concatenate(labels, 1)

    def _feeds(self, pts, lab, bx, mask_input, n: int) -> Dict[str, np.ndarray]:
        state = self._require()
        coords, labels = self._prompt_arrays(pts, lab, bx, n)
        feeds = dict(state.features)
        if self.layout != "sam2":
            # EfficientSAM: the graph's bicubic upsampling of all 4 masks is slow in onnxruntime; it is
            # asked for the low-res size (a no-op) and the chosen masks are upsampled in numpy
            size = self.mask_input_size if self.layout == "efficient_sam" else state.image.shape[:2]
            feeds = {"image_embeddings": state.features["image_embeddings"],
                     "orig_im_size": np.array(size, dtype=np.float32)}
        has = np.ones(1, np.float32) if mask_input is not None else np.zeros(1, np.float32)
        if mask_input is None:
            mask_input = np.zeros((1, 1, *self.mask_input_size), np.float32)
        feeds.update(point_coords=coords, point_labels=labels, mask_input=mask_input, has_mask_input=has)
        return {k: feeds[k] for k in self.decoder_inputs}

    # ------------------------------------------------------------------ decoding
    def _decode(self, pts, lab, bx, mask_input, multimask: bool) -> List[Masks]:
        if multimask and self.spec.get("mask_tokens", {}).get("returned") == "single":
            raise InputError(f"the decoder of {self.export.folder} returns one mask (exported with --single-mask), so "
                             "multimask=True cannot be served. Fix: pass multimask=False (--single), or export again "
                             "without --single-mask.")
        n = (pts if pts is not None else bx).shape[0] if (pts is not None or bx is not None) else 1
        state = self._require()
        t0 = time.perf_counter()
        if self.fast and mask_input is None:
            decoder = self._fast_pair(state)
            coords, labels = self._prompt_arrays(pts, lab, bx, n)
            feeds = {**state.features, **state.first, "point_coords": coords, "point_labels": labels}
            outs = dict(zip([o.name for o in decoder.get_outputs()],
                            decoder.run(None, {i.name: feeds[i.name] for i in decoder.get_inputs()})))
        else:
            outs = dict(zip([o.name for o in self.decoder.get_outputs()],
                            self.decoder.run(None, self._feeds(pts, lab, bx, mask_input, n))))
        t1 = time.perf_counter()
        low_all = outs["low_res_masks"] if "low_res_masks" in outs else outs["masks"]
        iou_all = outs["iou_predictions"]
        rows = np.arange(low_all.shape[0])[:, None]
        select = None if multimask or self.selection == "native" else self.selection
        dyn = self.spec.get("dynamic_multimask")
        if low_all.shape[1] == 1:  # a --single-mask export: the graph chose the mask
            idx = np.zeros((low_all.shape[0], 1), np.int64)
        elif multimask:
            idx = np.broadcast_to(np.arange(1, low_all.shape[1]), (low_all.shape[0], low_all.shape[1] - 1))
        elif select is None and dyn:
            idx = imageops.dynamic_multimask_index(low_all, iou_all, float(dyn["stability_delta"]),
                                                   float(dyn["stability_thresh"]))[:, None]
        elif select is None:
            idx = np.zeros((low_all.shape[0], 1), np.int64)
        else:
            key = (imageops.stability_score(low_all, self.mask_threshold, self.stability_offset)
                   if select == "stability" else iou_all)
            idx = np.argmax(key, axis=1)[:, None]
        low, iou = low_all[rows, idx], iou_all[rows, idx]
        stab = imageops.stability_score(low, self.mask_threshold, self.stability_offset)
        full = outs["masks"][rows, idx] if self.layout == "sam" and "masks" in outs else self._upscale(low)
        #: seconds of the last decode: the graph run, then the selection and upsampling in numpy
        self.timing = {"graph": t1 - t0, "post": time.perf_counter() - t1}
        return [Masks(masks=full[i] > self.mask_threshold, scores=iou[i].astype(np.float32),
                      low_res_logits=low[i].astype(np.float32), stability=stab[i]) for i in range(low.shape[0])]

    def _upscale(self, low: np.ndarray) -> np.ndarray:
        """Low-res logits ``N x K x h x w`` -> ``N x K x H x W``: segment-anything's postprocessing
        (SAM layout, when the fast decoder gave low-res masks only), or straight to the image size:
        bilinear (SAM 2 family) or bicubic (EfficientSAM), as the torch models do."""
        state = self._require()
        size = state.image.shape[:2]
        if self.layout == "sam":
            return imageops.sam_postprocess(low, int(self.spec["input_size"]), state.input_hw, size)
        if self.layout == "efficient_sam":
            return imageops.resize_bicubic(low, size)
        return imageops.resize_bilinear(low, size)
