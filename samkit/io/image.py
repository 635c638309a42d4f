"""Image loading: every input becomes one H x W x 3 uint8 RGB array.

Sources: a path (``str`` / ``pathlib.Path``), encoded ``bytes`` (or a binary file object), a
``PIL.Image.Image``, or a numpy array (H x W x 3 uint8, H x W or H x W x 1 uint8 gray,
H x W x 4 uint8 RGBA).

Rules, in the order they are applied:

1. Safety: the pixel count is read from the file header and checked against ``max_pixels``
   BEFORE any pixel is decoded (decompression bombs). Default 178,956,970 px, the point where
   Pillow itself refuses (``2 * PIL.Image.MAX_IMAGE_PIXELS``); override with the argument or the
   ``SAMKIT_MAX_IMAGE_PIXELS`` environment variable.
2. Full decode (``Image.load()``), so truncated or corrupt files fail here with ``ImageError``
   instead of later. (If you set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` yourself, Pillow
   pads truncated files with gray and they load.)
3. EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): the array, and so every prompt
   coordinate, refers to the upright image a viewer shows.
4. Colour: multi-frame files give their first frame. Transparency (RGBA, LA, PA, P or L/RGB with
   a tRNS key) is composited onto white by default (``alpha="white"``; also ``"black"``, or
   ``"drop"`` to keep the stored colour under transparent pixels, as ``cv2.imread`` does).
   CMYK / YCbCr / LAB / HSV / P / 1 / L use Pillow's conversion to RGB (CMYK is converted
   naively, without an ICC profile). 16-bit modes (I;16, I;16B, ...) are scaled
   ``round(v / 257)``, so 65535 -> 255 (no clipping). Mode I (32-bit int): values in [0, 255] are
   kept, values in [0, 65535] are treated as 16 bit, anything else is stretched linearly from
   [min, max] to [0, 255]. Mode F (float): values in [0, 1] are multiplied by 255, values in
   [0, 255] kept, anything else stretched from [min, max]; NaN/inf become 0. Gray is replicated
   to three channels.
"""
from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError, InputError

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]

