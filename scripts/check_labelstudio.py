"""End-to-end check of ``samkit serve`` as a Label Studio ML backend, against a real Label Studio.

Not part of ``make test`` (Label Studio is a Django application with its own dependencies; it is
installed in a separate virtual environment). Run::

    python3 -m venv ls-venv && ls-venv/bin/pip install label-studio
    python scripts/check_labelstudio.py --ls-venv ls-venv [--model mobile_sam --checkpoint FILE]

What it does, all on 127.0.0.1 in a temporary folder:

1. starts Label Studio (``label-studio start``, a fresh database, a user with an API token; its
   SSRF guard is told to allow loopback ML backends, which it refuses by default) and
   ``samkit serve`` (``--labelstudio-url`` = that Label Studio);
2. through Label Studio's REST API: creates a project whose labelling config has BrushLabels +
   smart KeyPointLabels / RectangleLabels, uploads the bundled truck photo as a task, connects
   samkit as the project's interactive ML backend (Label Studio calls ``/health`` and ``/setup``);
3. asks Label Studio for interactive predictions (``/api/ml/{id}/interactive-annotating``) with a
   positive click, then with a box: Label Studio calls samkit's ``/predict``, samkit fetches the
   task image from Label Studio with its token;
4. decodes the returned brush RLE with Label Studio's own decoder (``label_studio_sdk.converter.
   brush.decode_rle``, run in the Label Studio environment) and compares it with samkit's
   ``ImagePredictor`` on the same image and prompt (the best-scoring of the multimask
   candidates, as the backend answers): the masks must be identical.

Exit 0 and a JSON summary when every step passed; 1 with the failing step otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "0123456789abcdef0123456789abcdef01234567"
CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image"><Label value="truck" background="#FF0000"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="truck" smart="true"/></KeyPointLabels>
  <RectangleLabels name="rect" toName="image" smart="true"><Label value="truck" smart="true"/></RectangleLabels>
</View>"""
DECODE = ("import json, sys, numpy as np\n"
          "from label_studio_sdk.converter.brush import decode_rle\n"
          "a = json.load(sys.stdin)\n"
          "m = np.asarray(decode_rle(a['rle'])).reshape(a['h'], a['w'], 4)[:, :, 3] > 127\n"
          "print(json.dumps(np.flatnonzero(m.ravel()).tolist()))\n")


class Step(Exception):
    pass


def _wait(url: str, seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=3):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(1)
    raise Step(f"{url} did not answer within {seconds:.0f} s")


def _api(base: str, method: str, path: str, body=None, upload=None):
    headers = {"Authorization": f"Token {TOKEN}"}
    data = None
    if upload is not None:
        name, content = upload
        b = uuid.uuid4().hex
        data = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + content + f"\r\n--{b}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={b}"
    elif body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            text = r.read().decode()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        raise Step(f"{method} {path}: HTTP {exc.code}: {exc.read().decode()[:500]}") from None


def _enable_legacy_tokens(ls_python: str, env: dict) -> None:
    """Label Studio 1.2x disables legacy API tokens per organization by default."""
    code = ("import os, sys, label_studio\n"
            "sys.path.insert(0, os.path.dirname(label_studio.__file__))\n"
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'core.settings.label_studio')\n"
            "import django; django.setup()\n"
            "from jwt_auth.models import JWTSettings\nfrom organizations.models import Organization\n"
            "for org in Organization.objects.all():\n"
            "    s, _ = JWTSettings.objects.get_or_create(organization=org)\n"
            "    s.legacy_api_tokens_enabled = True\n    s.save()\n")
    subprocess.run([ls_python, "-c", code], env=env, check=True, capture_output=True, timeout=300)


def _reference(model: str, checkpoint, image: np.ndarray, prompt: dict) -> np.ndarray:
    from samkit import ImagePredictor, load_model

    net = load_model(model, checkpoint=checkpoint)
    out = ImagePredictor(net).set_image(image).predict(multimask=True, **prompt)
    return out.masks[int(np.argmax(out.scores))]  # the backend answers the best of the candidates


def _decode(ls_python: str, rle, h: int, w: int) -> np.ndarray:
    r = subprocess.run([ls_python, "-c", DECODE], input=json.dumps({"rle": rle, "h": h, "w": w}), text=True,
                       capture_output=True, timeout=120, check=True)
    mask = np.zeros(h * w, bool)
    mask[json.loads(r.stdout)] = True
    return mask.reshape(h, w)


