"""Shared pieces of the ``samkit`` command line: prompt parsers, the ``--format`` option and its
parser (one for every command), the ``--out`` check that every command runs before any work,
the default model, JSON output, and the mapping from samkit errors to one-line messages and exit
codes. Commands write their files through ``samkit.io.outputs.OutputSet`` (published as a set).

Nothing here imports torch: ``samkit --help`` and argument errors stay fast.
"""
from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from ..errors import (CheckpointError, DownloadError, InputError, MissingExtraError, SamkitError, require)
from ..io.outputs import check_out_dir  # noqa: F401 (the one --out check; re-exported for the commands)

typer = require("typer", "cli", "The samkit command line")

# exit codes (documented in `samkit --help`)
EXIT_ERROR = 1  # any other samkit error
EXIT_INPUT = 2  # bad arguments, prompts, images, unknown model (click also uses 2 for usage errors)
EXIT_CHECKPOINT = 3
EXIT_DOWNLOAD = 4
EXIT_MISSING_EXTRA = 5


class Command(typer.core.TyperCommand):
    """The class of every plain samkit command: its usage line names the arguments plainly,
    ``Usage: samkit track [OPTIONS] VIDEO`` (recent typer versions write ``{VIDEO}``)."""

    def collect_usage_pieces(self, ctx) -> List[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") and "|" not in p else p for p in pieces]


class Format(str, enum.Enum):
    """Output formats of ``samkit segment`` (see ``write_outputs``)."""

    png = "png"
    overlay = "overlay"
    coco = "coco"
    polygons = "polygons"
    yolo = "yolo"
    labelme = "labelme"
    json = "json"


class Output(str, enum.Enum):
    """``--format`` of listing commands: a human table or machine-readable JSON on stdout."""

    table = "table"
    json = "json"


class Backend(str, enum.Enum):
    """``--backend``: the image-encoder runtime (see ``samkit.accel``)."""

    torch = "torch"
    onnxruntime = "onnxruntime"


def backend_option():
    """``--backend {torch,onnxruntime}`` (shared by `segment` and `everything`)."""
    # "\\[" keeps rich markup from eating "[onnx]"
    return typer.Option(Backend.torch, "--backend", help="Image-encoder runtime: torch, or onnxruntime (CPU; the "
                        "encoder is exported to ONNX and cached on first use; needs samkit\\[onnx]).")


def image_size_option():
    """``--image-size`` (shared by `segment` and `track`)."""
    return typer.Option(None, "--image-size", min=1, metavar="PX", help="Run the model at a lower input size "
                        "(sam3 and sam3_litetext_*: a multiple of 14 from 336 to 1008; default the released 1008). "
                        "Faster; judge the quality on your own images.")


def check_image_size(model: Optional[str], image_size: Optional[int]) -> None:
    """Refuse ``--image-size`` for a model without other input sizes, before any work."""
    if image_size is None:
        return
    if model is None or is_export_path(model):
        raise InputError("--image-size needs a model that runs at other input sizes, named with --model (sam3 and "
                         "sam3_litetext_*). Fix: add --model sam3, or drop --image-size.")
    from ..registry import _check_image_size
    from ..specs import get_spec

    _check_image_size(get_spec(model), image_size)


def compile_option():
    """``--compile`` (shared by `segment` and `everything`)."""
    return typer.Option(False, "--compile", help="torch.compile the image encoder (the first image compiles, "
                        "which is slow; needs a C++ compiler on CPU).")


def int8_option():
    """``--int8`` (shared by `segment` and `everything`): samkit.quant's dynamic int8, opt-in."""
    return typer.Option(False, "--int8", help="Dynamic int8 for the image encoder's linear layers (torch, CPU; "
                        "not with --backend onnxruntime or --compile). Often faster; judge the masks on your "
                        "own images (float32 is the default).")


def quantize_value(int8: bool) -> Optional[str]:
    """``load_model``'s ``quantize`` for the ``--int8`` flag."""
    return "int8" if int8 else None


def format_help(choices: type = Format, default: Sequence[enum.Enum] = (Format.png,)) -> str:
    """The help of every ``--format`` option: the same wording in every command."""
    return (f"Output format, repeatable or comma-separated: {', '.join(c.value for c in choices)}. "
            f"Default: {','.join(d.value for d in default)}.")


def format_option(choices: type = Format, default: Sequence[enum.Enum] = (Format.png,)):
    """``--format/-f FORMAT``, repeatable and comma-separated; read it with ``parse_formats``."""
    return typer.Option(None, "--format", "-f", metavar="FORMAT", show_default=False,
                        help=format_help(choices, default))


FORMAT_HELP = format_help()


# ----------------------------------------------------------------------------- parsers
def _numbers(text: str, what: str, example: str) -> List[float]:
    parts = [p.strip() for p in str(text).replace(" ", "").split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"cannot read {what} {text!r}: expected numbers separated by commas. "
                         f"Fix: write it like {example}.") from None
    if not all(v == v and abs(v) != float("inf") for v in values):
        raise InputError(f"{what} {text!r} holds NaN or infinity. Fix: write it like {example}.")
    return values


def parse_point(text: str) -> Tuple[float, float, int]:
    """``"X,Y"`` or ``"X,Y,LABEL"`` (LABEL 1 = object, 0 = background; default 1) -> (x, y, label)."""
    values = _numbers(text, "point", "--point 500,375 or --point 500,375,0 for background")
    if len(values) not in (2, 3):
        raise InputError(f"point {text!r} has {len(values)} numbers, expected X,Y or X,Y,LABEL. "
                         "Fix: write it like --point 500,375 (or 500,375,0 for a background point).")
    label = 1 if len(values) == 2 else values[2]
    if label not in (0, 1):
        raise InputError(f"point {text!r} has label {label:g}; labels are 1 (object) or 0 (background). "
                         "Fix: write it like --point 500,375,1 or --point 500,375,0.")
    return values[0], values[1], int(label)


def parse_box(text: str) -> Tuple[float, float, float, float]:
    """``"X0,Y0,X1,Y1"`` (top-left, bottom-right, pixels) -> tuple; checks the order."""
    values = _numbers(text, "box", "--box 75,275,1725,850")
    if len(values) != 4:
        raise InputError(f"box {text!r} has {len(values)} numbers, expected X0,Y0,X1,Y1. "
                         "Fix: write it like --box 75,275,1725,850 (top-left x,y then bottom-right x,y).")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {text!r} is inverted or empty (need X1 > X0 and Y1 > Y0). "
                         "Fix: give the top-left corner first, then the bottom-right corner.")
    return x0, y0, x1, y1


