"""TEST-ONLY: torchvision.ops subset."""
from . import misc  # noqa: F401
from .boxes import batched_nms, box_area, box_iou, nms  # noqa: F401
