"""``samkit label SRC --out DST``: label a whole dataset (``samkit.label.label_dataset``).

``COMMAND`` (the function ``label``) is registered by ``samkit.cli.main`` as the plain command
``samkit label [OPTIONS] SRC``. Nothing heavy is imported before the arguments are checked;
the engine (local worker pool, Ray, serial) and the model are set up inside the job. The exit
code is 0 when every image was labelled, ``EXIT_FAILED_IMAGES`` (6) when the job finished but
some images failed (they are listed in ``DST/failures.jsonl``), and the usual codes of
``samkit --help`` for errors that stop the job (bad input 2, a missing extra 5, ...).
"""
from __future__ import annotations

import enum
from pathlib import Path
from typing import List, Optional

from .common import emit_json, info, is_export_path, parse_formats, resolve_model, typer
from ..errors import InputError

EXIT_FAILED_IMAGES = 6


class LabelFormat(str, enum.Enum):
    coco = "coco"
    jsonl = "jsonl"
    parquet = "parquet"


class Mode(str, enum.Enum):
    everything = "everything"
    boxes = "boxes"
    text = "text"


class Engine(str, enum.Enum):
    local = "local"
    ray = "ray"
    serial = "serial"


EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "  samkit label photos/ --out labels/ --model sam_vit_b\n\n"
    "  samkit label 'frames/**/*.jpg' --out labels/ --model mobile_sam --num-workers 2\n\n"
    "  samkit label images.json --out labels/ --model sam_vit_b --mode boxes --boxes detections.json\n\n"
    "  samkit label list.txt --out labels/ --model sam_vit_b --mode text --classes 'car,person'\n\n"
    "  samkit label s3://bucket/frames/ --out labels/ --model sam_vit_b --engine ray --ray-address auto\n\n"
    "Files in --out: coco.json (one COCO document; categories from --classes or the boxes file), "
    "labels.jsonl / labels.parquet (--format), failures.jsonl (images that could not be labelled, with the reason), "
    "summary.json (images, masks, failures, time), shards/ (finished results: rerunning the same command "
    "resumes and labels only what is missing).\n\n"
    f"Exit codes: 0 every image labelled, {EXIT_FAILED_IMAGES} finished but some images failed "
    "(failures.jsonl), otherwise those of `samkit --help`."
)


