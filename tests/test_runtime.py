"""samkit.runtime without torch: every test here runs the runtime in a fresh Python process in
which importing torch fails (a ``sys.meta_path`` blocker installed before samkit is imported),
and proves it: the process asserts that ``import torch`` raises and that no torch module was
loaded. The parent process compares the results with samkit's torch ``ImagePredictor``."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]

NO_TORCH = textwrap.dedent('''
    import importlib.abc, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError("torch is not importable in this process: " + name)
            return None
    sys.meta_path.insert(0, NoTorch())
    assert not any(m.split(".")[0] == "torch" for m in sys.modules)
''')

PROOF = textwrap.dedent('''
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("torch could be imported")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
    assert not loaded, loaded
    print("NO-TORCH-OK")
''')


def run_without_torch(body: str, *args: str) -> subprocess.CompletedProcess:
    code = NO_TORCH + textwrap.dedent(body) + PROOF
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                         timeout=600, env=_env())
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("NO-TORCH-OK"), out.stdout
    return out


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PROMPTS = [dict(points=[[40, 50], [90, 20]], labels=[1, 0]),
           dict(box=[10, 10, 80, 90], points=[[40, 50]], labels=[1], multimask=False),
           dict(box=[5, 20, 120, 95])]


@pytest.mark.parametrize("family", ["sam", "sam2", "efficient_sam"])
def test_onnx_image_predictor_without_torch_matches_torch(family, tiny_export, tmp_path):
    from samkit import ImagePredictor

    model, folder = tiny_export(family)
    img = np.random.default_rng(5).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    np.save(tmp_path / "img.npy", img)
    (tmp_path / "prompts.json").write_text(json.dumps(PROMPTS))
    run_without_torch('''
        import json, numpy as np
        import samkit, samkit.prompts, samkit.masks
        from samkit.runtime import OnnxImagePredictor
        folder, tmp = sys.argv[1], sys.argv[2]
        pred = OnnxImagePredictor(folder).set_image(np.load(tmp + "/img.npy"))
        out = {}
        for i, p in enumerate(json.load(open(tmp + "/prompts.json"))):
            m = pred.predict(**p)
            out[f"low{i}"], out[f"score{i}"], out[f"mask{i}"] = m.low_res_logits, m.scores, m.masks
        batch = pred.predict_batch(boxes=[[10, 10, 80, 90], [0, 0, 140, 100]])
        out["batch"] = np.stack([b.low_res_logits for b in batch])
        np.savez(tmp + "/out.npz", **out)
    ''', str(folder), str(tmp_path))
    got = np.load(tmp_path / "out.npz")
    ref = ImagePredictor(model).set_image(img)
    for i, p in enumerate(PROMPTS):
        m = ref.predict(**p)
        np.testing.assert_allclose(got[f"low{i}"], m.low_res_logits, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got[f"score{i}"], m.scores, atol=1e-4, rtol=0)
        assert (got[f"mask{i}"] != m.masks).mean() < 1e-3
    batch = ref.predict_batch(boxes=np.array([[10, 10, 80, 90], [0, 0, 140, 100]]))
    np.testing.assert_allclose(got["batch"], np.stack([b.low_res_logits for b in batch]), atol=1e-4, rtol=0)


def test_cli_segment_with_an_export_folder_without_torch(tiny_export, tmp_path):
    _, folder = tiny_export("sam")
    out = tmp_path / "out"
    run_without_torch('''
        from samkit.cli.main import main
        rc = main(["segment", "samkit/assets/truck.png", "--point", "100,80", "--box", "17,61,383,189",
                   "--model", sys.argv[1], "--out", sys.argv[2], "--format", "png,coco,json"])
        assert rc == 0, rc
        rc = main(["segment", "samkit/assets/truck.png", "--point", "100,80", "--model", sys.argv[1],
                   "--checkpoint", "x.pt", "--out", sys.argv[2]])
        assert rc == 2, rc
        rc = main(["everything", "samkit/assets/truck.png", "--model", sys.argv[1], "--out", sys.argv[2]])
        assert rc == 2, rc
    ''', str(folder), str(out))
    assert (out / "truck_000.png").is_file() and (out / "truck_coco.json").is_file()


def test_damaged_folder_error_without_torch(tiny_export, tmp_path):
    import shutil

    _, folder = tiny_export("sam2")
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "sam2.encoder.onnx").write_bytes(b"not onnx")
    out = run_without_torch('''
        from samkit.errors import CheckpointError
        from samkit.runtime import OnnxImagePredictor
        try:
            OnnxImagePredictor(sys.argv[1])
        except CheckpointError as exc:
            print(exc)
        else:
            raise SystemExit("no error")
        from samkit.cli.main import main
        assert main(["segment", "samkit/assets/truck.png", "--point", "10,10", "--model", sys.argv[1]]) == 3
    ''', str(bad))
    assert "altered" in out.stdout and "sam2.encoder.onnx" in out.stdout and "Fix:" in out.stdout
    assert "error: the export folder" in out.stderr


def test_runtime_modules_do_not_import_torch():
    """The modules the runtime is made of, imported one by one without torch."""
    run_without_torch('''
        import importlib
        for m in ("samkit", "samkit.errors", "samkit.specs", "samkit.prompts", "samkit.masks", "samkit.io",
                  "samkit.io.image", "samkit.io.outputs", "samkit.mask_codecs", "samkit.runtime",
                  "samkit.runtime.manifest", "samkit.runtime.imageops", "samkit.runtime.session",
                  "samkit.runtime.predictor", "samkit.cli.main"):
            importlib.import_module(m)
    ''')


def test_readme_runtime_example_runs_without_torch(tiny_export, tmp_path):
    """The README's torch-free example, on a tiny export and an 800 x 600 photo."""
    from PIL import Image

    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\nimport numpy as np\nfrom samkit.runtime import OnnxImagePredictor")
    code = readme[start + len("```python\n"): readme.index("```", start + 10)]
    assert len(code.strip().splitlines()) <= 12
    _, folder = tiny_export("sam2")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    code = (code.replace('"mobile_sam-onnx/"', repr(str(folder))).replace('"photo.jpg"', repr(str(tmp_path / "p.png")))
            .replace('"out/"', repr(str(tmp_path / "out"))))
    run_without_torch(code + "\nassert len(out) == 3 and len(again) == 1\n")
    assert (tmp_path / "out" / "photo_000.png").is_file()
