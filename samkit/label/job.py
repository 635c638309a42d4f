"""``label_dataset``: check everything, list the inputs, skip what earlier runs finished, run an
engine with a progress bar, write each finished batch as a shard, then merge (``merge.py``)."""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..errors import InputError, SamkitError, require
from ..io.outputs import check_out_dir
from .engines import LocalEngine, SerialEngine
from .merge import FORMATS, merge
from ..io.progress import Progress
from .settings import LabelSettings, make_settings
from .sources import attach_boxes, is_uri, list_items, read_boxes_file
from .store import ShardStore

ENGINES = ("local", "ray", "serial")


class Interrupted(SamkitError):
    """Ctrl-C during a job: the finished batches are kept, a rerun resumes."""


def _check_options(mode: str, boxes, classes, engine: str, formats: Sequence[str], batch_size: Optional[int],
                   num_workers: Optional[int], stall_timeout: float) -> None:
    if engine not in ENGINES:
        raise InputError(f"unknown --engine {engine!r}. Fix: use local (this machine), ray, or serial.")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InputError(f"unknown --format {', '.join(bad)} for `samkit label`. Fix: use {', '.join(FORMATS)}.")
    if boxes is not None and mode != "boxes":
        raise InputError(f"--boxes applies to --mode boxes, not --mode {mode}. Fix: add --mode boxes, or drop --boxes.")
    if classes is not None and mode == "boxes":
        raise InputError("--classes does not apply to --mode boxes: the boxes file's categories name the masks. "
                         "Fix: drop --classes (or use --mode text / everything).")
    for name, value in (("--batch-size", batch_size), ("--num-workers", num_workers)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1, got {value}. Fix: pass {name} 1 or more.")
    if not stall_timeout > 0:
        raise InputError(f"--stall-timeout must be positive, got {stall_timeout}. Fix: pass seconds, e.g. 900.")


def _check_engine(engine: str, ray_address, cpus_per_worker, gpus_per_worker, parquet: bool) -> None:
    """Ray-only options need --engine ray, and every optional package is checked before any work."""
    if engine != "ray":
        given = [name for name, v in (("--ray-address", ray_address), ("--cpus-per-worker", cpus_per_worker),
                                      ("--gpus-per-worker", gpus_per_worker or None)) if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} apply to --engine ray, not --engine {engine}. Fix: add --engine ray "
                             "(or drop them; the local engine's GPU option is --device cuda).")
    else:
        for module in ("ray", "ray.data"):
            require(module, "ray", "--engine ray")
    if parquet:
        for module in ("pyarrow", "pyarrow.parquet"):
            require(module, "parquet", "--format parquet")


def _resolve_model(model: Any, checkpoint, mode: str, offline: bool) -> Optional[str]:
    """Check a registry name and fetch its weights once, here (never by every worker at once)."""
    if callable(model):
        return None if checkpoint is None else os.fspath(checkpoint)
    from .. import hub
    from ..specs import get_spec

    spec = get_spec(str(model))  # KeyError listing the names for an unknown one
    if getattr(spec, "kind", "segmenter") != "segmenter":
        raise InputError(f"{spec.name!r} is a {spec.kind} model, it draws no masks. Fix: pass a segmenter with "
                         "--model (`samkit models ls`).")
    if mode == "everything" and not spec.neural:
        raise InputError(f"--mode everything needs a neural model; {spec.name!r} is not one. Fix: pass --model "
                         "sam_vit_b (or another `samkit models ls` segmenter), or use --mode boxes with classic.")
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise InputError(f"--checkpoint {checkpoint} does not exist. Fix: pass the weights file's path.")
        return str(path.resolve())
    if not spec.neural:
        return None
    return str(hub.resolve(spec, offline=True if offline else None))


def _resolve_clip(settings: LabelSettings, offline: bool) -> LabelSettings:
    if not settings.needs_clip or settings.clip_factory is not None or settings.clip_checkpoint is not None:
        return settings
    from dataclasses import replace

    from .. import hub
    from ..specs import get_spec

    spec = get_spec(settings.clip)
    if getattr(spec, "kind", "") != "clip":
        raise InputError(f"--clip {settings.clip} is not a CLIP model. Fix: use --clip clip_vit_b16 or clip_rn50x16.")
    return replace(settings, clip_checkpoint=str(hub.resolve(spec, offline=True if offline else None)))


