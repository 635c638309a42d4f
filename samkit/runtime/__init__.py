"""``samkit.runtime``: run an export folder (``samkit export MODEL --format onnx``) with numpy,
pillow and onnxruntime only; torch is never imported.

```python
from samkit.runtime import OnnxImagePredictor
predictor = OnnxImagePredictor("sam_vit_b-onnx/").set_image("photo.jpg")
masks = predictor.predict(points=[[500, 375]], labels=[1])     # samkit.masks.Masks

from samkit.runtime import OnnxVideoTracker                     # video models' export folders
tracker = OnnxVideoTracker("edgetam-onnx/")
session = tracker.start("clip.mp4")
tracker.add_prompt(session, frame=0, obj_id=1, points=[[500, 375]], labels=[1])
for frame, result in tracker.propagate(session):               # result.masks[1]: H x W bool
    ...
```
Install on a device without torch: ``pip install --no-deps samkit`` then ``pip install numpy
pillow onnxruntime`` (``samkit[runtime]`` names onnxruntime; torch is a requirement of the full
package, so a plain install would fetch it). The folder format is described in
:mod:`samkit.export`; :func:`read_export` checks it (sha256 of every file).
"""
from __future__ import annotations

from .manifest import MANIFEST, ExportFolder, is_export_folder, read_export
from .predictor import OnnxImagePredictor
from .video import OnnxVideoTracker

__all__ = ["OnnxImagePredictor", "OnnxVideoTracker", "ExportFolder", "read_export", "is_export_folder", "MANIFEST"]