def run(args) -> dict:
    from PIL import Image

    ls_bin = Path(args.ls_venv) / "bin"
    ls_python = str(ls_bin / "python")
    tmp = Path(tempfile.mkdtemp(prefix="samkit-ls-"))
    data = tmp / "data"
    data.mkdir()
    shutil.copy(ROOT / "samkit" / "assets" / "truck.png", data / "truck.png")
    image = np.asarray(Image.open(data / "truck.png").convert("RGB"))
    h, w = image.shape[:2]
    ls_url, sk_url = f"http://127.0.0.1:{args.ls_port}", f"http://127.0.0.1:{args.port}"
    env = dict(os.environ, LABEL_STUDIO_BASE_DATA_DIR=str(tmp / "ls"), LABEL_STUDIO_USERNAME="check@example.com",
               LABEL_STUDIO_PASSWORD="check-password-1", LABEL_STUDIO_USER_TOKEN=TOKEN, ML_BLOCK_LOCAL_IP="false",
               SSRF_PROTECTION_ENABLED="false", USE_DEFAULT_BANNED_SUBNETS="false")
    procs = []
    summary: dict = {}
    try:
        procs.append(subprocess.Popen([str(ls_bin / "label-studio"), "start", "--no-browser", "--port",
                                       str(args.ls_port)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        serve = [sys.executable, "-m", "samkit", "serve", "--data", str(data), "--port", str(args.port),
                 "--labelstudio-url", ls_url, "--model", args.model]
        serve += ["--checkpoint", str(args.checkpoint)] if args.checkpoint else []
        procs.append(subprocess.Popen(serve, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        _wait(ls_url + "/health", 300)
        _wait(sk_url + "/health", 120)
        _enable_legacy_tokens(ls_python, env)
        summary["label_studio"] = _api(ls_url, "GET", "/api/version").get("release")
        pid = _api(ls_url, "POST", "/api/projects", {"title": "samkit check", "label_config": CONFIG})["id"]
        _api(ls_url, "POST", f"/api/projects/{pid}/import", upload=("truck.png", (data / "truck.png").read_bytes()))
        task = _api(ls_url, "GET", f"/api/tasks?project={pid}")["tasks"][0]
        ml = _api(ls_url, "POST", "/api/ml", {"url": sk_url, "project": pid, "title": "samkit", "is_interactive": True})
        summary["backend_state"] = ml.get("state")  # "CO": connected (/health and /setup answered)
        base = {"original_width": w, "original_height": h, "image_rotation": 0, "to_name": "image"}
        click = (450 / 4, 160 / 1.5)  # pixels: on the truck of the bundled photo (400 x 267)
        prompts = {
            "click": ({**base, "from_name": "kp", "type": "keypointlabels", "is_positive": True,
                       "value": {"x": 100 * click[0] / w, "y": 100 * click[1] / h, "width": 0.5,
                                 "keypointlabels": ["truck"]}},
                      dict(points=[list(click)], labels=[1])),
            "box": ({**base, "from_name": "rect", "type": "rectanglelabels",
                     "value": {"x": 10.0, "y": 20.0, "width": 60.0, "height": 50.0, "rectanglelabels": ["truck"]}},
                    dict(box=[0.10 * w, 0.20 * h, 0.70 * w, 0.70 * h])),
        }
        for name, (result, prompt) in prompts.items():
            t0 = time.perf_counter()
            out = _api(ls_url, "POST", f"/api/ml/{ml['id']}/interactive-annotating",
                       {"task": task["id"], "context": {"result": [result]}})
            seconds = time.perf_counter() - t0
            items = out["data"]["result"]
            brush = [r for r in items if r.get("type") == "brushlabels"]
            if not brush:
                raise Step(f"{name}: Label Studio returned no brushlabels result: {json.dumps(out)[:300]}")
            got = _decode(ls_python, brush[0]["value"]["rle"], h, w)
            want = _reference(args.model, args.checkpoint, image, prompt)
            summary[name] = {"seconds": round(seconds, 2), "pixels": int(got.sum()),
                             "identical_to_ImagePredictor": bool(np.array_equal(got, want)),
                             "labels": brush[0]["value"].get("brushlabels")}
            if not np.array_equal(got, want):
                raise Step(f"{name}: the mask Label Studio decoded differs from samkit's ({int((got != want).sum())} "
                           "pixels)")
        return summary
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ls-venv", required=True, help="virtual environment with label-studio installed")
    ap.add_argument("--model", default="mobile_sam")
    ap.add_argument("--checkpoint", default=None, help="weights file (default: the cache)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--ls-port", type=int, default=8766)
    a = ap.parse_args(argv)
    try:
        summary = run(a)
    except Step as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
