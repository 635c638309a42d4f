"""``samkit eval``: standard benchmarks from the command line.

```
samkit eval interactive --data DAVIS_ROOT --model NAME [--checkpoint F] [--every 10] [--max-clicks 20]
samkit eval vos         --data DAVIS_ROOT --model NAME [--checkpoint F]
samkit eval davis-results --data DAVIS_ROOT --results RESULTS_DIR
samkit eval coco        --annotations instances.json --images DIR --model NAME
```
Each command prints a table and writes ``*global_results.csv``, ``*per-sequence_results.csv``
and ``*results.json`` into ``--out`` (default ``samkit_eval/<command>-<model>``). The input
paths and ``--out`` are checked before any data or model is loaded, and the files of a run are
published as one set (``samkit.io.outputs``, key ``eval-<command>``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

from ..errors import InputError, require

typer = require("typer", "cli", "The samkit command line")
_rich_console = require("rich.console", "cli", "The samkit command line")
_rich_table = require("rich.table", "cli", "The samkit command line")
_rich_progress = require("rich.progress", "cli", "The samkit command line")

app = typer.Typer(help="Evaluate a model on standard benchmarks (DAVIS interactive / VOS J&F, COCO mask AP).",
                  no_args_is_help=True, add_completion=False)
console = _rich_console.Console()


# ----------------------------------------------------------------------------- helpers
def build_predictor(model: str, checkpoint: Optional[str], device: str):
    """load_model + ImagePredictor (patched in tests)."""
    from ..predict.image import ImagePredictor
    from ..registry import load_model

    return ImagePredictor(load_model(model, checkpoint=checkpoint, device=device))


def _video_tracker_class():
    """samkit.video.VideoTracker (or samkit.video.tracker.VideoTracker), None while absent."""
    import importlib

    for mod in ("samkit.video", "samkit.video.tracker"):
        try:
            cls = getattr(importlib.import_module(mod), "VideoTracker", None)
        except ImportError:
            cls = None
        if cls is not None:
            return cls
    return None


def build_tracker(model: str, checkpoint: Optional[str], device: str):
    """load_model + VideoTracker, or a clear error while the video module lacks it."""
    tracker_cls = _video_tracker_class()
    if tracker_cls is None:
        raise InputError("`samkit eval vos` needs samkit.video.VideoTracker, which this build does not provide "
                         "yet. Fix: update samkit to a version with the video tracker, or score existing result "
                         "PNGs with `samkit eval davis-results --data ROOT --results DIR`.")
    from ..registry import load_model

    loaded = load_model(model, checkpoint=checkpoint, device=device)
    try:
        return tracker_cls(loaded)
    except ImportError as exc:
        raise InputError(f"The VideoTracker cannot track with model {model!r} in this build ({exc}). Fix: update "
                         f"samkit to a version whose samkit.video supports {model!r}, or pick a video model "
                         f"(SAM 2 family).") from exc


def _check_input(path: Path, option: str, expected: str, want_dir: bool) -> Path:
    """An input that must be an existing folder (``want_dir``) or file: one clear error for the
    other kind or a missing path."""
    path = Path(path)
    wrong, kind, other = (path.is_file(), "a file", "folder") if want_dir else (path.is_dir(), "a folder", "file")
    if wrong:
        raise InputError(f"{option} {path} is {kind}; expected {expected}. Fix: pass that {other} instead.")
    if not (path.is_dir() if want_dir else path.is_file()):
        raise InputError(f"{option} {path} does not exist; expected {expected}. Fix: check the path (it is "
                         "relative to the current directory).")
    return path


def check_folder(path: Path, option: str, expected: str) -> Path:
    """An input that must be an existing folder."""
    return _check_input(path, option, expected, want_dir=True)


def check_file(path: Path, option: str, expected: str) -> Path:
    """An input that must be an existing file."""
    return _check_input(path, option, expected, want_dir=False)


DAVIS_ROOT = "the DAVIS root folder that holds JPEGImages/, Annotations/ and ImageSets/"


def _dataset(data: Path, year: str, split: str, sequences: Optional[str]):
    from ..eval.davis import DavisDataset

    check_folder(data, "--data", DAVIS_ROOT)
    names = [s for s in sequences.split(",") if s] if sequences else None
    return DavisDataset(data, year=year, split=split, sequences=names)


def _progress():
    p = _rich_progress
    return p.Progress(p.TextColumn("[bold]{task.description}"), p.BarColumn(), p.MofNCompleteColumn(),
                      p.TimeElapsedColumn(), p.TimeRemainingColumn(), p.TextColumn("{task.fields[item]}"),
                      console=console, transient=False)


def _table(title: str, rows: List[dict]) -> None:
    t = _rich_table.Table(title=title)
    for k in rows[0]:
        t.add_column(str(k), justify="left" if k == "Sequence" else "right")
    for r in rows:
        t.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()])
    console.print(t)


def _finish(out: Path, key: str, glob: dict, per_seq: List[dict], settings: dict,
            per_sample: Optional[List[dict]] = None) -> None:
    """Print the tables and write the results (and ``per-sample_results.csv`` when given) into
    ``out`` as one set."""
    from ..eval.report import write_csv, write_results
    from ..io.outputs import OutputSet

    _table("Global results", [glob])
    _table("Per-sequence results", per_seq)
    with OutputSet(out, f"eval-{key}") as outs:
        paths = list(write_results(outs.staging, "", glob, per_seq, settings).values())
        if per_sample is not None:
            paths.append(write_csv(outs.path("per-sample_results.csv"), per_sample))
        paths = [outs.final(p) for p in paths]
    for p in paths:
        console.print(f"wrote {p}")


def _fail(exc: Exception) -> None:
    """Report a samkit error as ``error: <problem>. Fix: ...`` with the CLI's exit codes
    (samkit.cli.common); anything else is a bug and keeps its traceback."""
    from .common import error_exit_code, report_error

    if error_exit_code(exc) is None:
        raise exc
    raise typer.Exit(code=report_error(exc))


def _out_dir(out: Optional[Path], command: str, model: str) -> Path:
    """``--out``, or ``samkit_eval/<command>-<model>``; checked (not created) before any work."""
    from .common import check_out_dir

    return check_out_dir(out if out is not None else Path("samkit_eval") / f"{command}-{model}")


# ----------------------------------------------------------------------------- commands
@app.command("interactive")
def interactive(
    data: Path = typer.Option(..., "--data", help="DAVIS root (JPEGImages/, Annotations/, ImageSets/)."),
    model: str = typer.Option(..., "--model", help="Model name (`samkit models ls`)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Checkpoint file (default: the model's)."),
    every: int = typer.Option(10, "--every", help="Use every N-th frame (0, N, 2N, ...)."),
    max_clicks: int = typer.Option(20, "--max-clicks", help="Click budget for NoC (failures count this many)."),
    clicks: str = typer.Option("1,3,5", "--clicks", help="Click counts whose mIoU is reported."),
    year: str = typer.Option("2017", "--year", help="ImageSets year (2016 or 2017)."),
    split: str = typer.Option("val", "--split", help="ImageSets split."),
    sequences: Optional[str] = typer.Option(None, "--sequences", help="Comma-separated subset of sequences."),
    oracle: bool = typer.Option(False, "--oracle", help="Keep the best-IoU candidate on multimask outputs."),
    device: str = typer.Option("cpu", "--device"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for CSV/JSON."),
) -> None:
    """mIoU with box / centre point / k clicks and NoC@85, NoC@90 on DAVIS frames (RITM protocol)."""
    from ..eval.interactive import count_samples, evaluate_interactive

    try:
        report_clicks = [int(c) for c in clicks.split(",") if c.strip()]
        out_dir = _out_dir(out, "interactive", model)
        ds = _dataset(data, year, split, sequences)
        total = count_samples(ds, every)
        predictor = build_predictor(model, checkpoint, device)
        start = time.time()
        with _progress() as bar:
            task = bar.add_task("interactive", total=total, item="")
            report = evaluate_interactive(predictor, ds, every=every, max_clicks=max_clicks,
                                          report_clicks=report_clicks, oracle=oracle,
                                          progress=lambda item: bar.update(task, advance=1, item=item))
        glob = report.global_results()
        settings = dict(command="interactive", model=model, checkpoint=checkpoint, data=str(data), year=year,
                        split=split, every=every, max_clicks=max_clicks, clicks=report_clicks, oracle=oracle,
                        device=device, seconds=round(time.time() - start, 1))
        _finish(out_dir, "interactive", glob, report.per_sequence(), settings, per_sample=report.rows())
    except Exception as exc:  # noqa: BLE001 - _fail re-raises what is not a samkit error
        _fail(exc)


@app.command("vos")
def vos(
    data: Path = typer.Option(..., "--data", help="DAVIS root (JPEGImages/, Annotations/, ImageSets/)."),
    model: str = typer.Option(..., "--model", help="Video-capable model name."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint"),
    year: str = typer.Option("2017", "--year"),
    split: str = typer.Option("val", "--split"),
    sequences: Optional[str] = typer.Option(None, "--sequences", help="Comma-separated subset of sequences."),
    device: str = typer.Option("cpu", "--device"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for CSV/JSON."),
) -> None:
    """DAVIS-2017 semi-supervised J&F: first-frame masks as prompts, first and last frames not scored."""
    from ..eval.vos import evaluate_tracker

    try:
        out_dir = _out_dir(out, "vos", model)
        ds = _dataset(data, year, split, sequences)
        tracker = build_tracker(model, checkpoint, device)
        start = time.time()
        with _progress() as bar:
            task = bar.add_task("vos", total=len(ds), item="")
            report = evaluate_tracker(tracker, ds, progress=lambda s: bar.update(task, advance=1, item=s))
        settings = dict(command="vos", model=model, checkpoint=checkpoint, data=str(data), year=year, split=split,
                        device=device, seconds=round(time.time() - start, 1))
        _finish(out_dir, "vos", report.global_results(), report.per_sequence(), settings)
    except Exception as exc:  # noqa: BLE001 - _fail re-raises what is not a samkit error
        _fail(exc)


@app.command("davis-results")
def davis_results(
    data: Path = typer.Option(..., "--data", help="DAVIS root."),
    results: Path = typer.Option(..., "--results", help="Folder of <seq>/<frame>.png index maps."),
    year: str = typer.Option("2017", "--year"),
    split: str = typer.Option("val", "--split"),
    sequences: Optional[str] = typer.Option(None, "--sequences"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: the results folder)."),
) -> None:
    """Score saved result PNGs with the DAVIS semi-supervised J&F (like evaluation_method.py)."""
    from ..eval.vos import evaluate_results_dir

    try:
        from .common import check_out_dir

        check_folder(results, "--results", "the folder of <sequence>/<frame>.png result index maps")
        out_dir = check_out_dir(out or results)
        ds = _dataset(data, year, split, sequences)
        with _progress() as bar:
            task = bar.add_task("davis", total=len(ds), item="")
            report = evaluate_results_dir(ds, results, progress=lambda s: bar.update(task, advance=1, item=s))
        settings = dict(command="davis-results", data=str(data), results=str(results), year=year, split=split)
        _finish(out_dir, "davis-results", report.global_results(), report.per_sequence(), settings)
    except Exception as exc:  # noqa: BLE001 - _fail re-raises what is not a samkit error
        _fail(exc)


@app.command("coco")
def coco(
    annotations: Path = typer.Option(..., "--annotations", help="COCO instances_*.json."),
    images: Path = typer.Option(..., "--images", help="Folder of the images."),
    model: str = typer.Option(..., "--model"),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate only the first N images."),
    device: str = typer.Option("cpu", "--device"),
    out: Optional[Path] = typer.Option(None, "--out"),
) -> None:
    """COCO mask AP with each ground-truth box as the prompt (pycocotools, iouType segm)."""
    from ..eval.coco import CocoInstances, evaluate_box_prompts

    try:
        out_dir = _out_dir(out, "coco", model)
        check_file(annotations, "--annotations", "a COCO instances JSON file (instances_val2017.json)")
        check_folder(images, "--images", "the folder of the COCO images")
        data = CocoInstances(annotations, images)
        ids = data.image_ids[:limit] if limit else data.image_ids
        predictor = build_predictor(model, checkpoint, device)
        with _progress() as bar:
            task = bar.add_task("coco", total=len(ids), item="")
            stats = evaluate_box_prompts(predictor, data, ids, progress=lambda s: bar.update(task, advance=1, item=s))
        settings = dict(command="coco", model=model, checkpoint=checkpoint, annotations=str(annotations),
                        images=str(images), limit=limit, device=device)
        _finish(out_dir, "coco", stats, [{"Sequence": "all", **stats}], settings)
    except Exception as exc:  # noqa: BLE001 - _fail re-raises what is not a samkit error
        _fail(exc)
