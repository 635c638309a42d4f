"""Geometry and NMS operators: boxes, masks, RLE and the NMS family (no torchvision)."""
from .boxes import (box_area, box_iou, box_xyxy_to_xywh, encode_box_deltas, is_box_near_crop_edge,
                    masks_to_boxes)
from .mask_ops import mask_iou, remove_small_regions, stability_score
from .nms import fast_nms, greedy_nms, mask_nms, noh_nms
from .rle import coco_to_mask, mask_to_rle, masks_to_coco_rle, rle_area, rle_to_coco, rle_to_mask

__all__ = [
    "box_area", "box_iou", "box_xyxy_to_xywh", "encode_box_deltas", "is_box_near_crop_edge", "masks_to_boxes",
    "mask_iou", "remove_small_regions", "stability_score",
    "fast_nms", "greedy_nms", "mask_nms", "noh_nms",
    "coco_to_mask", "mask_to_rle", "masks_to_coco_rle", "rle_area", "rle_to_coco", "rle_to_mask",
]
