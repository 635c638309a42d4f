"""samkit: the efficient Segment Anything family behind one API.

```python
from samkit import load_model, ImagePredictor
predictor = ImagePredictor(load_model("sam_vit_b", checkpoint="sam_vit_b_01ec64.pth"))
```
Heavy modules are imported on first use, so ``import samkit`` stays light and needs no extras.
"""
from __future__ import annotations

from ._lazy import lazy_getattr
from .errors import (AccelerationError, CheckpointError, DownloadError, ImageError, InputError, MissingExtraError,
                     SamkitError, VideoError)
from .specs import MODELS, ModelSpec, get_spec, list_models

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("samkit.registry", "load_model"),
    "ImagePredictor": ("samkit.predict.image", "ImagePredictor"),
    "Masks": ("samkit.masks", "Masks"),
    "load_image": ("samkit.io.image", "load_image"),
    "VideoTracker": ("samkit.video", "VideoTracker"),
    "TrackingSession": ("samkit.video", "TrackingSession"),
    "AutoMaskGenerator": ("samkit.auto", "AutoMaskGenerator"),
    "accelerate": ("samkit.accel", "accelerate"),
    "configure_threads": ("samkit.threads", "configure_threads"),
    "label_dataset": ("samkit.label", "label_dataset"),
}

__all__ = ["MODELS", "ModelSpec", "get_spec", "list_models", "SamkitError", "InputError", "ImageError",
           "VideoError", "CheckpointError", "DownloadError", "MissingExtraError",
           "AccelerationError", *_LAZY]


__getattr__ = lazy_getattr("samkit", globals(), _LAZY)
