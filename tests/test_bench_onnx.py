"""benchmarks/bench_onnx.py runs end to end on a tiny model (no timing is asserted)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_onnx  # noqa: E402


def test_bench_row_table_and_results_section(tmp_path):
    from _tiny_families import tiny_family

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)
    gt = np.zeros((60, 90), bool)
    gt[10:40, 20:70] = True
    row = bench_onnx.bench_model(tiny_family("sam2"), "tiny", [("synthetic/0", img, gt)], [img], runs=1,
                                 workdir=tmp_path)
    for key in ("enc_torch", "enc_fp32", "enc_int8", "enc_int8-static", "dec_torch", "dec_fp32", "size_int8_mb"):
        assert row[key] > 0
    assert row["agree_fp32_vs_torch"] > 0.99 and row["n_prompts"] == 2
    assert 0 <= row["agree_int8_vs_fp32"] <= 1 and 0 <= row["agree_int8-static_vs_fp32"] <= 1
    text = bench_onnx.table([row, {"model": "broken", "error": "X"}])
    assert text.count("\n") == 3 and "| tiny |" in text and "failed: X" in text
    results = tmp_path / "RESULTS.md"
    results.write_text("# r\n\n## image\n\nkeep me\n\n## onnx\n\nold\n\n## video\n\nkeep me too\n")
    bench_onnx.write_section(results, "new table")
    assert results.read_text() == "# r\n\n## image\n\nkeep me\n\n## onnx\n\nnew table\n\n## video\n\nkeep me too\n"
    bench_onnx.write_section(tmp_path / "fresh.md", "t")
    assert (tmp_path / "fresh.md").read_text().endswith("## onnx\n\nt\n")
