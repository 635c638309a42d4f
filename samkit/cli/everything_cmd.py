"""``samkit everything IMAGE``: segment everything in one image (automatic mask generation).

``COMMAND`` (the function ``everything``) is registered by ``samkit.cli.main`` as the plain
command ``samkit everything [OPTIONS] IMAGE``; ``app`` is the same command as a one-command
typer app. The older spelling ``samkit everything run IMAGE`` still works. The output folder is
checked before any work, and the files of a run are published as one set
(``samkit.io.outputs``, key ``everything-{stem}``): a failed run leaves the previous files as
they were. Torch and the model are imported inside the command; the progress bar (rich)
appears on stderr while the point batches are decoded.

``--vocabulary coco|lvis|ade20k|FILE|"a,b"`` names every mask with the CLIP of ``--clip``
(``AutoMaskGenerator(vocabulary=..., clip=...)``): COCO categories and ``category_id``, YOLO
class indices with ``classes.txt``, LabelMe shape labels and the JSON records carry the labels
(``samkit.vocab.labels``).
"""
from __future__ import annotations

import enum
import json
import os
import time
from pathlib import Path
from typing import List, Optional

from .common import (Backend, Command, backend_option, build_clip, check_clip_name, check_out_dir,
                     clip_checkpoint_option, clip_option, compile_option, emit_json, format_option, info,
                     int8_option, is_export_path, parse_formats, quantize_value, resolve_model, typer)
from ..errors import InputError, require


class EverythingFormat(str, enum.Enum):
    coco = "coco"
    png = "png"
    overlay = "overlay"
    yolo = "yolo"
    labelme = "labelme"


class NmsKind(str, enum.Enum):
    greedy = "greedy"
    fast = "fast"
    mask = "mask"


class EverythingMode(str, enum.Enum):
    exact = "exact"
    fast = "fast"


EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "  samkit everything photo.jpg --model sam_vit_b --out out/\n\n"
    "  samkit everything photo.jpg --model sam_vit_b --format coco,overlay --crop-layers 1\n\n"
    "  samkit everything photo.jpg --model sam2_hiera_tiny --m2m --pred-iou-thresh 0.8 --nms fast\n\n"
    "  samkit everything photo.jpg --model sam_vit_b --mode fast   (coarse-to-fine grid, fewer decodes)\n\n"
    "  samkit everything photo.jpg --vocabulary coco --clip clip_vit_b16 --format coco,yolo\n\n"
    "Files: {stem}_everything_coco.json (COCO annotations with RLE, bbox, area, predicted_iou, "
    "stability_score, point_coords, crop_box; with --vocabulary the vocabulary's categories and a label_score), "
    "{stem}_everything_000.png ... plus an index PNG, {stem}_everything_overlay.png, {stem}_everything.txt "
    "(YOLO; with --vocabulary also classes.txt), {stem}_everything.json (LabelMe)."
)


class _Command(Command):
    """Accepts the older ``samkit everything run IMAGE ...`` by dropping a leading ``run``
    (unless a file named ``run`` exists, which is then the image)."""

    def parse_args(self, ctx, args):
        if len(args) > 1 and args[0] == "run" and not os.path.exists("run"):
            args = args[1:]
        return super().parse_args(ctx, args)


def parse_everything_formats(values: Optional[List[str]]) -> List[EverythingFormat]:
    return parse_formats(values, default=[EverythingFormat.coco], choices=EverythingFormat,
                         command="samkit everything")


def coco_everything(masks, info_, image_path: Path, vocab=None) -> dict:
    """COCO instances document: one annotation per mask with the generator's record fields;
    with a vocabulary, its categories, each mask's ``category_id`` and ``label_score``."""
    from ..vocab.labels import coco_categories

    rles = info_.rles if info_.rles is not None else masks.to_coco_rle(compressed=_has_pycocotools())
    categories, cat_ids = coco_categories(masks, vocab)
    anns = []
    for k, rec in enumerate(info_.to_records()):
        ann = {"id": k + 1, "image_id": 1, "category_id": cat_ids[k], "segmentation": rles[k], "iscrowd": 0}
        ann.update({key: rec[key] for key in ("area", "bbox", "predicted_iou", "stability_score", "point_coords",
                                                  "crop_box", "label_score") if key in rec})
        ann["score"] = rec["predicted_iou"]
        anns.append(ann)
    return {"images": [{"id": 1, "file_name": Path(image_path).name, "height": masks.height, "width": masks.width}],
            "annotations": anns, "categories": categories}


