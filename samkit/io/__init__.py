"""Input/output: image loading (EXIF, modes, decompression bombs) and atomic file writes."""
from .atomic import atomic_write_bytes, atomic_write_text
from .image import (
    DEFAULT_MAX_PIXELS,
    ENV_MAX_PIXELS,
    example_image_path,
    image_size,
    load_image,
    resolve_max_pixels,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENV_MAX_PIXELS",
    "atomic_write_bytes",
    "atomic_write_text",
    "example_image_path",
    "image_size",
    "load_image",
    "resolve_max_pixels",
]