#: Pillow's own hard limit (it raises above ``2 * Image.MAX_IMAGE_PIXELS`` = 178,956,970 px).
DEFAULT_MAX_PIXELS = 2 * int(1024 * 1024 * 1024 // 4 // 3)
ENV_MAX_PIXELS = "SAMKIT_MAX_IMAGE_PIXELS"
_ALPHA_MODES = ("white", "black", "drop")
_PIL_LIMIT_LOCK = threading.Lock()
_EXIF_ORIENTATION = 0x0112


def example_image_path() -> Path:
    """Path of the bundled example photo (400 x 267 RGB PNG of a truck; see samkit/assets/README.md)."""
    path = Path(__file__).resolve().parent.parent / "assets" / "truck.png"
    if not path.is_file():
        raise ImageError(
            f"the bundled example image is missing at {path}. "
            "Fix: reinstall samkit (pip install --force-reinstall samkit) so package data is included."
        )
    return path


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit to use: the argument, else ``$SAMKIT_MAX_IMAGE_PIXELS``, else the default."""
    if max_pixels is None:
        raw = os.environ.get(ENV_MAX_PIXELS, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw.replace("_", ""))
        except ValueError:
            raise InputError(
                f"environment variable {ENV_MAX_PIXELS}={raw!r} is not an integer. "
                f"Fix: set it to a positive pixel count such as {DEFAULT_MAX_PIXELS}, or unset it."
            ) from None
        source = f"{ENV_MAX_PIXELS}={raw!r}"
    else:
        source = f"max_pixels={max_pixels!r}"
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise InputError(f"{source} must be a positive integer pixel count. Fix: pass e.g. {DEFAULT_MAX_PIXELS}.")
    return int(max_pixels)


def load_image(src: ImageSource, *, max_pixels: int | None = None, alpha: str = "white") -> np.ndarray:
    """Load ``src`` as an upright RGB image.

    Args:
        src: path, encoded bytes / binary file object, PIL image, or uint8 array
            (H x W x 3 RGB, H x W or H x W x 1 gray, H x W x 4 RGBA).
        max_pixels: largest width * height accepted from an encoded file (see module docstring).
        alpha: how transparency is removed: ``"white"`` (default), ``"black"`` or ``"drop"``.

    Returns:
        H x W x 3 uint8 C-contiguous array, always a new array the caller owns.

    Raises:
        ImageError: missing / unreadable / truncated / non-image / empty / too large input.
        InputError: wrong argument types or array dtypes.
    """
    if alpha not in _ALPHA_MODES:
        raise InputError(f"alpha={alpha!r} is not supported. Fix: use one of {', '.join(_ALPHA_MODES)}.")
    if isinstance(src, np.ndarray):
        return _from_array(src, alpha)
    if isinstance(src, Image.Image):
        try:
            src.load()
        except Exception as exc:
            raise ImageError(
                f"the PIL image could not be decoded ({exc}). Fix: re-save or re-export the image file."
            ) from exc
        return _pil_to_rgb(_upright(src, "the PIL image"), alpha)
    limit = resolve_max_pixels(max_pixels)
    with _open(src, limit) as (im, name):
        try:
            im.load()
        except Image.DecompressionBombError as exc:
            raise _bomb_error(name, None, limit, exc) from exc
        except ImageError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, EOFError, ValueError, ...
            raise ImageError(
                f"{name} is truncated or corrupt and could not be decoded ({type(exc).__name__}: {exc}). "
                "Fix: re-download or re-export the file; check it opens in an image viewer."
            ) from exc
        _check_size(im.size, name, limit)
        return _pil_to_rgb(_upright(im, name), alpha)


def image_size(src: ImageSource) -> Tuple[int, int]:
    """Upright ``(height, width)`` of ``src`` from the file header only (no pixel decoding).

    EXIF orientations 5-8 (90 degree turns) swap the stored width and height, as
    :func:`load_image` does. Arrays return their first two dimensions. The pixel limit is not
    applied: this is the cheap way to inspect a file before deciding to load it.
    """
    if isinstance(src, np.ndarray):
        if src.ndim not in (2, 3):
            raise InputError(f"expected an H x W or H x W x C image array, got shape {src.shape}. Fix: pass one image.")
        return int(src.shape[0]), int(src.shape[1])
    if isinstance(src, Image.Image):
        return _oriented_size(src)
    with _open(src, None) as (im, _):
        return _oriented_size(im)


# --------------------------------------------------------------------------- opening files


@contextlib.contextmanager
def _lifted_pil_limit(limit: int | None):
    """Let our limit, not Pillow's global one, decide: Pillow raises during ``open`` above
    ``2 * Image.MAX_IMAGE_PIXELS``. When ours is higher (or None: header read only) Pillow's is
    lifted for the duration of the call, under a lock because it is process-global."""
    pil = Image.MAX_IMAGE_PIXELS
    if pil is not None and (limit is None or limit > 2 * pil):
        with _PIL_LIMIT_LOCK:
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = old
    else:
        yield


@contextlib.contextmanager
def _open(src: Any, limit: int | None):
    """Open ``src`` lazily (header only), check its size, yield ``(image, display_name)``."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        name = f"the image bytes ({len(src)} bytes)"
        if len(src) == 0:
            raise ImageError("the image bytes are empty (0 bytes). Fix: pass the full contents of an image file.")
        fp: Any = io.BytesIO(bytes(src))
    elif isinstance(src, (str, os.PathLike)):
        path = Path(os.fspath(src)).expanduser()
        name = f"image file '{path}'"
        if not path.exists():
            raise ImageError(f"{name} does not exist. Fix: check the path and the current directory ({Path.cwd()}).")
        if path.is_dir():
            raise ImageError(f"{name} is a directory. Fix: pass the path of one image file inside it.")
        if path.stat().st_size == 0:
            raise ImageError(f"{name} is empty (0 bytes). Fix: re-download or re-export the image.")
        fp = path
    elif hasattr(src, "read"):
        name = f"the image stream {getattr(src, 'name', type(src).__name__)!r}"
        fp = src
    else:
        raise InputError(
            f"cannot load an image from a {type(src).__name__}. "
            "Fix: pass a file path, encoded bytes, a PIL.Image, or an H x W x 3 uint8 numpy array."
        )
    try:
        with _lifted_pil_limit(limit), warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS; our own limit below is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError as exc:  # Pillow's own limit hit first: report the size
        raise _bomb_error(name, _header_size(fp), limit, exc) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{name} is not an image Pillow can read (a text/HTML file with an image extension, a "
            "corrupt or zero-size header, or an unsupported format). Fix: check the file opens in an "
            "image viewer and convert it to PNG or JPEG."
        ) from exc
    except PermissionError as exc:
        raise ImageError(f"{name} cannot be read: permission denied. Fix: check the file permissions.") from exc
    except Exception as exc:
        raise ImageError(
            f"{name} could not be opened; it looks truncated or corrupt ({type(exc).__name__}: {exc}). "
            "Fix: re-download or re-export the file; check it opens in an image viewer."
        ) from exc
    try:
        if limit is not None:
            _check_size(im.size, name, limit)
        yield im, name
    finally:
        im.close()


def _header_size(fp: Any) -> Tuple[int, int] | None:
    """(width, height) from the header with Pillow's limit lifted; None if it cannot be re-read."""
    try:
        if hasattr(fp, "seek"):
            fp.seek(0)
        with _lifted_pil_limit(None), Image.open(fp) as im:
            return im.size
    except Exception:
        return None


def _check_size(size: Tuple[int, int], name: str, limit: int) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name} has zero size ({w} x {h} px). Fix: pass an image with at least one pixel.")
    if w * h > limit:
        raise _bomb_error(name, (w, h), limit, None)


def _bomb_error(name: str, size: Tuple[int, int] | None, limit: int | None, exc: Exception | None) -> ImageError:
    dims = f"is {size[0]} x {size[1]} = {size[0] * size[1]:,} px" if size else f"has too many pixels ({exc})"
    return ImageError(
        f"{name} {dims}, over the limit of {limit or DEFAULT_MAX_PIXELS:,} px (decompression-bomb "
        f"protection). Fix: if you trust the file, raise the limit with load_image(..., max_pixels=N) "
        f"or the environment variable {ENV_MAX_PIXELS}=N; otherwise downscale it first."
    )