def parse_exemplar(text: str) -> Tuple[float, float, float, float, int]:
    """``"X0,Y0,X1,Y1[,LABEL]"`` -> (x0, y0, x1, y1, label); LABEL 1 (find more like this box,
    the default) or 0 (not like this)."""
    values = _numbers(text, "exemplar", "--exemplar 75,275,1725,850")
    if len(values) not in (4, 5):
        raise InputError(f"exemplar {text!r} has {len(values)} numbers, expected X0,Y0,X1,Y1[,LABEL]. Fix: write it "
                         "like --exemplar 75,275,1725,850 (a box around one example) or --exemplar 75,275,1725,850,0 "
                         "(an example of what NOT to find).")
    label = 1 if len(values) == 4 else values[4]
    if label not in (0, 1):
        raise InputError(f"exemplar {text!r} has label {label:g}; labels are 1 (find more like this box) or 0 (not "
                         "like this). Fix: end it with ,1 or ,0 (or leave the label out for 1).")
    x0, y0, x1, y1 = values[:4]
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"exemplar {text!r} is an inverted or empty box (need X1 > X0 and Y1 > Y0). Fix: give the "
                         "top-left corner first, then the bottom-right corner.")
    return x0, y0, x1, y1, int(label)


def parse_formats(values: Optional[Iterable[str]], default: Sequence[enum.Enum] = (Format.png,),
                  choices: type = Format, command: str = "") -> list:
    """Repeated and/or comma-separated format names -> unique members of ``choices`` (order kept)."""
    out: list = []
    where = f" for `{command}`" if command else ""
    for v in values or []:
        for name in str(v).split(","):
            name = name.strip().lower()
            if not name:
                continue
            try:
                f = choices(name)
            except ValueError:
                raise InputError(f"unknown output format {name!r}{where}. "
                                 f"Fix: use one of {', '.join(x.value for x in choices)}.") from None
            if f not in out:
                out.append(f)
    return out or list(default)


def is_export_path(model: Optional[str]) -> bool:
    """Whether ``--model`` names a folder written by ``samkit export`` (rather than a model name):
    a folder with a ``samkit-export.json``, or any existing folder whose name is not a model name
    (it is then checked, and refused, as an export folder)."""
    if model is None or not Path(model).expanduser().is_dir():
        return False
    from ..runtime.manifest import is_export_folder

    if is_export_folder(model):
        return True
    from ..specs import get_spec

    try:
        get_spec(model)
    except KeyError:
        return True
    return False


def resolve_model(model: Optional[str], checkpoint) -> str:
    """The model to use: the given name, or the default one (announced on stderr); a checkpoint
    without a model name is refused, since the file alone does not say which builder to use."""
    if model is not None:
        from ..specs import get_spec

        check_segmenter(get_spec(model))  # unknown names fail here, before torch is imported
        info(f"model: {model}")
        return model
    if checkpoint is not None:
        raise InputError("--checkpoint was given without --model. Fix: add --model NAME "
                         "(the model the file belongs to; see `samkit models ls`).")
    model, why = default_model()
    info(f"model: {model} (default: {why})")
    return model


