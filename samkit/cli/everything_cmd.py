"""``samkit everything IMAGE``: segment everything in one image (automatic mask generation).

The module defines the typer sub-app ``app`` (registered by ``samkit.cli.main`` as
``everything``) with one command, ``run``, that is also the default: ``samkit everything IMAGE
--out DIR`` and ``samkit everything run IMAGE --out DIR`` are the same. The plain function
``everything(...)`` can also be registered as a top-level command. Torch and the model are imported inside the command; the progress bar
(rich) appears on stderr while the point batches are decoded.
"""
from __future__ import annotations

import enum
import json
import os
import time
from pathlib import Path
from typing import List, Optional

from .common import Backend, backend_option, compile_option, emit_json, info, parse_formats, resolve_model, typer
from ..errors import InputError, require


class EverythingFormat(str, enum.Enum):
    coco = "coco"
    png = "png"
    overlay = "overlay"


class NmsKind(str, enum.Enum):
    greedy = "greedy"
    fast = "fast"
    mask = "mask"


EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "  samkit everything photo.jpg --model sam_vit_b --out out/\n\n"
    "  samkit everything photo.jpg --model sam_vit_b --format coco,overlay --crop-layers 1\n\n"
    "  samkit everything photo.jpg --model sam2_hiera_tiny --m2m --pred-iou-thresh 0.8 --nms fast\n\n"
    "Files: {stem}_everything_coco.json (COCO annotations with RLE, bbox, area, predicted_iou, "
    "stability_score, point_coords, crop_box), {stem}_everything_000.png ... plus an index PNG, "
    "{stem}_everything_overlay.png."
)

class _DefaultCommandGroup(typer.core.TyperGroup):
    """A group that runs its ``run`` command when the first word is not a command name, so
    ``samkit everything IMAGE ...`` works as well as ``samkit everything run IMAGE ...``."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands:
            args = ["run", *args]
        return super().resolve_command(ctx, args)


app = typer.Typer(name="everything", cls=_DefaultCommandGroup, add_completion=False, rich_markup_mode="rich",
                  no_args_is_help=True, epilog=EPILOG,
                  context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                  help="Segment everything: prompt a grid of points and keep the good, distinct masks. "
                       "Usage: samkit everything IMAGE [OPTIONS] (see `samkit everything run --help`).")


def parse_everything_formats(values: Optional[List[str]]) -> List[EverythingFormat]:
    return parse_formats(values, default=[EverythingFormat.coco], choices=EverythingFormat,
                         command="samkit everything")


def coco_everything(masks, info_, image_path: Path) -> dict:
    """COCO instances document: one annotation per mask with the generator's record fields."""
    rles = info_.rles if info_.rles is not None else masks.to_coco_rle(compressed=_has_pycocotools())
    anns = []
    for k, rec in enumerate(info_.to_records()):
        ann = {"id": k + 1, "image_id": 1, "category_id": 1, "segmentation": rles[k], "iscrowd": 0}
        ann.update({key: rec[key] for key in ("area", "bbox", "predicted_iou", "stability_score", "point_coords",
                                                  "crop_box")})
        ann["score"] = rec["predicted_iou"]
        anns.append(ann)
    return {"images": [{"id": 1, "file_name": Path(image_path).name, "height": masks.height, "width": masks.width}],
            "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def _has_pycocotools() -> bool:
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        return False
    return True


@app.command("run", epilog=EPILOG)
def everything(
    image: Path = typer.Argument(..., help="Image file (JPEG, PNG, WebP, TIFF, ...).", show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Neural model name (`samkit models ls`). "
                                        "Default: the first one whose weights are cached."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Weights file (default: the cache)."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output folder (created)."),
    fmt: Optional[List[str]] = typer.Option(None, "--format", "-f", metavar="FORMAT",
                                            help="coco, png, overlay; repeatable or comma-separated. Default: coco."),
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
    device: str = typer.Option("cpu", "--device", help="torch device: cpu, cuda, cuda:0, mps."),
    offline: bool = typer.Option(False, "--offline", help="Never download; fail with the path to copy weights to."),
    json_out: bool = typer.Option(False, "--json", help="Also print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    backend: Backend = backend_option(),
    compile_: bool = compile_option(),
) -> None:
    """Segment everything in IMAGE and write the masks (COCO RLE JSON, PNGs, overlay)."""
    formats = parse_everything_formats(fmt)
    model = resolve_model(model, checkpoint)
    from ..specs import get_spec

    spec = get_spec(model)
    if not getattr(spec, "neural", True):
        raise InputError(f"`samkit everything` needs a neural model; {model!r} is not one. "
                         "Fix: pass --model sam_vit_b (download it with `samkit models download sam_vit_b`).")
    if offline:
        os.environ["SAMKIT_OFFLINE"] = "1"

    from ..auto import AutoMaskGenerator
    from ..io.image import load_image
    from ..registry import load_model

    img = load_image(image)
    net = load_model(model, checkpoint=checkpoint, device=device, backend=backend.value, compile=compile_)
    gen = AutoMaskGenerator(net, points_per_side=points_per_side, points_per_batch=points_per_batch,
                            pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_thresh,
                            stability_score_offset=stability_offset, crop_n_layers=crop_layers,
                            crop_overlap_ratio=crop_overlap, crop_n_points_downscale_factor=crop_downscale,
                            min_mask_region_area=min_area, nms=nms.value, nms_thresh=nms_thresh,
                            output="coco_rle" if EverythingFormat.coco in formats and _has_pycocotools() else "masks",
                            use_m2m=m2m)
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

    stem = f"{image.stem}_everything"
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    from ..io.atomic import atomic_write_bytes, atomic_write_text

    for f in formats:
        if f is EverythingFormat.coco:
            doc = coco_everything(masks, meta, image)
            written["coco"] = [str(atomic_write_text(out / f"{stem}_coco.json", json.dumps(doc)))]
        elif f is EverythingFormat.png:
            written["png"] = [str(p) for p in masks.save_png(out, stem)]
        else:
            import io

            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(masks.overlay(img)).save(buf, format="PNG")
            written["overlay"] = [str(atomic_write_bytes(out / f"{stem}_overlay.png", buf.getvalue()))]
    info(f"{len(masks)} mask(s) from {meta.stats.get('point_batches', 0)} point batches in {elapsed:.1f} s")
    for name, paths in written.items():
        shown = paths if len(paths) <= 2 else [paths[0], "...", paths[-1]]
        info(f"  {name:<8} {' '.join(shown)}")
    if json_out:
        emit_json({"image": str(image), "model": model, "count": len(masks), "seconds": round(elapsed, 3),
                   "files": written, "masks": meta.to_records()})
