"""The server's image engine: one predictor, many images, embeddings kept in a bounded cache.

``ImageEngine`` wraps ``samkit.ImagePredictor`` (a torch model or ``classic``) or
``samkit.runtime.OnnxImagePredictor`` (an export folder: ``samkit serve --model DIR``). Every
method runs on the inference queue's single worker thread, so the predictor's one current image
can be swapped freely: an image is encoded once and its predictor state (image, encoder
outputs, transform) is kept in an ``LRUBytes`` cache keyed by (sha256 of the file, model id).

The embedding shipped to the browser (``embedding_payload``) is the ONNX encoder's outputs,
so the browser decoder exists only for export folders (every layout: ``sam``, ``efficient_sam``, ``sam2``);
any other engine decodes on the server (the page falls back to ``/api/image/decode``).
"""
from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..errors import InputError
from ..io.image import load_image
from ..masks import Masks
from .cache import FileDigests, LRUBytes

BROWSER_LAYOUTS = ("sam", "efficient_sam", "sam2")
#: the export graphs the page may fetch (``GET /api/image/decoder?graph=``): the reference decoder and
#: the fast pair (``samkit.export.fast_decoder``: once per image, per click)
BROWSER_GRAPHS = ("prompt_decoder", "decoder_image", "prompt_decoder_fast")
LOW_RES_KEEP = 64  # low-resolution logits kept for refinement (ids handed to clients)


def _nbytes(obj: Any) -> int:
    """Bytes held by arrays / tensors inside ``obj`` (dicts, tuples, dataclass-like objects)."""
    if obj is None:
        return 0
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):
        return int(obj.element_size() * obj.nelement())
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(_nbytes(v) for v in vars(obj).values())
    return 0


