"""benchmarks/bench_onnx_video.py: its tracking loop, table and RESULTS section (no export here:
the export and the runtime are tested in test_runtime_video.py; no timing is asserted)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_onnx_video  # noqa: E402


def test_track_timed_table_and_section(tmp_path):
    from _tiny_families import tiny_video_family
    from _video_clip import clip
    from samkit.video import VideoTracker

    times, masks = bench_onnx_video.track_timed(VideoTracker(tiny_video_family("edgetam")), clip(n=3), [48, 44, 86, 76])
    assert len(times) == len(masks) == 3 and all(t > 0 for t in times) and masks[0].shape == (80, 96)
    row = {"model": "tiny", "frames": 3, "torch_s": 0.5, "ort_s": 0.25, "agree": 1.0, "fg_torch": 0.1, "export_s": 9}
    text = bench_onnx_video.table([row, {"model": "broken", "error": "X"}])
    assert text.count("\n") == 3 and "| tiny | 3 | 0.50 / 0.25 | 1.00000 |" in text and "failed: X" in text
    results = tmp_path / "RESULTS.md"
    results.write_text("# r\n\n## onnx\n\nkeep me\n\n## onnx video\n\nold\n\n## video\n\nkeep me too\n")
    bench_onnx_video.write_section(results, "new table")
    assert results.read_text() == "# r\n\n## onnx\n\nkeep me\n\n## onnx video\n\nnew table\n\n## video\n\nkeep me too\n"


def test_image_bench_keeps_the_video_section(tmp_path):
    import bench_onnx

    results = tmp_path / "RESULTS.md"
    results.write_text("# r\n\n## onnx\n\nold\n\n## onnx video\n\nvideo table\n")
    bench_onnx.write_section(results, "new")
    assert results.read_text() == "# r\n\n## onnx\n\nnew\n\n## onnx video\n\nvideo table\n"