# ----------------------------------------------------------------------------- CLIP (open vocabulary)
def clip_option():
    """``--clip NAME``: the CLIP that finds (``--text``) and names (``--vocabulary``) masks."""
    return typer.Option("clip_vit_b16", "--clip", help="CLIP for text prompts and vocabularies (`samkit models "
                        "ls`): clip_vit_b16 or clip_rn50x16, with MaskCLIP dense features.")


def clip_checkpoint_option():
    """``--clip-checkpoint PATH``: the CLIP's weights file (OpenAI's .pt or an open_clip file)."""
    return typer.Option(None, "--clip-checkpoint", help="CLIP weights file (OpenAI's ViT-B-16.pt / RN50x16.pt or "
                        "an open_clip checkpoint; default: the cache).")


def check_clip_name(name: str) -> str:
    """Refuse a registered model that is not a CLIP (unknown names are left to the loader)."""
    from ..specs import MODELS

    spec = MODELS.get(name)
    if spec is not None and getattr(spec, "kind", "segmenter") != "clip":
        clips = [n for n, s in MODELS.items() if getattr(s, "kind", "") == "clip"] or ["clip_vit_b16"]
        raise InputError(f"--clip {name} is not a CLIP model but a {getattr(spec, 'kind', 'segmenter')}. "
                         f"Fix: use --clip {' or --clip '.join(clips)}.")
    return name


def build_clip(name: str, checkpoint, device: str, offline: bool):
    """The DenseClip of ``--clip`` / ``--clip-checkpoint`` (``samkit.vocab.load_clip``)."""
    from .. import vocab

    info(f"clip: {name}")
    return vocab.load_clip(name, checkpoint=checkpoint, device=device, download=not offline)


# ----------------------------------------------------------------------------- models
def check_segmenter(spec) -> None:
    """Refuse a model that draws no masks (a CLIP: ``spec.kind == "clip"``) where a segmenter is needed."""
    kind = getattr(spec, "kind", "segmenter")
    if kind != "segmenter":
        raise InputError(f"{spec.name!r} is a {kind} model: it names masks and finds them from text, it does not "
                         "draw them. Fix: pass a segmenter with --model (e.g. sam_vit_b, mobile_sam; "
                         "`samkit models ls` lists the kinds).")


def default_model() -> Tuple[str, str]:
    """(name, reason): the first neural segmenter (in ``samkit.specs.MODELS`` order) whose weights
    are in the cache, else ``classic``. CLIP models (``kind == "clip"``) are never the default."""
    from .. import hub
    from ..specs import MODELS

    for name, spec in MODELS.items():
        if spec.kind == "segmenter" and spec.neural and hub.cached_path(spec) is not None:
            return name, f"its weights are in the cache ({hub.cached_path(spec)})"
    return "classic", (f"no neural weights in the cache {hub.cache_dir()}; classic is the offline GrabCut "
                       "fallback, far below any neural model (run `samkit models download NAME`)")


# ----------------------------------------------------------------------------- output
def emit_json(obj) -> None:
    """Machine-readable output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def info(message: str) -> None:
    """Human-readable progress/status: stderr, so that stdout stays clean for JSON."""
    typer.echo(message, err=True)


def error_exit_code(exc: BaseException) -> Optional[int]:
    """Exit code for an error we report without a traceback, or None for a real bug."""
    if isinstance(exc, MissingExtraError):
        return EXIT_MISSING_EXTRA
    if isinstance(exc, DownloadError):
        return EXIT_DOWNLOAD
    if isinstance(exc, CheckpointError):
        return EXIT_CHECKPOINT
    if isinstance(exc, (InputError, KeyError)):
        return EXIT_INPUT
    if isinstance(exc, SamkitError):
        return EXIT_ERROR
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError)):
        return EXIT_INPUT
    return None


def error_message(exc: BaseException) -> str:
    """One line: the problem and the fix (samkit messages carry both)."""
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    elif isinstance(exc, OSError) and getattr(exc, "filename", None):
        text = (f"{exc.strerror or exc}: {exc.filename}. "
                "Fix: check the path (it is relative to the current directory).")
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    if "fix:" not in text.lower():
        if isinstance(exc, KeyError):
            text += " Fix: use a name listed by `samkit models ls`."
        else:
            text += " Fix: see `samkit --help`."
    return text


def report_error(exc: BaseException) -> int:
    """Print ``error: <problem>. Fix: ...`` to stderr and return the exit code."""
    code = error_exit_code(exc)
    typer.echo(f"error: {error_message(exc)}", err=True)
    return EXIT_ERROR if code is None else code
