"""Evaluation: DAVIS J&F, interactive mIoU / NoC (RITM protocol), COCO mask AP, readers.

Heavy optional dependencies (cv2 for boundaries and clicks, pycocotools for COCO) are
imported only when a function needs them.
"""
from .clicks import Click, SampleResult, box_iou_sample, centre_point, next_click, run_clicks
from .davis import DavisDataset, DavisSequence, read_index_png, split_objects, write_index_png
from .interactive import InteractiveReport, evaluate_interactive
from .metrics import (boundary_f, boundary_map, boundary_prf, boundary_tolerance, mask_iou, mask_to_box,
                      number_of_clicks, region_similarity, sequence_statistics)
from .vos import ObjectScores, VosReport, evaluate_results_dir, evaluate_tracker, score_sequence

__all__ = [
    "Click", "SampleResult", "box_iou_sample", "centre_point", "next_click", "run_clicks",
    "DavisDataset", "DavisSequence", "read_index_png", "split_objects", "write_index_png",
    "InteractiveReport", "evaluate_interactive",
    "boundary_f", "boundary_map", "boundary_prf", "boundary_tolerance", "mask_iou", "mask_to_box",
    "number_of_clicks", "region_similarity", "sequence_statistics",
    "ObjectScores", "VosReport", "evaluate_results_dir", "evaluate_tracker", "score_sequence",
]
