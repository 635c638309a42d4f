"""Interactive (image) evaluation on DAVIS frames: mIoU with a box, with the centre point,
after k clicks, and NoC@85 / NoC@90 (RITM protocol, see ``samkit.eval.clicks``).

Samples: every ``every``-th frame of each sequence (frames 0, every, 2*every, ...), every
object present in that frame (empty objects are skipped; void pixels, value 255, count as
background). Each sample is one object on one frame; all means are over samples.

* mIoU@box: one box prompt (tight box of the ground truth), single mask output;
* mIoU@centre: one positive click at the centre point, multimask with the top-scored
  candidate kept. By the protocol this is exactly click 1, so mIoU@centre == mIoU@1click;
* mIoU@k clicks (k in ``report_clicks``), NoC@85, NoC@90 with at most ``max_clicks`` clicks
  (a sample that never reaches the threshold counts ``max_clicks``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..errors import InputError
from .clicks import box_iou_sample, run_clicks
from .davis import VOID, DavisDataset

THRESHOLDS = (0.85, 0.90)


@dataclass
class InteractiveSample:
    sequence: str
    frame: int
    object_id: int
    box_iou: float
    ious: List[float]

    def row(self, report_clicks: Sequence[int], max_clicks: int) -> Dict[str, object]:
        from .metrics import number_of_clicks

        r: Dict[str, object] = {"Sequence": self.sequence, "Frame": self.frame, "Object": self.object_id,
                                "IoU@box": self.box_iou, "IoU@centre": self.ious[0]}
        for k in report_clicks:
            r[f"IoU@{k}"] = self.ious[k - 1]
        for t in THRESHOLDS:
            r[f"NoC@{int(round(t * 100))}"] = number_of_clicks(self.ious, t, max_clicks)
        return r


@dataclass
class InteractiveReport:
    samples: List[InteractiveSample] = field(default_factory=list)
    report_clicks: Sequence[int] = (1, 3, 5)
    max_clicks: int = 20

    def rows(self) -> List[Dict[str, object]]:
        return [s.row(self.report_clicks, self.max_clicks) for s in self.samples]

    def global_results(self) -> Dict[str, float]:
        if not self.samples:
            raise InputError("No sample was evaluated. Fix: check --every and that the frames have objects.")
        rows = self.rows()
        keys = ["IoU@box", "IoU@centre"] + [f"IoU@{k}" for k in self.report_clicks] + \
               [f"NoC@{int(round(t * 100))}" for t in THRESHOLDS]
        out = {("m" + k if k.startswith("IoU") else k): float(np.mean([r[k] for r in rows])) for k in keys}
        out["samples"] = float(len(rows))
        for t in THRESHOLDS:
            name = f"NoC@{int(round(t * 100))}"
            out[f"{name}-failures"] = float(sum(1 for s in self.samples if max(s.ious) < t))
        return out

    def per_sequence(self) -> List[Dict[str, object]]:
        """Means per sequence (same columns as the global results)."""
        out = []
        for name in dict.fromkeys(s.sequence for s in self.samples):
            sub = InteractiveReport([s for s in self.samples if s.sequence == name], self.report_clicks,
                                    self.max_clicks)
            g = sub.global_results()
            out.append({"Sequence": name, **{k: v for k, v in g.items() if not k.endswith("failures")}})
        return out


def pool_per_sequence(rows: Sequence[Dict[str, object]]) -> Dict[str, float]:
    """Global results from per-sequence rows (e.g. of separate ``--sequences`` runs, read back
    from their results.json): every mean weighted by the row's sample count, which is exactly
    the mean over all samples."""
    if not rows:
        raise InputError("No per-sequence rows to pool. Fix: pass the per_sequence lists of results.json files.")
    n = np.array([float(r["samples"]) for r in rows])
    keys = [k for k in rows[0] if k not in ("Sequence", "samples")]
    out = {k: float(np.dot(n, [float(r[k]) for r in rows]) / n.sum()) for k in keys}
    out["samples"] = float(n.sum())
    return out


def iter_samples(dataset: DavisDataset, every: int = 10, sequences: Optional[Iterable[str]] = None):
    """Yield (sequence, frame index, object id, image loader, gt mask, void) for the samples."""
    if every < 1:
        raise InputError(f"--every must be >= 1, got {every}. Fix: pass --every 10 for every 10th frame.")
    for name in (sequences or dataset.names):
        seq = dataset.sequence(name)
        ids = dataset.object_ids(name)
        for t in range(0, len(seq), every):
            ann = dataset.annotation(name, t)
            if ann is None:
                continue
            for oid in ids:
                gt = ann == oid
                if gt.any():
                    yield name, t, oid, gt, ann == VOID


def count_samples(dataset: DavisDataset, every: int = 10, sequences: Optional[Iterable[str]] = None) -> int:
    return sum(1 for _ in iter_samples(dataset, every, sequences))


def evaluate_interactive(predictor, dataset: DavisDataset, every: int = 10, max_clicks: int = 20,
                         report_clicks: Sequence[int] = (1, 3, 5), sequences: Optional[Iterable[str]] = None,
                         oracle: bool = False, progress: Optional[Callable[[str], None]] = None) -> InteractiveReport:
    """Run the box, centre-point and click protocols with ``predictor`` (``ImagePredictor``-like:
    ``set_image(img)``, ``predict(...) -> Masks``) on the DAVIS samples."""
    report_clicks = sorted(set(int(k) for k in report_clicks))
    if report_clicks and (report_clicks[0] < 1 or report_clicks[-1] > max_clicks):
        raise InputError(f"Reported click counts {report_clicks} must lie in 1..{max_clicks}. "
                         f"Fix: raise --max-clicks or report fewer clicks.")
    report = InteractiveReport(report_clicks=report_clicks, max_clicks=max_clicks)
    current = None
    for name, t, oid, gt, void in iter_samples(dataset, every, sequences):
        if current != (name, t):
            predictor.set_image(dataset.image(name, t))
            current = (name, t)
        box = box_iou_sample(predictor, gt, oracle=oracle)
        res = run_clicks(predictor, gt, max_clicks=max_clicks, thresholds=THRESHOLDS,
                         min_clicks=max(report_clicks or [1]), oracle=oracle)
        report.samples.append(InteractiveSample(name, t, oid, box, res.ious))
        if progress:
            progress(f"{name}/{t:05d}#{oid}")
    return report
