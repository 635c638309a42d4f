"""``FlowTracker``, the video back end of the offline ``classic`` engine: masks from the
classic image engine (GrabCut), carried from frame to frame by dense optical flow (OpenCV
Farneback) and re-fitted by GrabCut.

Per frame and object: the previous mask is warped into the current frame with the
backward flow (current -> previous, computed once per frame pair on a grey image of at
most ``flow_side`` pixels), then GrabCut re-fits it inside the mask's box with a margin,
seeded from the warped mask (eroded = sure foreground, dilated ring = probable, outside =
background). If the re-fit collapses or explodes (area ratio outside [1/3, 3]) the warped
mask is kept. Only the previous frame's grey image and one mask per object are stored, in
the session's ``FlowState``.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from ..errors import InputError, VideoError, require
from .session import FrameResult, TrackingSession


def _cv2():
    return require("cv2", "classic", "The classic video engine")


class FlowTracker:
    """``VideoTracker`` back end for non-neural models (``spec.neural`` False); its state is
    the session's ``FlowState``."""

    def __init__(self, model, flow_side: int = 480, refit_iters: int = 2, margin: float = 0.15) -> None:
        self.model = model
        self.flow_side = int(flow_side)
        self.refit_iters = int(refit_iters)
        self.margin = float(margin)

    # ------------------------------------------------------------------ prompts
    def add_prompt(self, session: TrackingSession, frame: int, obj_id: int, points, labels, box, mask) -> FrameResult:
        image = session.source.get(frame)
        if mask is not None:
            m = np.asarray(mask).astype(bool)
            if m.shape != image.shape[:2]:
                raise InputError(f"mask is {m.shape[1]}x{m.shape[0]} but the video is "
                                 f"{image.shape[1]}x{image.shape[0]}. Fix: pass a mask of the frame size.")
        else:
            out = self.model.predict_image(image, points=points, labels=labels, box=box, multimask=False)
            m = np.asarray(out.masks[0]).astype(bool)
        prompts = session.flow.prompts.setdefault(obj_id, {})
        prompts[frame] = m
        if len(prompts) > session.max_cond_frames:
            far = max(prompts, key=lambda k: abs(k - frame))
            del prompts[far]
        pf = session.objects[obj_id].prompt_frames
        if frame not in pf:
            pf.append(frame)
            del pf[: -session.max_cond_frames]
        return FrameResult(frame=frame, masks={obj_id: m}, scores={obj_id: 1.0 if m.any() else -1.0})

    # ------------------------------------------------------------------ flow
    def _gray(self, image: np.ndarray) -> Tuple[np.ndarray, float]:
        cv2 = _cv2()
        h, w = image.shape[:2]
        s = min(1.0, self.flow_side / max(h, w))
        g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if s < 1.0:
            g = cv2.resize(g, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
        return g, s

    def _warp(self, mask: np.ndarray, flow_back: np.ndarray, scale: float) -> np.ndarray:
        """Warp the previous ``mask`` (H x W bool) into the current frame."""
        cv2 = _cv2()
        h, w = mask.shape
        fx = cv2.resize(flow_back[..., 0], (w, h), interpolation=cv2.INTER_LINEAR) / scale
        fy = cv2.resize(flow_back[..., 1], (w, h), interpolation=cv2.INTER_LINEAR) / scale
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        warped = cv2.remap(mask.astype(np.float32), gx + fx, gy + fy, interpolation=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return warped > 0.5

    def _refit(self, image: np.ndarray, warped: np.ndarray) -> np.ndarray:
        cv2 = _cv2()
        if not warped.any():
            return warped
        ys, xs = np.nonzero(warped)
        h, w = warped.shape
        bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        pad = int(self.margin * max(bw, bh)) + 8
        x0, y0 = max(0, xs.min() - pad), max(0, ys.min() - pad)
        x1, y1 = min(w, xs.max() + pad + 1), min(h, ys.max() + pad + 1)
        crop = np.ascontiguousarray(image[y0:y1, x0:x1, ::-1])
        wm = warped[y0:y1, x0:x1].astype(np.uint8)
        k = max(3, int(0.05 * max(bw, bh)) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        sure = cv2.erode(wm, kernel)
        maybe = cv2.dilate(wm, kernel)
        gc = np.full(wm.shape, cv2.GC_BGD, np.uint8)
        gc[maybe > 0] = cv2.GC_PR_BGD
        gc[wm > 0] = cv2.GC_PR_FGD
        gc[sure > 0] = cv2.GC_FGD
        if not (gc == cv2.GC_FGD).any() or (gc == cv2.GC_BGD).sum() < 16:
            return warped
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(crop, gc, None, bgd, fgd, self.refit_iters, cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            return warped
        fit = np.zeros_like(warped)
        fit[y0:y1, x0:x1] = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
        ratio = fit.sum() / max(1, warped.sum())
        return fit if 1 / 3 <= ratio <= 3 else warped

    # ------------------------------------------------------------------ propagate
    def propagate(self, session: TrackingSession, start: Optional[int], reverse: bool,
                  max_frames: Optional[int]) -> Iterator[Tuple[int, FrameResult]]:
        cv2 = _cv2()
        st = session.flow
        prompts: Dict[int, Dict[int, np.ndarray]] = st.prompts
        if not any(prompts.values()):
            raise InputError("no object has a prompt in this session. Fix: call add_prompt first.")
        src = session.source
        if start is None:
            start = min(t for p in prompts.values() for t in p)
        t = max(int(start), src.first_available())
        st.prev_gray, st.masks = None, {}
        count = 0
        n = session.num_frames
        while (t >= 0 if reverse else (n is None or t < n)) and (max_frames is None or count < max_frames):
            try:
                image = src.get(t)
            except VideoError:
                if src.ended:  # a live stream that ends just stops
                    return
                raise
            n = session.num_frames
            gray, scale = self._gray(image)
            flow_back = None
            if st.prev_gray is not None:
                flow_back = cv2.calcOpticalFlowFarneback(gray, st.prev_gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            masks, scores = {}, {}
            for oid in session.objects:
                p = prompts.get(oid, {})
                if t in p:
                    m = p[t]
                elif oid in st.masks and flow_back is not None:
                    m = self._refit(image, self._warp(st.masks[oid], flow_back, scale))
                else:
                    continue  # not started yet (its first prompt comes later)
                masks[oid] = m
                scores[oid] = 1.0 if m.any() else -1.0
            st.masks, st.prev_gray = masks, gray
            session.last_frame = t
            count += 1
            yield t, FrameResult(frame=t, masks=dict(masks), scores=scores)
            t = t - 1 if reverse else t + 1
