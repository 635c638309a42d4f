"""Exception types. Every message names the problem and the fix."""
from __future__ import annotations


class SamkitError(Exception):
    """Base class of every error samkit raises on purpose."""


class InputError(SamkitError, ValueError):
    """Bad user input: prompts, arrays, arguments."""


class ImageError(InputError):
    """An image that cannot be read or is unsafe to decode."""


class VideoError(InputError):
    """A video or frame source that cannot be read, or ends early."""


class CheckpointError(SamkitError, ValueError):
    """A checkpoint file that is unreadable, unsafe, truncated or of another model."""


class DownloadError(SamkitError, OSError):
    """Weights could not be fetched or verified."""


class AccelerationError(SamkitError, RuntimeError):
    """An accelerator (ONNX export, onnxruntime, torch.compile) could not be set up."""


class MissingExtraError(SamkitError, ImportError):
    """An optional dependency is not installed."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise an error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the optional package {module!r}, which is not installed. "
            f"Fix: pip install 'samkit[{extra}]'"
        ) from exc
