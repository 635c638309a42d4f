"""The ``samkit`` command line: ``samkit <noun> <verb>``.

Commands are registered from ``SUBCOMMANDS`` (module path, name), in that order. A module
that defines ``COMMAND`` (a function; optional ``EPILOG`` and ``COMMAND_CLS``) becomes a plain
command (``samkit segment IMAGE``, ``samkit everything IMAGE``, ``samkit track VIDEO``); any
other module defines a ``typer.Typer`` named ``app``, registered as a command group (``samkit
models ls``, ``samkit eval vos``). Only the ImportError of that exact module (it does not exist
yet) is tolerated; any other import error propagates.

Errors that samkit raises on purpose (``samkit.errors`` types, ``KeyError`` for an unknown
model) print ``error: <problem>. Fix: ...`` on one line and exit non-zero, without a traceback.
"""
from __future__ import annotations

import importlib
import sys
from typing import List, Optional, Sequence

from .common import (EXIT_CHECKPOINT, EXIT_DOWNLOAD, EXIT_ERROR, EXIT_INPUT, EXIT_MISSING_EXTRA, Command,
                     error_exit_code, report_error, typer)

# (module path, group name): registered in this order when the module can be imported
SUBCOMMANDS = [
    ("samkit.cli.segment_cmd", "segment"),
    ("samkit.cli.models_cmd", "models"),
    ("samkit.cli.everything_cmd", "everything"),
    ("samkit.cli.track_cmd", "track"),
    ("samkit.cli.eval_cmd", "eval"),
    ("samkit.cli.export_cmd", "export"),
    ("samkit.cli.serve_cmd", "serve"),
    ("samkit.cli.label_cmd", "label"),
    ("samkit.cli.train_cmd", "train"),
]

EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "  samkit segment photo.jpg --box 75,275,1725,850 --out out/ --format png,overlay,coco\n\n"
    "  samkit segment photo.jpg --point 500,375 --point 1125,625,0 --format json\n\n"
    "  samkit everything photo.jpg --model sam_vit_b --out out/\n\n"
    "  samkit track clip.mp4 --point 0,500,375,1 --out tracks/ --format png,coco\n\n"
    "  samkit export mobile_sam --format onnx --out mobile_sam-onnx/\n\n"
    "  samkit serve --data photos/   (browser annotator on http://127.0.0.1:8000/)\n\n"
    "  samkit label photos/ --out labels/ --model sam_vit_b --num-workers 2\n\n"
    "  samkit train distill --teacher sam_vit_h --student edge_sam --data sa1b/ --out runs/edge\n\n"
    "  samkit models ls\n\n"
    "  samkit models download sam_vit_b\n\n"
    f"Exit codes: 0 ok, {EXIT_ERROR} error, {EXIT_INPUT} bad input or unknown model, {EXIT_CHECKPOINT} bad checkpoint, "
    f"{EXIT_DOWNLOAD} download/verification failed, {EXIT_MISSING_EXTRA} optional package missing."
)


def optional_module(path: str):
    """Import ``path``; None when that very module does not exist. Errors raised while
    importing an existing module (including its own missing dependencies) propagate."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name == path:
            return None
        raise


def build_app(subcommands: Sequence = SUBCOMMANDS) -> "typer.Typer":
    """The root app: every importable command and command group of ``subcommands``."""
    root = typer.Typer(
        name="samkit", no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
        pretty_exceptions_enable=False, epilog=EPILOG,
        help="samkit: the Segment Anything family (SAM, MobileSAM, EdgeSAM, EfficientSAM, SAM 2, "
             "EfficientTAM, EdgeTAM, SAM 3) behind one CLI. Works offline: without weights it falls back "
             "to the classic GrabCut engine.",
    )
    for path, name in subcommands:
        module = optional_module(path)
        if module is None:
            continue
        command = getattr(module, "COMMAND", None)
        if command is not None:
            root.command(name, epilog=getattr(module, "EPILOG", None), cls=getattr(module, "COMMAND_CLS", Command),
                         no_args_is_help=getattr(module, "NO_ARGS_IS_HELP", True))(command)
            continue
        sub = getattr(module, "app", None)
        if sub is None:
            raise AttributeError(f"{path} defines neither COMMAND nor a typer app named 'app'; every command "
                                 "module must define one.")
        root.add_typer(sub, name=name)
    return root


app = build_app()


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``samkit`` script and ``python -m samkit``; returns the exit code."""
    try:
        # standalone mode: typer/click handle --help, usage errors, Exit and Abort and call sys.exit
        app(args=argv, prog_name="samkit")
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    except Exception as exc:  # noqa: BLE001 - every error is either reported or re-raised
        if error_exit_code(exc) is None:
            raise  # a bug: keep the traceback
        return report_error(exc)
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
