"""Writing evaluation results like the official DAVIS evaluator: a global CSV (one row), a
per-sequence CSV, and one JSON with both plus the run settings. Floats in the CSVs carry 3
decimals (the official ``float_format="%.3f"``); the JSON keeps full precision."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

from ..errors import InputError


def _fmt(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return v


def write_csv(path, rows: Sequence[Mapping[str, object]]) -> Path:
    path = Path(path)
    if not rows:
        raise InputError(f"Nothing to write to {path}. Fix: evaluate at least one sample.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
    return path


def _clean(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_results(out_dir, prefix: str, global_results: Mapping[str, float],
                  per_sequence: List[Mapping[str, object]], settings: Mapping[str, object]) -> Dict[str, Path]:
    """Write ``<prefix>global_results.csv``, ``<prefix>per-sequence_results.csv`` and
    ``<prefix>results.json`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "global_csv": write_csv(out / f"{prefix}global_results.csv", [dict(global_results)]),
        "per_sequence_csv": write_csv(out / f"{prefix}per-sequence_results.csv", per_sequence),
    }
    js = out / f"{prefix}results.json"
    js.write_text(json.dumps(_clean({"settings": dict(settings), "global": dict(global_results),
                                     "per_sequence": list(per_sequence)}), indent=2))
    paths["json"] = js
    return paths