def label(
    src: str = typer.Argument(..., metavar="SRC", show_default=False,
                              help="A folder of images, a quoted glob ('frames/**/*.jpg'), a COCO JSON with `images`, "
                                   "or a text file with one image path or URI per line (fsspec URIs such as s3:// "
                                   "need fsspec and the filesystem's package)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created). Rerunning the same command resumes."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (`samkit models ls`). Default: the "
                                        "first one whose weights are cached, else classic."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Weights file (default: the cache)."),
    mode: Mode = typer.Option(Mode.everything, "--mode", help="everything (all masks of every image), boxes (one "
                              "mask per box of --boxes) or text (the masks of --classes)."),
    boxes: Optional[str] = typer.Option(None, "--boxes", help="--mode boxes: a COCO detection file (images with "
                                        "file_name, annotations with bbox and category_id, categories)."),
    classes: Optional[List[str]] = typer.Option(None, "--classes", metavar="A,B|FILE|coco|lvis|ade20k",
                                                help="Class names (comma-separated or repeated, a file with one "
                                                     "per line, or a built-in vocabulary): the text prompts of "
                                                     "--mode text; with --mode everything every mask is named."),
    fmt: Optional[List[str]] = typer.Option(None, "--format", "-f", metavar="FORMAT", show_default=False,
                                            help="Output format, repeatable or comma-separated: coco, jsonl, "
                                                 "parquet (needs pyarrow). Default: coco."),
    engine: Engine = typer.Option(Engine.local, "--engine", help="local (worker processes on this machine), ray "
                                  "(Ray Data actor pool; samkit\\[ray]) or serial (this process)."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", "-w", help="Worker processes / Ray actors, "
                                              "each holding one model. Default: CPUs / 4 (at least 1)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads per worker. Default: the CPUs "
                                          "shared out, so that workers x threads <= CPUs."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Images per batch (a shard of "
                                             "results). Default: up to 16."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster (ray://HEAD:10001, or auto "
                                              "on a cluster node). Default: a local Ray instance."),
    cpus_per_worker: Optional[float] = typer.Option(None, "--cpus-per-worker", help="Ray: CPUs per actor. "
                                                    "Default: sized from the cluster's CPUs."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="Ray: GPUs per actor (e.g. 1, or 0.5 to "
                                          "share a GPU); the model then runs on cuda."),
    stall_timeout: float = typer.Option(900.0, "--stall-timeout", help="Stop the job (finished images are kept) "
                                        "when no image finished for this many seconds."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Folder the file_name of a COCO SRC is "
                                             "relative to (default: the JSON's folder)."),
    points_per_side: int = typer.Option(32, "--points-per-side", help="--mode everything: grid points per side."),
    points_per_batch: int = typer.Option(64, "--points-per-batch", help="Points decoded at once (memory)."),
    pred_iou_thresh: float = typer.Option(0.88, "--pred-iou-thresh", help="Keep masks with predicted IoU above."),
    stability_thresh: float = typer.Option(0.95, "--stability-thresh", help="Keep masks with stability at least."),
    crop_layers: int = typer.Option(0, "--crop-layers", help="Extra layers of overlapping crops (0 = none)."),
    min_area: int = typer.Option(0, "--min-area", help="Fill holes / drop islands smaller than this (needs OpenCV)."),
    clip: Optional[str] = typer.Option(None, "--clip", help="CLIP for --classes (default clip_vit_b16)."),
    clip_checkpoint: Optional[Path] = typer.Option(None, "--clip-checkpoint", help="CLIP weights file."),
    device: str = typer.Option("cpu", "--device", help="torch device of every worker: cpu, cuda, mps."),
    offline: bool = typer.Option(False, "--offline", help="Never download; fail with the path to copy weights to."),
    json_out: bool = typer.Option(False, "--json", help="Also print the summary as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Label every image of SRC (masks as COCO RLE); resumable, on this machine or a Ray cluster."""
    formats = [f.value for f in parse_formats(fmt, default=[LabelFormat.coco], choices=LabelFormat,
                                              command="samkit label")]
    if is_export_path(model):
        raise InputError(f"--model {model} is an export folder; `samkit label` runs models in torch. Fix: pass a "
                         "model name (`samkit models ls`).")
    model = resolve_model(model, checkpoint)
    from ..label import label_dataset

    summary = label_dataset(
        src, out, model, mode=mode.value, boxes=boxes, classes=classes or None, formats=formats, engine=engine.value,
        num_workers=num_workers, threads=threads, batch_size=batch_size, checkpoint=checkpoint, clip=clip,
        clip_checkpoint=clip_checkpoint, device=device, image_root=image_root, ray_address=ray_address,
        cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, stall_timeout=stall_timeout,
        offline=offline, progress=not quiet, log=info, points_per_side=points_per_side,
        points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_thresh,
        crop_n_layers=crop_layers, min_mask_region_area=min_area)
    info(f"{summary['labelled']} of {summary['images']} image(s) labelled, {summary['masks']} mask(s), "
         f"{summary['failed']} failed; {summary['seconds']:.1f} s -> {Path(out) / 'summary.json'}")
    for f in summary["failures"][:5]:
        info(f"  failed: {f['file_name']}: {f['reason']}")
    if summary["failed"] > 5:
        info(f"  ... and {summary['failed'] - 5} more in {Path(out) / 'failures.jsonl'}")
    if json_out:
        emit_json(summary)
    if summary["failed"] or summary["missing"]:
        raise typer.Exit(EXIT_FAILED_IMAGES)


COMMAND = label