class ImageEngine:
    """Encode / decode / everything / text on images of the data folder (see module docstring).

    ``predictor``: an ``ImagePredictor`` or ``OnnxImagePredictor``; ``name``: the model's name;
    ``cache_bytes``: the embedding cache's cap; ``max_pixels``: the image loader's pixel limit.
    """

    def __init__(self, predictor: Any, name: str, cache_bytes: int = 1 << 30, max_pixels: Optional[int] = None,
                 export_folder: Any = None) -> None:
        self.predictor = predictor
        self.name = name
        self.export = export_folder
        self.cache = LRUBytes(cache_bytes)
        self.low_res = LRUBytes(LOW_RES_KEEP * 256 * 256 * 4)
        self.digests = FileDigests()
        self.max_pixels = max_pixels
        self.model_id = name if export_folder is None else f"{name}@{export_folder.folder}"
        self.neural = getattr(predictor, "neural", True)

    # ------------------------------------------------------------------ facts
    @property
    def kind(self) -> str:
        if self.export is not None:
            return "onnx"
        return "torch" if self.neural else "classic"

    def browser_decoder(self) -> Optional[dict]:
        """What the page needs to run the prompt decoder itself, or None (server decoding).
        ``fast``: the inputs / outputs of the fast decoder pair when the export has it (else None)."""
        if self.export is None:
            return None
        spec = self.predictor.spec
        if spec.get("layout") not in BROWSER_LAYOUTS:
            return None
        dec = self.export.graph("prompt_decoder")
        fast = None
        # the fast pair when the server's predictor runs it (not with --no-fast-decoder, nor for a
        # --single-mask export, whose graph picks the mask)
        if getattr(self.predictor, "fast", False):
            img, per_click = self.export.graph("decoder_image"), self.export.graph("prompt_decoder_fast")
            fast = {"image_inputs": [i["name"] for i in img["inputs"]], "inputs": [i["name"] for i in per_click["inputs"]],
                    "outputs": [o["name"] for o in per_click["outputs"]]}
        return {"layout": spec["layout"], "file": dec["file"], "inputs": [i["name"] for i in dec["inputs"]],
                "outputs": [o["name"] for o in dec["outputs"]], "mask_threshold": float(spec.get("mask_threshold", 0)),
                "mask_input_size": list(spec["mask_input_size"]), "mask_tokens": spec.get("mask_tokens"),
                "dynamic_multimask": spec.get("dynamic_multimask"), "supports_mask_input":
                bool(spec.get("supports_mask_input", True)), "input_size": int(spec["input_size"]), "fast": fast}

    def decoder_path(self, graph: str = "prompt_decoder") -> Path:
        """The file of the decoder graph ``graph`` (one of ``BROWSER_GRAPHS`` the export has)."""
        info = self.browser_decoder()
        if info is None:
            raise InputError("this model has no exported decoder the browser can run. Fix: decode on the server "
                             "(/api/image/decode), or start `samkit serve --model DIR` with a `samkit export` folder.")
        if graph not in BROWSER_GRAPHS or (graph != "prompt_decoder" and info["fast"] is None):
            have = ", ".join(BROWSER_GRAPHS if info["fast"] else BROWSER_GRAPHS[:1])
            raise InputError(f"no decoder graph {graph!r} here. Fix: ask for one of {have}.")
        return self.export.path(self.export.graph(graph))

    # ------------------------------------------------------------------ images (worker thread only)
    def encoded(self, path: Path) -> dict:
        """Make ``path`` the predictor's current image (encoding it unless cached); returns
        ``{"key", "width", "height", "cached"}``."""
        key = (self.digests.digest(path), self.model_id)
        state = self.cache.get(key)
        cached = state is not None
        if state is None:
            image = load_image(path, max_pixels=self.max_pixels)
            self.predictor.set_image(image)
            state = self.predictor._state  # the predictor's encoded image (both predictors keep it there)
            # features plus about as much again for the decoder's per-image cache, filled lazily
            self.cache.put(key, state, 2 * _nbytes(state) - int(image.nbytes))
            if getattr(self.predictor, "fast", False) and hasattr(self.predictor, "_fast_pair"):
                self.predictor._fast_pair(state)  # the fast decoder's per-image half now, not on the first click
        else:
            self.predictor._state = state
        h, w = state.image.shape[:2]
        return {"key": key[0][:16], "width": int(w), "height": int(h), "cached": cached}

    def decode(self, path: Path, points, labels, box, multimask: bool, refine: Optional[str]) -> Masks:
        """Prompts in image pixels -> ``Masks`` (K = 3 with ``multimask``, else 1)."""
        self.encoded(path)
        mask_input = None
        if refine:
            mask_input = self.low_res.get(refine)
            if mask_input is None:
                raise InputError(f"refine id {refine!r} is unknown or expired (the server keeps the last "
                                 f"{LOW_RES_KEEP}). Fix: send the prompts again without 'refine'.")
        return self.predictor.predict(points=points, labels=labels, box=box, mask_input=mask_input,
                                      multimask=multimask)

    def keep_low_res(self, masks: Masks) -> list:
        """Store each mask's low-res logits; returns their ids (None where there are none)."""
        if masks.low_res_logits is None:
            return [None] * len(masks)
        ids = []
        for logits in masks.low_res_logits:
            rid = uuid.uuid4().hex[:16]
            self.low_res.put(rid, logits[None].copy(), logits.nbytes)
            ids.append(rid)
        return ids

    def everything(self, path: Path, points_per_side: int, pred_iou_thresh: float, stability_thresh: float) -> Masks:
        if self.export is not None or not self.neural:
            raise InputError(f"everything mode needs a torch model; this server runs {self.kind!r}. Fix: start "
                             "`samkit serve --model NAME` with a neural model (e.g. mobile_sam).")
        from ..auto import AutoMaskGenerator

        image = self.encoded_image(path)
        gen = AutoMaskGenerator(self.predictor.model, points_per_side=points_per_side,
                                pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_thresh)
        return gen.generate(image).sorted()

    def supports_text(self) -> bool:
        """Whether ``text`` can answer (a torch model with a CLIP, or one that reads text itself)."""
        if self.export is not None or not self.neural:
            return False
        return getattr(self.predictor, "clip", None) is not None or hasattr(self.predictor.model, "predict_text")

    def text(self, path: Path, text: str) -> Masks:
        if self.export is not None:
            raise InputError("text prompts need a torch model. Fix: start `samkit serve --model NAME --clip "
                             "clip_vit_b16`.")
        if not self.supports_text():
            raise InputError("text prompts need a CLIP model (or a model that reads text). Fix: start the server "
                             "with --clip clip_vit_b16.")
        self.encoded(path)
        return self.predictor.predict(text=text)

    def encoded_image(self, path: Path) -> np.ndarray:
        self.encoded(path)
        return self.predictor._state.image

    # ------------------------------------------------------------------ the browser's embedding
    def embedding_payload(self, path: Path) -> bytes:
        """The ONNX encoder outputs of ``path`` for the browser decoder: a 4-byte little-endian
        header length, a JSON header ``{"tensors": [{name, shape, offset, bytes}], "width",
        "height", "input_hw", "layout"}``, then the float32 little-endian data."""
        self.decoder_path()  # refuses engines without a browser decoder
        info = self.encoded(path)
        state = self.predictor._state
        tensors, blobs, offset = [], [], 0
        for name, arr in state.features.items():
            data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            tensors.append({"name": name, "shape": list(arr.shape), "offset": offset, "bytes": len(data)})
            blobs.append(data)
            offset += len(data)
        header = json.dumps({"tensors": tensors, "width": info["width"], "height": info["height"],
                             "input_hw": list(state.input_hw), "layout": self.predictor.spec["layout"],
                             "key": info["key"]}).encode()
        header += b" " * (-len(header) % 4)  # keep the float data 4-byte aligned
        return struct.pack("<I", len(header)) + header + b"".join(blobs)

    def stats(self) -> Dict[str, Any]:
        return {"embeddings": self.cache.stats(), "low_res": self.low_res.stats()}
