"""TEST-ONLY: torchvision.ops subset."""
from .boxes import batched_nms, box_area, box_iou, nms  # noqa: F401
