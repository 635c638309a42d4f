"""``samkit segment IMAGE``: promptable segmentation of one image from the command line.

``--text "red car"`` (repeatable) finds every instance of each text instead of taking point/box
prompts (``ImagePredictor.predict_batch(texts=...)`` with the CLIP of ``--clip``, or by the model
itself when it reads text: SAM 3, no CLIP is loaded then); the masks then carry labels, which
every format writes (``samkit.vocab.labels``), and are sorted by label score.

Masks are sorted by predicted score, best first, in everything the command writes and prints:
``{stem}_000.png`` is the best mask, and the COCO, polygons, YOLO, LabelMe and JSON outputs
list the masks in the same order. The files of a run are published as one set
(``samkit.io.outputs``): a failed run leaves the previous files in ``--out`` as they were, and a
successful one removes the files of the previous run of the same image that it did not write
again. Heavy modules (torch, the model) are imported inside the command, not at import time.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import InputError
from .common import (Backend, Format, backend_option, build_clip, check_clip_name, check_out_dir,
                     check_image_size, clip_checkpoint_option, clip_option, compile_option, emit_json,
                     format_option, image_size_option, info, int8_option, quantize_value,
                     is_export_path, parse_box, parse_exemplar, parse_formats, parse_point, resolve_model, typer)

EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "  samkit segment photo.jpg --box 75,275,1725,850 --out out/\n\n"
    "  samkit segment photo.jpg --point 500,375 --point 1125,625,0 --format overlay,coco\n\n"
    "  samkit segment photo.jpg --point 500,375 --model sam_vit_b --checkpoint sam_vit_b_01ec64.pth --single\n\n"
    "  samkit segment photo.jpg --box 75,275,1725,850 --format json > result.json\n\n"
    "  samkit segment photo.jpg --text dog --text \"red car\" --clip clip_vit_b16 --format coco,yolo\n\n"
    "  samkit segment photo.jpg --model sam3 --exemplar 75,275,300,500 --exemplar 900,300,1100,480,0\n\n"
    "Masks are sorted by score, best first, in every output: {stem}_000.png is the best mask. "
    "A rerun into the same --out replaces the previous files of that image as a set; a failed run "
    "changes nothing there.\n\n"
    "Points are X,Y[,LABEL] in pixels of the image (LABEL 1 = object, the default; 0 = background); "
    "the box is X0,Y0,X1,Y1 (top-left, bottom-right). Without --model, the first neural model whose "
    "weights are in the cache is used, else the offline [italic]classic[/italic] GrabCut fallback."
)

OUTPUT_FILES = {
    Format.png: "{stem}_000.png ... (one 0/255 PNG per mask, best first) and {stem}_index.png (palette, "
                "k+1 = mask k)",
    Format.overlay: "{stem}_overlay.png (the image with the masks blended in)",
    Format.coco: "{stem}_coco.json (COCO dataset: images, annotations with RLE segmentation and score)",
    Format.polygons: "{stem}_polygons.json (per mask: score and rings of x, y pixel coordinates)",
    Format.yolo: "{stem}.txt (YOLO segmentation: class x y x y ... normalised to [0, 1]); with labels also "
                 "classes.txt (the class names, line i = class i)",
    Format.labelme: "{stem}.json (LabelMe polygons, imagePath relative to the output folder)",
    Format.json: "stdout (JSON summary: model, prompts, per mask score, area, box, RLE, written files)",
}


def write_outputs(masks, image, image_path: Path, out_dir: Path, stem: str, formats: List[Format],
                  vocab=None) -> Dict[str, List[str]]:
    """Write ``masks`` (samkit.masks.Masks, in the order given) in every file format of
    ``formats`` into ``out_dir``, published as one set (``samkit.io.outputs.OutputSet``, key
    ``segment-{stem}``): nothing changes in ``out_dir`` unless every format was written.
    ``vocab`` (a ``samkit.vocab.Vocabulary``): the names of labelled masks (COCO categories,
    YOLO class indices and ``classes.txt``; see ``samkit.vocab.labels``).

    Returns {format: [paths written]}; ``json`` writes no file (it goes to stdout)."""
    from ..io.outputs import OutputSet

    file_formats = [f for f in formats if f is not Format.json]
    if not file_formats:
        return {}
    vocab = vocab if masks.labels is not None else None
    written: Dict[str, List[str]] = {}
    with OutputSet(out_dir, f"segment-{stem}") as outs:
        for fmt in file_formats:
            written[fmt.value] = [str(outs.final(p)) for p in _write_format(fmt, masks, image, image_path, outs,
                                                                             stem, vocab)]
    if vocab is not None and Format.yolo in file_formats:
        from ..vocab.labels import write_class_names

        written[Format.yolo.value].append(str(write_class_names(out_dir, vocab)))
    return written


def _write_format(fmt: Format, masks, image, image_path: Path, outs, stem: str, vocab=None) -> List[Path]:
    """Write one format into the staging folder of ``outs``; return the staged paths."""
    from PIL import Image

    from ..io.atomic import atomic_write_bytes, atomic_write_text

    if fmt is Format.png:
        return masks.save_png(outs.staging, stem)
    if fmt is Format.overlay:
        import io

        buf = io.BytesIO()
        Image.fromarray(masks.overlay(image)).save(buf, format="PNG")
        return [atomic_write_bytes(outs.path(f"{stem}_overlay.png"), buf.getvalue())]
    if fmt is Format.coco:
        doc = coco_document(masks, image_path, vocab)
        return [atomic_write_text(outs.path(f"{stem}_coco.json"), json.dumps(doc))]
    if fmt is Format.polygons:
        polys = [{"index": k, "score": float(masks.scores[k]), "polygons": [r.tolist() for r in rings]}
                 for k, rings in enumerate(masks.to_polygons())]
        for k, item in enumerate(polys if masks.labels is not None else []):
            item["label"] = masks.labels[k]
            if masks.label_scores is not None:
                item["label_score"] = float(masks.label_scores[k])
        doc = {"image": str(image_path), "height": masks.height, "width": masks.width, "masks": polys}
        return [atomic_write_text(outs.path(f"{stem}_polygons.json"), json.dumps(doc))]
    if fmt is Format.yolo:
        path = outs.path(f"{stem}.txt")
        masks.to_yolo(path, names=None if vocab is None else vocab.names)
        return [path]
    if fmt is Format.labelme:
        path = outs.path(f"{stem}.json")
        # imagePath is relative to where the file ends up, not to the staging folder
        rel = os.path.relpath(Path(image_path).resolve(), outs.out.resolve())
        masks.to_labelme(rel, image_size=(masks.height, masks.width), path=path)
        return [path]
    raise AssertionError(fmt)  # pragma: no cover - Format is a closed enum


def coco_document(masks, image_path: Path, vocab=None) -> dict:
    """A minimal COCO instances document for one image: one annotation per mask, with
    compressed (or, without pycocotools, uncompressed) RLE, bbox x, y, w, h, area and score;
    labelled masks get their vocabulary's categories and ``category_id`` and a ``label_score``."""
    from ..vocab.labels import coco_categories

    summary = masks.to_json()
    categories, cat_ids = coco_categories(masks, vocab)
    annotations = []
    for k, item in enumerate(summary["masks"]):
        x1, y1, x2, y2 = item["box"]
        ann = {"id": k + 1, "image_id": 1, "category_id": cat_ids[k], "segmentation": item["rle"],
               "area": item["area"], "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0, "score": item["score"]}
        if "label_score" in item:
            ann["label_score"] = item["label_score"]
        annotations.append(ann)
    return {"images": [{"id": 1, "file_name": Path(image_path).name, "height": masks.height, "width": masks.width}],
            "annotations": annotations, "categories": categories}


def segment(
    image: Path = typer.Argument(..., metavar="IMAGE", help="Image file (JPEG, PNG, WebP, TIFF, ...).",
                                 show_default=False),
    point: Optional[List[str]] = typer.Option(None, "--point", "-p", metavar="X,Y[,LABEL]",
                                              help="Prompt point; repeat for more. LABEL 1 = object (default), 0 = background."),
    box: Optional[str] = typer.Option(None, "--box", "-b", metavar="X0,Y0,X1,Y1", help="Prompt box in pixels."),
    text: Optional[List[str]] = typer.Option(None, "--text", "-t", metavar="TEXT",
                                             help="Find every instance of TEXT (repeatable; not with --point/--box). "
                                                  "Masks get labels; needs a CLIP (--clip) unless the model "
                                                  "reads text itself (--model sam3)."),
    exemplar: Optional[List[str]] = typer.Option(None, "--exemplar", "-e", metavar="X0,Y0,X1,Y1[,LABEL]",
                                                 help="Find every instance like this example box (repeatable; "
                                                      "LABEL 1 = like it, the default, 0 = not like it); models "
                                                      "with concept prompts (sam3). With one --text, both count."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (`samkit models ls`), or a folder "
                                        "written by `samkit export` (runs in onnxruntime, without torch). "
                                        "Default: first neural model with cached weights, else classic."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Weights file (default: the cache)."),
    clip: str = clip_option(),
    clip_checkpoint: Optional[Path] = clip_checkpoint_option(),
    text_threshold: float = typer.Option(0.5, "--text-threshold", help="Heat-map probability above which a text counts "
                                         "as found (samkit.vocab.text_prompts)."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output folder (created). A rerun replaces the "
                             "previous files of the same image there as a set."),
    fmt: Optional[List[str]] = format_option(Format, [Format.png]),
    multimask: bool = typer.Option(True, "--multimask/--single", help="Keep all candidate masks or only the best. "
                                   "Masks are sorted by score, best first, in every output ({stem}_000.png is the best)."),
    device: str = typer.Option("cpu", "--device", help="torch device: cpu, cuda, cuda:0, mps."),
    offline: bool = typer.Option(False, "--offline", help="Never download; fail with the path to copy weights to."),
    backend: Backend = backend_option(),
    compile_: bool = compile_option(),
    image_size: Optional[int] = image_size_option(),
    int8: bool = int8_option(),
) -> None:
    """Segment one image from point and/or box prompts (or find --text) and write masks in the chosen formats."""
    from ..vocab import Vocabulary, check_texts

    formats = parse_formats(fmt, command="samkit segment")
    parsed = [parse_point(p) for p in point or []]
    bx = parse_box(box) if box else None
    texts = check_texts(text, "--text") if text else None
    exemplars = [parse_exemplar(e) for e in exemplar or []]
    if (texts or exemplars) and (parsed or bx is not None):
        what = "--text" if texts else "--exemplar"
        raise InputError(f"{what} cannot be combined with --point or --box: it finds every instance itself. "
                         f"Fix: run once with {what}, or once with --point/--box.")
    if exemplars and texts and len(texts) > 1:
        raise InputError(f"--exemplar takes at most one --text (the concept the boxes show), got {len(texts)}. Fix: "
                         "pass one --text with the exemplars, or run once per text.")
    if not parsed and bx is None and not texts and not exemplars:
        raise InputError("no prompt given. Fix: add --point X,Y (repeatable) and/or --box X0,Y0,X1,Y1, or --text "
                         "(or --exemplar with --model sam3).")
    vocab = Vocabulary(tuple(texts), tuple(range(1, len(texts) + 1)), "--text") if texts else None
    if exemplars:  # the model labels what it finds with the text, else "exemplar"
        vocab = Vocabulary((texts[0] if texts else "exemplar",), (1,), "--exemplar")
    if any(f is not Format.json for f in formats):
        check_out_dir(out)
        if Format.yolo in formats:
            from ..vocab.labels import check_class_names

            check_class_names(out, vocab)
    export = Path(model).expanduser() if is_export_path(model) else None
    if export is not None and (texts or exemplars):
        raise InputError(f"--model {model} is an export folder, which holds no text or exemplar path (they run in "
                         "torch). Fix: pass a model name with --text/--exemplar, or prompt the folder with "
                         "--point/--box.")
    check_image_size(model, image_size)
    if export is None:
        model = resolve_model(model, checkpoint)
    if texts and not exemplars:
        check_clip_name(clip)

    from ..io.image import load_image

    img = load_image(image)
    t0 = time.perf_counter()
    prompts = {"points": [[x, y] for x, y, _ in parsed] or None, "labels": [lab for _, _, lab in parsed] or None,
               "box": list(bx) if bx else None}
    if texts:
        prompts = {"text": texts}
    if exemplars:
        prompts = {"exemplars": [list(e[:4]) for e in exemplars], "exemplar_labels": [e[4] for e in exemplars],
                   "text": texts[0] if texts else None}
    if export is not None:
        predictor = _export_predictor(export, checkpoint, backend, compile_ or int8, device).set_image(img)
        masks, model_names, used_clip = predictor.predict(
            points=prompts["points"], labels=prompts["labels"], box=prompts["box"], mask_input=None,
            multimask=multimask).sorted("score"), None, False
    else:
        masks, model_names, used_clip = _predict(img, model, checkpoint, device, offline, backend, compile_, prompts,
                                                 multimask, (clip, clip_checkpoint, text_threshold), image_size,
                                                 quantize_value(int8))
    elapsed = time.perf_counter() - t0
    if vocab is None and masks.labels is not None and model_names:
        # a model that names its masks (Open-Vocabulary SAM): its own vocabulary, class ids 1..K
        vocab = Vocabulary(tuple(model_names), tuple(range(1, len(model_names) + 1)), model)
        if Format.yolo in formats:
            from ..vocab.labels import check_class_names

            check_class_names(out, vocab)
    written = write_outputs(masks, img, image, out, image.stem, formats, vocab)
    if Format.json in formats:
        doc = {"image": str(image), "model": model, "height": int(img.shape[0]), "width": int(img.shape[1]),
               "prompts": prompts, "multimask": multimask, "seconds": round(elapsed, 3), "files": written}
        if texts:
            doc["clip"] = clip if used_clip else None  # None: the model read the text itself (SAM 3)
        doc.update(masks.to_json())
        emit_json(doc)
    scores = ", ".join(f"{s:.3f}" for s in (masks.label_scores if texts else masks.scores))
    info(f"{len(masks)} mask(s), {'label scores' if texts else 'scores'} {scores} (best first), {elapsed:.2f} s")
    for fmt_name, paths in written.items():
        shown = paths if len(paths) <= 2 else [paths[0], "...", paths[-1]]
        info(f"  {fmt_name:<9} {' '.join(shown)}")


def _export_predictor(folder: Path, checkpoint, backend, compile_: bool, device: str):
    """``OnnxImagePredictor`` of an export folder (no torch import); torch-only options (``compile_``:
    --compile or --int8) refused."""
    if checkpoint is not None or compile_ or backend is not Backend.torch or device != "cpu":
        raise InputError(f"--model {folder} is an export folder: its weights are the ONNX graphs and onnxruntime runs "
                         "them, so --checkpoint, --backend, --compile, --int8 and --device do not apply. Fix: drop "
                         "those options (or pass a model name to run it in torch).")
    from ..runtime import OnnxImagePredictor

    predictor = OnnxImagePredictor(folder)
    info(f"model: {predictor.model_name} (ONNX export {folder}, onnxruntime, {predictor.precision})")
    return predictor


def _predict(img, model: str, checkpoint, device: str, offline: bool, backend, compile_: bool, prompts: dict,
             multimask: bool, clip_args: tuple, image_size: Optional[int] = None, quantize: Optional[str] = None):
    """Load the model (and, for text, the CLIP unless the model reads text itself) and predict;
    masks sorted best first: by score, or by label score for text. Returns (masks, the model's
    own class names when it names its masks, else None, whether a CLIP was used)."""
    from ..masks import Masks
    from ..predict.image import ImagePredictor
    from ..registry import load_model

    net = load_model(model, checkpoint=checkpoint, device=device, download=not offline,
                     backend=backend.value, compile=compile_, image_size=image_size, quantize=quantize)
    if "exemplars" in prompts:
        found = ImagePredictor(net).set_image(img).predict(text=prompts["text"], exemplars=prompts["exemplars"],
                                                           exemplar_labels=prompts["exemplar_labels"])
        info(f"  {found.labels[0] if len(found) else 'exemplar'!r}: {len(found)} instance(s)")
        return found.sorted("label_score"), None, False
    if "text" not in prompts:
        predictor = ImagePredictor(net).set_image(img)
        masks = predictor.predict(points=prompts["points"], labels=prompts["labels"], box=prompts["box"],
                                  mask_input=None, multimask=multimask)
        return masks.sorted("score"), getattr(net, "label_names", None), False  # best first, everywhere below
    clip_name, clip_checkpoint, threshold = clip_args
    dense = None if callable(getattr(net, "predict_text", None)) else build_clip(clip_name, clip_checkpoint, device,
                                                                                 offline)
    predictor = ImagePredictor(net, clip=dense).set_image(img)
    found = predictor.predict_batch(texts=prompts["text"], multimask=multimask, threshold=threshold)
    for t, m in zip(prompts["text"], found):
        info(f"  {t!r}: {len(m)} instance(s)")
    return Masks.concatenate(found).sorted("label_score"), None, dense is not None


COMMAND = segment