def _engine(engine: str, settings: LabelSettings, num_workers, threads, stall_timeout, ray_options: Dict[str, Any]):
    if engine == "serial":
        return SerialEngine(settings, threads)
    if engine == "local":
        from ..threads import usable_cpus

        workers = num_workers or (1 if settings.device != "cpu" else max(1, usable_cpus() // 4))
        return LocalEngine(settings, workers, threads, stall_timeout)
    from .ray_engine import RayEngine

    return RayEngine(settings, num_workers, threads, stall_timeout=stall_timeout, **ray_options)


def label_dataset(src: Any, out: Any, model: Any = "classic", *, mode: str = "everything", boxes: Any = None,
                  classes: Any = None, formats: Sequence[str] = ("coco",), engine: str = "local",
                  num_workers: Optional[int] = None, threads: Optional[int] = None, batch_size: Optional[int] = None,
                  checkpoint: Any = None, clip: Any = None, clip_checkpoint: Any = None, device: str = "cpu",
                  image_root: Optional[str] = None, ray_address: Optional[str] = None,
                  cpus_per_worker: Optional[float] = None, gpus_per_worker: float = 0.0, stall_timeout: float = 900.0,
                  offline: bool = False, progress: bool = True, log=None, **everything: Any) -> Dict[str, Any]:
    """Label every image of ``src`` into ``out`` (see ``samkit.label``); returns the summary.

    ``model``: a registry name or a zero-argument factory function (importable at module level);
    ``mode``: ``everything`` / ``boxes`` (``boxes``: a COCO detection file; default ``src`` when
    it is one) / ``text`` (``classes`` required); ``engine``: ``local`` / ``ray`` / ``serial``;
    ``everything``: ``samkit.auto.AutoMaskGenerator`` options. ``log(message)`` gets the status
    lines (default: stderr)."""
    t_start = time.perf_counter()
    say = log or (lambda m: print(m, file=sys.stderr))
    out = check_out_dir(Path(os.fspath(out)))
    formats = list(formats)
    _check_options(mode, boxes, classes, engine, formats, batch_size, num_workers, stall_timeout)
    _check_engine(engine, ray_address, cpus_per_worker, gpus_per_worker, "parquet" in formats)
    settings = make_settings(model, mode, None, classes, clip, clip_checkpoint, device, **everything)
    items = list_items(os.fspath(src), out, image_root)
    box_categories = None
    if mode == "boxes":
        items, box_categories = _boxes(items, boxes, src)
    if gpus_per_worker and device == "cpu":
        device = "cuda"
    from dataclasses import replace

    settings = replace(settings, checkpoint=_resolve_model(model, checkpoint, mode, offline), device=device)
    settings = _resolve_clip(settings, offline)
    store = ShardStore(out, settings.key()).lock()
    try:
        index = store.scan()
        todo = [it for it in items if not index.settled(it.uri, it.ident)]
        resumed = len(items) - len(todo)
        if resumed:
            bad = sum(not index.done(it.uri, it.ident) for it in items) - len(todo)
            say(f"resuming: {resumed - bad} of {len(items)} image(s) already labelled"
                f"{f', {bad} unreadable and unchanged (not retried)' if bad else ''} in {store.dir}")
        ray_options = {"cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker, "address": ray_address}
        run = _run(engine, settings, todo, num_workers, threads, batch_size, stall_timeout, ray_options, store,
                   progress, say)
        run.update(resumed=resumed, seconds=time.perf_counter() - t_start, engine=engine)
        return merge(out, items, store, settings, formats, box_categories, run)
    finally:
        store.unlock()


def _boxes(items, boxes, src):
    if boxes is None:
        if isinstance(src, (str, os.PathLike)) and os.fspath(src).lower().endswith(".json"):
            boxes = src
        else:
            raise InputError("--mode boxes needs the boxes to prompt with. Fix: add --boxes detections.json (a COCO "
                             "file: images, annotations with bbox [x, y, w, h] and category_id, categories).")
    path = os.fspath(boxes)
    doc = read_boxes_file(path if is_uri(path) else str(Path(path).expanduser()))
    return attach_boxes(items, doc, path)


def _run(engine_name, settings, todo, num_workers, threads, batch_size, stall_timeout, ray_options, store,
         progress, say) -> Dict[str, Any]:
    """Run the engine over ``todo``, one shard per finished batch; Ctrl-C -> ``Interrupted``."""
    run: Dict[str, Any] = {"processed": 0, "workers": 0, "labelling_seconds": 0.0, "images_per_second": None}
    if not todo:
        return run
    engine = _engine(engine_name, settings, num_workers, threads, stall_timeout, ray_options)
    run["workers"] = engine.workers
    size = batch_size or max(1, min(16, math.ceil(len(todo) / (4 * engine.workers))))
    say(f"labelling {len(todo)} image(s): {engine_name} engine, {engine.workers} worker(s), batches of {size}")
    bar = Progress(len(todo), enabled=progress)
    t0 = time.perf_counter()
    try:
        for records in engine.run(todo, size):
            store.write(records)
            run["processed"] += len(records)
            bar.advance(len(records), sum(r["t"] == "fail" for r in records))
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {run['processed']} of {len(todo)} image(s); the finished ones are kept "
                          f"in {store.dir}. Fix: run the same command again to resume.") from None
    finally:
        bar.close()
        engine.close()
    run["labelling_seconds"] = time.perf_counter() - t0
    run["images_per_second"] = round(run["processed"] / max(run["labelling_seconds"], 1e-9), 4)
    return run