# --------------------------------------------------------------------------- orientation


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:
        return 1


def _oriented_size(im: Image.Image) -> Tuple[int, int]:
    w, h = im.size
    return (w, h) if _orientation(im) in (5, 6, 7, 8) else (h, w)


def _upright(im: Image.Image, name: str) -> Image.Image:
    if _orientation(im) == 1:
        return im
    try:
        return ImageOps.exif_transpose(im)
    except Exception as exc:  # corrupt EXIF should not make the pixels unusable
        warnings.warn(f"{name}: EXIF orientation could not be applied ({exc}); using the stored orientation.")
        return im


# --------------------------------------------------------------------------- colour conversion


def _composite(rgb: np.ndarray, a: np.ndarray, alpha: str) -> np.ndarray:
    """Blend H x W x 3 uint8 ``rgb`` with H x W uint8 coverage ``a`` onto the chosen background."""
    if alpha == "drop":
        return rgb
    bg = 255 if alpha == "white" else 0
    a16 = a.astype(np.uint16)[..., None]
    out = (rgb.astype(np.uint16) * a16 + bg * (255 - a16) + 127) // 255
    return out.astype(np.uint8)


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2))


def _scale_to_uint8(v: np.ndarray, kind: str) -> np.ndarray:
    """Map a 2-D int or float array to uint8 following the module docstring's rules."""
    if kind == "16":
        return ((v.astype(np.uint32) + 128) // 257).astype(np.uint8)
    v = v.astype(np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(v.shape, np.uint8)
    lo, hi = float(v[finite].min()), float(v[finite].max())
    if kind == "float" and lo >= 0.0 and hi <= 1.0:
        out = v * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        out = v
    elif kind == "int" and lo >= 0.0 and hi <= 65535.0:
        out = v / 257.0
    elif hi > lo:
        out = (v - lo) * 255.0 / (hi - lo)
    else:
        out = np.zeros_like(v)
    out = np.where(finite, out, 0.0)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)  # round half up


def _pil_to_rgb(im: Image.Image, alpha: str) -> np.ndarray:
    """Convert a decoded PIL image of any mode to H x W x 3 uint8 (rules in the module docstring)."""
    if im.width <= 0 or im.height <= 0:
        raise ImageError(f"the image has zero size ({im.width} x {im.height} px). Fix: pass a non-empty image.")
    mode = im.mode
    has_key = "transparency" in im.info
    try:
        if mode == "RGB" and not has_key:
            out = np.asarray(im)
        elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or has_key:
            rgba = np.asarray(im.convert("RGBA"))
            out = _composite(rgba[..., :3], rgba[..., 3], alpha)
        elif mode.startswith("I;16"):
            out = _gray_to_rgb(_scale_to_uint8(np.asarray(im).astype(np.uint16), "16"))
        elif mode == "I":
            out = _gray_to_rgb(_scale_to_uint8(np.asarray(im), "int"))
        elif mode == "F":
            out = _gray_to_rgb(_scale_to_uint8(np.asarray(im), "float"))
        else:  # 1, L, P, CMYK, YCbCr, LAB, HSV, ...
            out = np.asarray(im.convert("RGB"))
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(
            f"images of PIL mode {mode!r} cannot be converted to RGB ({exc}). "
            "Fix: convert the file to an 8-bit RGB PNG or JPEG first."
        ) from exc
    return np.array(out, dtype=np.uint8, order="C", copy=True)


def _from_array(arr: np.ndarray, alpha: str) -> np.ndarray:
    """Validate and convert a uint8 array (H x W, H x W x 1, H x W x 3, H x W x 4) to H x W x 3."""
    expected = "an H x W x 3 uint8 RGB array (also H x W gray or H x W x 4 RGBA, uint8)"
    if arr.dtype != np.uint8:
        if arr.dtype.kind == "f":
            fix = "if it holds values in [0, 1] use (arr * 255).round().clip(0, 255).astype(np.uint8)"
        elif arr.dtype == np.uint16:
            fix = "for 16-bit data use (arr / 257).round().astype(np.uint8)"
        else:
            fix = "convert it with arr.astype(np.uint8) after scaling it to 0..255"
        raise InputError(f"image array has dtype {arr.dtype}, expected {expected}. Fix: {fix}.")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        out = _gray_to_rgb(arr)
    elif arr.ndim == 3 and arr.shape[2] == 3:
        out = arr
    elif arr.ndim == 3 and arr.shape[2] == 4:
        out = _composite(arr[..., :3], arr[..., 3], alpha)
    else:
        raise InputError(
            f"image array has shape {arr.shape}, expected {expected}. "
            "Fix: pass one image; channel-first (3 x H x W) arrays need arr.transpose(1, 2, 0)."
        )
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise ImageError(f"image array has zero size (shape {arr.shape}). Fix: pass an image with at least one pixel.")
    return np.array(out, dtype=np.uint8, order="C", copy=True)