def _has_pycocotools() -> bool:
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        return False
    return True


def everything(
    image: Path = typer.Argument(..., metavar="IMAGE", help="Image file (JPEG, PNG, WebP, TIFF, ...).",
                                 show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Neural model name (`samkit models ls`). "
                                        "Default: the first one whose weights are cached."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Weights file (default: the cache)."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output folder (created). A rerun replaces the "
                             "previous files of the same image there as a set."),
    fmt: Optional[List[str]] = format_option(EverythingFormat, [EverythingFormat.coco]),
    points_per_side: int = typer.Option(32, "--points-per-side", help="Grid points per image side."),
    points_per_batch: int = typer.Option(64, "--points-per-batch", help="Points decoded at once (memory)."),
    pred_iou_thresh: float = typer.Option(0.88, "--pred-iou-thresh", help="Keep masks with predicted IoU above."),
    stability_thresh: float = typer.Option(0.95, "--stability-thresh", help="Keep masks with stability at least."),
    stability_offset: float = typer.Option(1.0, "--stability-offset", help="Logit offset of the stability score."),
    crop_layers: int = typer.Option(0, "--crop-layers", help="Extra layers of overlapping crops (0 = none)."),
    crop_overlap: float = typer.Option(512 / 1500, "--crop-overlap", help="Crop overlap ratio."),
    crop_downscale: int = typer.Option(1, "--crop-points-downscale", help="Points-per-side divisor per crop layer."),
    min_area: int = typer.Option(0, "--min-area", help="Fill holes / drop islands smaller than this (needs OpenCV)."),
    nms: NmsKind = typer.Option(NmsKind.greedy, "--nms", help="greedy (official), fast (YOLACT) or mask (mask IoU)."),
    nms_thresh: float = typer.Option(0.7, "--nms-thresh", help="IoU above which duplicates are removed."),
    m2m: bool = typer.Option(False, "--m2m", help="SAM 2 mask-to-mask refinement of every mask."),
    mode: EverythingMode = typer.Option(EverythingMode.exact, "--mode",
                                        help="exact (the official masks) or fast (coarse-to-fine grids that skip "
                                             "points inside masks already found: far fewer decodes, nearly the "
                                             "same masks)."),
    vocabulary: Optional[str] = typer.Option(None, "--vocabulary", metavar="coco|lvis|ade20k|FILE|A,B",
                                             help="Name every mask from this vocabulary (built-in, a file with one "
                                                  "name per line, or comma-separated names); needs a CLIP (--clip)."),
    clip: str = clip_option(),
    clip_checkpoint: Optional[Path] = clip_checkpoint_option(),
    device: str = typer.Option("cpu", "--device", help="torch device: cpu, cuda, cuda:0, mps."),
    offline: bool = typer.Option(False, "--offline", help="Never download; fail with the path to copy weights to."),
    json_out: bool = typer.Option(False, "--json", help="Also print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    backend: Backend = backend_option(),
    compile_: bool = compile_option(),
    int8: bool = int8_option(),
) -> None:
    """Segment everything in IMAGE and write the masks (COCO RLE JSON, PNGs, overlay, YOLO, LabelMe)."""
    from ..vocab import load_vocabulary

    formats = parse_everything_formats(fmt)
    vocab = load_vocabulary(vocabulary) if vocabulary is not None else None
    check_out_dir(out)
    if vocab is not None and EverythingFormat.yolo in formats:
        from ..vocab.labels import check_class_names

        check_class_names(out, vocab)
    if is_export_path(model):
        raise InputError(f"--model {model} is an export folder; segment everything runs in torch (samkit.auto), which "
                         "export folders do not hold. Fix: pass a model name (`samkit models ls`), or prompt the "
                         "export folder with `samkit segment IMAGE --model FOLDER --point X,Y`.")
    model = resolve_model(model, checkpoint)
    if vocab is not None:
        check_clip_name(clip)
    from ..specs import get_spec

    spec = get_spec(model)
    if not getattr(spec, "neural", True):
        raise InputError(f"`samkit everything` needs a neural model; {model!r} is not one. "
                         "Fix: pass --model sam_vit_b (download it with `samkit models download sam_vit_b`).")

    from ..auto import AutoMaskGenerator
    from ..io.image import load_image
    from ..registry import load_model

    img = load_image(image)
    net = load_model(model, checkpoint=checkpoint, device=device, download=not offline, backend=backend.value,
                     compile=compile_, quantize=quantize_value(int8))
    dense = build_clip(clip, clip_checkpoint, device, offline) if vocab is not None else None
    gen = AutoMaskGenerator(net, points_per_side=points_per_side, points_per_batch=points_per_batch,
                            pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_thresh,
                            stability_score_offset=stability_offset, crop_n_layers=crop_layers,
                            crop_overlap_ratio=crop_overlap, crop_n_points_downscale_factor=crop_downscale,
                            min_mask_region_area=min_area, nms=nms.value, nms_thresh=nms_thresh,
                            output="coco_rle" if EverythingFormat.coco in formats and _has_pycocotools() else "masks",
                            use_m2m=m2m, vocabulary=vocab, clip=dense, mode=mode.value)
    t0 = time.perf_counter()
    if quiet:
        masks, meta = gen.generate_with_info(img)
    else:
        progress_mod = require("rich.progress", "cli", "The progress bar of `samkit everything`")
        console = require("rich.console", "cli", "The progress bar of `samkit everything`").Console(stderr=True)
        columns = (progress_mod.TextColumn("segmenting everything"), progress_mod.BarColumn(),
                   progress_mod.MofNCompleteColumn(), progress_mod.TextColumn("point batches"),
                   progress_mod.TimeElapsedColumn())
        with progress_mod.Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("everything", total=None)
            masks, meta = gen.generate_with_info(img, progress=lambda d, t: bar.update(task, completed=d, total=t))
    elapsed = time.perf_counter() - t0

    written = write_everything(masks, meta, img, image, out, formats, vocab)
    info(f"{len(masks)} mask(s) from {meta.stats.get('point_batches', 0)} point batches in {elapsed:.1f} s")
    for name, paths in written.items():
        shown = paths if len(paths) <= 2 else [paths[0], "...", paths[-1]]
        info(f"  {name:<8} {' '.join(shown)}")
    if json_out:
        emit_json({"image": str(image), "model": model, "mode": mode.value, "count": len(masks),
                   "points_decoded": meta.stats.get("points_decoded"), "seconds": round(elapsed, 3),
                   "files": written, "masks": meta.to_records()})


def write_everything(masks, meta, img, image: Path, out: Path, formats: List[EverythingFormat], vocab=None) -> dict:
    """Write the chosen formats as one set (key ``everything-{stem}``); {format: [paths]}.
    ``vocab``: the vocabulary the masks were named from (``classes.txt`` goes next to the set)."""
    from ..io.atomic import atomic_write_bytes, atomic_write_text
    from ..io.outputs import OutputSet

    stem = f"{image.stem}_everything"
    vocab = vocab if masks.labels is not None else None
    written = {}
    with OutputSet(out, f"everything-{image.stem}") as outs:
        for f in formats:
            if f is EverythingFormat.coco:
                doc = coco_everything(masks, meta, image, vocab)
                paths = [atomic_write_text(outs.path(f"{stem}_coco.json"), json.dumps(doc))]
            elif f is EverythingFormat.png:
                paths = masks.save_png(outs.staging, stem)
            elif f is EverythingFormat.yolo:
                paths = [outs.path(f"{stem}.txt")]
                masks.to_yolo(paths[0], names=None if vocab is None else vocab.names)
            elif f is EverythingFormat.labelme:
                paths = [outs.path(f"{stem}.json")]
                rel = os.path.relpath(Path(image).resolve(), outs.out.resolve())
                masks.to_labelme(rel, image_size=(masks.height, masks.width), path=paths[0])
            else:
                import io

                from PIL import Image

                buf = io.BytesIO()
                Image.fromarray(masks.overlay(img)).save(buf, format="PNG")
                paths = [atomic_write_bytes(outs.path(f"{stem}_overlay.png"), buf.getvalue())]
            written[f.value] = [str(outs.final(p)) for p in paths]
    if vocab is not None and EverythingFormat.yolo in formats:
        from ..vocab.labels import write_class_names

        written[EverythingFormat.yolo.value].append(str(write_class_names(out, vocab)))
    return written


COMMAND = everything
COMMAND_CLS = _Command
app = typer.Typer(name="everything", add_completion=False, rich_markup_mode="rich", no_args_is_help=True)
app.command("everything", epilog=EPILOG, cls=_Command)(everything)
