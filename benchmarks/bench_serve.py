"""``samkit serve`` benchmarks: click-to-drawn latency in a real browser, and a load test.

    python -m benchmarks.bench_serve [--clicks 15] [--seconds 8] [--clients 1 4 16 | --clients] [--model mobile_sam]

1. A full-size ``--model`` with random weights (``samkit.build_model``; timings do not depend
   on the weights) is exported to ONNX once (``samkit.export``) into a temporary folder.
2. ``samkit serve --model FOLDER`` runs as a subprocess on 127.0.0.1. Playwright drives
   chromium (``$SAMKIT_CHROMIUM``, default /usr/bin/chromium): the page opens the bundled
   truck photo, then ``--clicks`` clicks are made; for each, the page records the time from
   the pointer event to the first animation frame after the mask was drawn
   (``window.samkit.stats.lastClickToDrawnMs``). With the decoder in the page (onnxruntime-web,
   wasm): the fast decoder pair (``samkit.export.fast_decoder``, row ``browser_fast``), then the
   reference decoder graph on the same server (``?decoder=reference``, row ``browser``); then
   with ``--no-browser-decoder`` (server decode: fast pair, row ``server_fast``; with
   ``--no-fast-decoder``, row ``server``).
3. Load test (``--clients`` with no level skips it): ``--clients`` concurrent clients each POST /api/image/decode (one random click
   on the cached embedding) and /api/annotations/object for ``--seconds`` seconds; p50 / p95
   latency of the decodes, the share answered 429, any 5xx, and whether every object whose
   save was answered 200 is in the stored document (no lost annotation).

Nothing here is a test; the figures depend on the machine (see RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_model(name: str, out: Path) -> Path:
    import torch

    from samkit.export import export_onnx
    from samkit.registry import build_model

    torch.manual_seed(0)
    return export_onnx(build_model(name).eval(), out, name=name)


class Server:
    """``samkit serve`` in a subprocess (``extra``: more CLI options)."""

    def __init__(self, model: Path, data: Path, extra=(), env=None) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "samkit", "serve", "--model", str(model), "--data", str(data),
               "--port", str(self.port), *extra]
        self.log = tempfile.TemporaryFile()  # not a pipe: a full pipe would block the server
        self.proc = subprocess.Popen(cmd, env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/api/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.proc.kill()
        self.log.seek(0)
        raise RuntimeError(f"samkit serve did not start (exit {self.proc.wait()}): "
                           + self.log.read().decode(errors="replace")[-2000:])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def click_latency(url: str, clicks: int, chromium: str, query: str = "") -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(url + "/" + query)
        page.wait_for_selector("body[data-ready='1']", timeout=60000)
        page.get_by_text("truck.png (example)").click()
        page.wait_for_selector("#canvas[data-ready='@example/truck.png']", timeout=300000)
        mode = page.eval_on_selector("#canvas", "c => c.dataset.mode")
        decoder, threads = page.evaluate("[window.samkit.stats.decoder, window.samkit.stats.numThreads]")
        rng = random.Random(0)
        times, decode = [], []
        for i in range(clicks + 1):  # the first click warms up
            page.keyboard.press("Escape")
            page.wait_for_function("window.samkit.S.points.length === 0")
            x, y = rng.uniform(60, 340), rng.uniform(60, 200)
            pos = page.evaluate("""([x, y]) => { const c = document.getElementById('canvas');
                const r = c.getBoundingClientRect();
                const v = window.samkit.S.view; return [r.left + (v.tx + x * v.scale) * r.width / c.width,
                r.top + (v.ty + y * v.scale) * r.height / c.height]; }""", [x, y])
            before = page.evaluate("window.samkit.stats.decodes")
            page.mouse.click(*pos)
            page.wait_for_function(f"window.samkit.stats.decodes > {before} && "
                                   "document.getElementById('canvas').dataset.drawn == window.samkit.stats.decodes",
                                   timeout=60000)
            page.wait_for_timeout(30)
            if i:
                times.append(page.evaluate("window.samkit.stats.lastClickToDrawnMs"))
                decode.append(page.evaluate("window.samkit.stats.lastDecodeMs"))
        browser.close()
    t = np.array(times)
    return {"mode": mode, "decoder": decoder, "threads": threads, "clicks": len(t), "p50_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)),
            "min_ms": float(t.min()), "decode_p50_ms": float(np.median(decode)),
            "load_avg": os.getloadavg()[0]}


def load_test(url: str, clients: int, seconds: float) -> dict:
    import httpx

    lat, codes, saved = [], [], []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        rng = random.Random(k)
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = c.post("/api/image/decode", json={"path": "truck.png", "multimask": False, "polygons": False,
                                                      "points": [[rng.uniform(20, 380), rng.uniform(20, 250)]]})
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    codes.append(r.status_code)
                    if r.status_code == 200:
                        lat.append(dt)
                if r.status_code == 200 and rng.random() < 0.2:
                    m = r.json()["masks"][0]
                    s = c.post("/api/annotations/object", json={"path": "truck.png", "object": {
                        "label": f"c{k}", "rle": m["rle"]}})
                    with lock:
                        codes.append(s.status_code)
                        if s.status_code == 200:
                            saved.append(s.json()["object"]["id"])
                elif r.status_code == 429:
                    time.sleep(float(r.headers.get("retry-after", "1")) * 0.05)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes_a = np.array(codes)
    doc = httpx.get(url + "/api/annotations", params={"path": "truck.png"}).json()
    stored = {o["id"] for o in doc["objects"]}
    lat_a = np.array(lat) if lat else np.array([np.nan])
    return {"clients": clients, "requests": int(len(codes_a)), "ok": int((codes_a == 200).sum()),
            "p50_ms": float(np.median(lat_a)), "p95_ms": float(np.percentile(lat_a, 95)),
            "share_429": float((codes_a == 429).mean()), "n_5xx": int((codes_a >= 500).sum()),
            "saved": len(saved), "lost": len(set(saved) - stored)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobile_sam")
    ap.add_argument("--clicks", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", type=int, nargs="*", default=[1, 4, 16], help="load-test levels (none: skip it)")
    ap.add_argument("--chromium", default=os.environ.get("SAMKIT_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--export", type=Path, default=None, help="reuse (or create) this export folder")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="samkit-bench-serve-"))
    try:
        t0 = time.perf_counter()
        if args.export is not None and (args.export / "samkit-export.json").is_file():
            folder = args.export
        else:
            folder = export_model(args.model, args.export or work / "export")
            print(f"exported {args.model} (random weights) in {time.perf_counter() - t0:.0f} s", flush=True)
        data = work / "data"
        data.mkdir()
        shutil.copy(ROOT / "samkit" / "assets" / "truck.png", data / "truck.png")
        out = {"model": args.model, "browser_fast": None, "browser": None, "server_fast": None, "server": None,
               "load": []}
        # the page's fast decoder pair and its reference decoder (?decoder=reference) on one server,
        # then server decoding
        runs = [([("browser_fast", ""), ("browser", "?decoder=reference")], []),
                ([("server_fast", "")], ["--no-browser-decoder"]),
                ([("server", "")], ["--no-browser-decoder", "--no-fast-decoder"])]
        for rows, extra in runs:
            srv = Server(folder, data, extra=extra)
            try:
                for key, query in rows:
                    out[key] = click_latency(srv.url, args.clicks, args.chromium, query)
                    print(key, out[key], flush=True)
            finally:
                srv.stop()
        if not args.clients:
            if args.json:
                args.json.write_text(json.dumps(out, indent=1))
            return 0
        srv = Server(folder, data, extra=["--queue", "8"])
        try:
            import httpx

            httpx.post(srv.url + "/api/image/encode", json={"path": "truck.png"}, timeout=300)
            for n in args.clients:
                out["load"].append(load_test(srv.url, n, args.seconds))
                print(out["load"][-1], flush=True)
        finally:
            srv.stop()
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
