"""Video object segmentation: DAVIS-2017 semi-supervised J&F.

Protocol (official davis2017-evaluation, task "semi-supervised"):
* objects 1..N with N the largest index of the first annotation;
* the first frame (given as the prompt) and the last frame are excluded from scoring;
* per object and frame: J = ``region_similarity``, F = ``boundary_f`` (void pixels, value 255,
  ignored); per object: mean / recall / decay (``sequence_statistics``);
* global: J-Mean, J-Recall, J-Decay, F-... are means over all objects of all sequences
  (objects pooled, not averaged per sequence first); J&F-Mean = (J-Mean + F-Mean) / 2;
* per-sequence rows are per object, named ``<sequence>_<object id>``.

Predictions are dicts {object id: H x W bool}. Overlapping predictions are resolved like a
results PNG would be: objects are painted in increasing id order, so the higher id wins
(``exclusive=False`` scores each object's own mask instead). A missing object = empty mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError
from .davis import VOID, DavisDataset, read_index_png
from .metrics import boundary_f, region_similarity, sequence_statistics

GLOBAL_COLUMNS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]


@dataclass
class ObjectScores:
    """Per-frame J and F of one object over the scored frames (first and last excluded)."""

    sequence: str
    object_id: int
    j: np.ndarray
    f: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.sequence}_{self.object_id}"

    def stats(self) -> Dict[str, float]:
        jm, jr, jd = sequence_statistics(self.j)
        fm, fr, fd = sequence_statistics(self.f)
        return {"J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}


@dataclass
class VosReport:
    """All objects' scores; ``global_results()`` and ``per_sequence()`` as the official CSVs."""

    objects: List[ObjectScores] = field(default_factory=list)

    def global_results(self) -> Dict[str, float]:
        if not self.objects:
            raise InputError("No object was scored. Fix: check that the sequences have annotated objects "
                             "and at least 3 frames.")
        stats = [o.stats() for o in self.objects]
        out = {k: float(np.mean([s[k] for s in stats])) for k in GLOBAL_COLUMNS[1:]}
        out = {"J&F-Mean": (out["J-Mean"] + out["F-Mean"]) / 2, **out}
        return out

    def per_sequence(self) -> List[Dict[str, object]]:
        rows = []
        for o in self.objects:
            s = o.stats()
            rows.append({"Sequence": o.name, "J-Mean": s["J-Mean"], "F-Mean": s["F-Mean"]})
        return rows


def _paint(pred: Mapping[int, np.ndarray], shape, object_ids: Sequence[int]) -> np.ndarray:
    canvas = np.zeros(shape, dtype=np.int32)
    for oid in sorted(object_ids):
        m = pred.get(oid)
        if m is None:
            continue
        m = np.asarray(m, dtype=bool)
        if m.shape != tuple(shape):
            raise InputError(f"Predicted mask of object {oid} has shape {m.shape}, the annotation {tuple(shape)}. "
                             f"Fix: return masks at the original frame size.")
        canvas[m] = oid
    return canvas


def score_sequence(name: str, annotations: Sequence[np.ndarray], predictions: Sequence[Mapping[int, np.ndarray]],
                   object_ids: Optional[Sequence[int]] = None, exclusive: bool = True,
                   skip_first_last: bool = True) -> List[ObjectScores]:
    """J and F of every object of one sequence.

    ``annotations``: per frame H x W index maps (255 void); ``predictions``: per frame dicts
    {object id: H x W bool}, same length. ``object_ids`` default: 1..max of the first annotation.
    """
    if len(annotations) != len(predictions):
        raise InputError(f"Sequence {name!r}: {len(annotations)} annotations but {len(predictions)} predicted "
                         f"frames. Fix: predict every frame of the sequence, the first included.")
    if object_ids is None:
        first = np.asarray(annotations[0])
        vals = first[first != VOID]
        object_ids = list(range(1, int(vals.max()) + 1)) if vals.size else []
    frames = range(1, len(annotations) - 1) if skip_first_last else range(len(annotations))
    if len(frames) == 0:
        raise InputError(f"Sequence {name!r} has {len(annotations)} frames; the semi-supervised protocol scores "
                         f"frames 1..n-2. Fix: use sequences of at least 3 frames.")
    j = np.zeros((len(object_ids), len(frames)))
    f = np.zeros_like(j)
    for col, t in enumerate(frames):
        ann = np.asarray(annotations[t])
        void = ann == VOID
        painted = _paint(predictions[t], ann.shape, object_ids) if exclusive else None
        for row, oid in enumerate(object_ids):
            gt = ann == oid
            if exclusive:
                pr = painted == oid
            else:
                m = predictions[t].get(oid)
                pr = np.zeros(ann.shape, bool) if m is None else np.asarray(m, dtype=bool)
            j[row, col] = region_similarity(gt, pr, void)
            f[row, col] = boundary_f(gt, pr, void)
    return [ObjectScores(name, int(oid), j[r], f[r]) for r, oid in enumerate(object_ids)]


def evaluate_results_dir(dataset: DavisDataset, results_dir, progress: Optional[Callable[[str], None]] = None) -> VosReport:
    """Score a folder of results PNGs (``results_dir/<seq>/<frame>.png``, index maps) like the
    official evaluator does."""
    from pathlib import Path

    report = VosReport()
    for seq in dataset:
        anns = [dataset.annotation(seq.name, i) for i in range(len(seq))]
        ids = dataset.object_ids(seq.name)
        preds = []
        for fid in seq.frame_ids:
            p = Path(results_dir) / seq.name / f"{fid}.png"
            if not p.is_file():
                raise InputError(f"Result {p} is missing. Fix: write one index PNG per frame, named like the "
                                 f"JPEG frames.")
            m = read_index_png(p)
            preds.append({oid: m == oid for oid in ids})
        report.objects += score_sequence(seq.name, anns, preds, ids)
        if progress:
            progress(seq.name)
    return report


def run_tracker(tracker, dataset: DavisDataset, name: str) -> List[Dict[int, np.ndarray]]:
    """Prompt ``tracker`` (VideoTracker API) with the first-frame masks of every object of
    sequence ``name`` and return its per-frame predictions {object id: H x W bool}."""
    seq = dataset.sequence(name)
    first = dataset.annotation(name, 0)
    session = tracker.start(str(dataset.image_dir / name))
    for oid in dataset.object_ids(name):
        m = first == oid
        if m.any():
            tracker.add_prompt(session, frame=0, obj_id=oid, mask=m)
    preds: List[Dict[int, np.ndarray]] = [dict() for _ in range(len(seq))]
    for frame_idx, result in tracker.propagate(session):
        if not 0 <= frame_idx < len(seq):
            raise InputError(f"The tracker returned frame {frame_idx} for a {len(seq)}-frame sequence. "
                             f"Fix: the tracker must index frames from 0 in file-name order.")
        preds[frame_idx] = {int(k): np.asarray(v, dtype=bool) for k, v in result.masks.items()}
    # the prompt frame is excluded from scoring; keep the ground truth there for completeness
    preds[0] = {oid: first == oid for oid in dataset.object_ids(name)}
    return preds


def evaluate_tracker(tracker, dataset: DavisDataset, sequences: Optional[Iterable[str]] = None,
                     progress: Optional[Callable[[str], None]] = None) -> VosReport:
    """DAVIS semi-supervised J&F of ``tracker`` on ``dataset`` (all its sequences by default)."""
    report = VosReport()
    for name in (sequences or dataset.names):
        preds = run_tracker(tracker, dataset, name)
        seq = dataset.sequence(name)
        anns = [dataset.annotation(name, i) for i in range(len(seq))]
        if any(a is None for a in anns[1:-1]):
            raise InputError(f"Sequence {name!r} lacks annotations for some frames; J&F needs every scored "
                             f"frame annotated. Fix: use the train/val annotations (test sets have first frames only).")
        report.objects += score_sequence(name, anns, preds, dataset.object_ids(name))
        if progress:
            progress(name)
    return report
