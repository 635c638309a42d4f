"""``samkit serve`` benchmarks: click-to-drawn latency in a real browser, and a load test.

    python -m benchmarks.bench_serve [--clicks 15] [--seconds 8] [--clients 1 4 16 | --clients] [--model mobile_sam]
                                     [--press-ms 100] [--tree DIR]

1. A full-size ``--model`` with random weights (``samkit.build_model``; timings do not depend
   on the weights) is exported to ONNX once (``samkit.export``) into a temporary folder.
2. ``samkit serve --model FOLDER`` runs as a subprocess on 127.0.0.1. Playwright drives
   chromium (``$SAMKIT_CHROMIUM``, default /usr/bin/chromium): the page opens the bundled
   truck photo, then ``--clicks`` clicks are made; for each, the page records the time from
   the pointer event to the first animation frame after the mask was drawn
   (the events' own timestamps to the frame that marks the mask drawn: ``_TIMER``). With the decoder in the page (onnxruntime-web,
   wasm, ``?decode=browser``): the fast decoder pair (``samkit.export.fast_decoder``, row
   ``browser_fast``), then the reference decoder graph on the same server (``?decoder=reference``,
   row ``browser``); row ``auto`` first: the page as a user gets it (``?decode=auto``, the
   default: the faster of page and server decoding, timed when the image opens); then
   with ``--no-browser-decoder`` (server decode: fast pair, row ``server_fast``; with
   ``--no-fast-decoder``, row ``server``). These rows are cold clicks (``?speculate=0``: the
   decode starts on pointerup). Each prints the parts of click-to-drawn the page records
   (``stats.last``, p50 ms): ``decode`` (the wasm run, or the server round trip), the server's
   own ``queue`` / ``decode`` (model and postprocessing; of which ``graph``: the onnxruntime run,
   ``post``: selection and upsampling in numpy) / ``encode`` (masks to JSON) from its
   ``Server-Timing`` header, ``transfer`` (round trip minus the server's parts: HTTP, JSON,
   the event loop), ``unpack`` (masks to pixels), ``canvas`` (the mask layer), ``render`` (the
   redraw) and ``frame`` (to the next animation frame).
   Row ``server_fast_rle``: the page asks COCO RLE (``?transport=rle``, the earlier form) instead
   of bit masks of the box. Row ``server_fast_press``: a press held ``--press-ms`` (a person's
   click) with the decode started on pointerdown (the page's default): from the release (press
   time + ``--press-ms``) to drawn. No such row for the page decoder: its wasm run holds the
   page's main thread, and chromium acknowledges a driven press only after it, so a driver
   cannot release while it runs (a person can: then the decode has a head start of the press).
   ``--tree DIR`` serves another checkout of samkit (before / after comparisons on one machine;
   parts it does not record print as -).
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

    def __init__(self, model: Path, data: Path, extra=(), env=None, root: Path = None) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "samkit", "serve", "--model", str(model), "--data", str(data),
               "--port", str(self.port), *extra]
        self.log = tempfile.TemporaryFile()  # not a pipe: a full pipe would block the server
        self.proc = subprocess.Popen(cmd, env={**os.environ, **(env or {}), "PYTHONPATH": str(root or ROOT)},
                                     cwd=str(root or ROOT),  # `-m samkit` imports from the working folder first
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


def _parts(lasts: list) -> dict:
    """p50 of each part of click-to-drawn (``stats.last`` of each click; see the module docstring)."""
    rows = [x for x in lasts if x]
    if not rows:
        return {}
    out = {}
    for key in ("decode", "unpack", "canvas", "render", "frame"):
        out[key] = float(np.median([r.get(key) or 0.0 for r in rows]))
    servers = [r["server"] for r in rows if r.get("server")]
    for key in ("queue", "decode", "graph", "post", "encode"):
        if servers and all(key in srv for srv in servers):
            out["server_" + key] = float(np.median([srv.get(key, 0.0) for srv in servers]))
    if servers:
        out["transfer"] = float(np.median([r["decode"] - sum(r["server"].get(k, 0.0) for k in ("queue", "decode", "encode"))
                                           for r in rows]))
    return out


# Timed by the benchmark itself, the same way for any version of the page: the pointer events'
# own timestamps (when the browser made them, before any wait for the page's main thread) to the
# animation frame that marks the mask drawn (the page sets #canvas data-drawn in it).
_TIMER = """
window.__bench = { down: null, up: null, drawn: null };
addEventListener("pointerdown", (e) => { window.__bench.down = e.timeStamp; }, true);
addEventListener("pointerup", (e) => { window.__bench.up = e.timeStamp; }, true);
addEventListener("DOMContentLoaded", () => new MutationObserver(() => { window.__bench.drawn = performance.now(); })
  .observe(document.getElementById("canvas"), { attributes: true, attributeFilter: ["data-drawn"] }));
"""


def click_latency(url: str, clicks: int, chromium: str, query: str = "", press_ms: float = 0.0) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.add_init_script(_TIMER)
        page.goto(url + "/" + query)
        page.wait_for_selector("body[data-ready='1']", timeout=60000)
        page.get_by_text("truck.png (example)").click()
        page.wait_for_selector("#canvas[data-ready='@example/truck.png']", timeout=300000)
        mode = page.eval_on_selector("#canvas", "c => c.dataset.mode")
        decoder, threads, choice = page.evaluate("[window.samkit.stats.decoder, window.samkit.stats.numThreads, "
                                                 "window.samkit.stats.choice || null]")
        rng = random.Random(0)
        times, decode, lasts = [], [], []
        for i in range(clicks + 1):  # the first click warms up
            page.keyboard.press("Escape")
            page.wait_for_function("window.samkit.S.points.length === 0")
            x, y = rng.uniform(60, 340), rng.uniform(60, 200)
            pos = page.evaluate("""([x, y]) => { const c = document.getElementById('canvas');
                const r = c.getBoundingClientRect();
                const v = window.samkit.S.view; return [r.left + (v.tx + x * v.scale) * r.width / c.width,
                r.top + (v.ty + y * v.scale) * r.height / c.height]; }""", [x, y])
            before = page.evaluate("window.samkit.stats.decodes")
            if press_ms:  # a person's click: the press held, pointerup-to-drawn measured
                page.mouse.move(*pos)
                page.mouse.down()
                page.wait_for_timeout(press_ms)
                page.mouse.up()
            else:
                page.mouse.click(*pos)
            page.wait_for_function(f"window.samkit.stats.decodes > {before} && "
                                   "document.getElementById('canvas').dataset.drawn == window.samkit.stats.decodes",
                                   timeout=60000)
            page.wait_for_timeout(30)
            if i:
                st, b = page.evaluate("[window.samkit.stats, window.__bench]")
                # a press: from the release of a person who holds it press_ms (the driver's own release
                # may come late: chromium acknowledges the press only once the page's main thread is free)
                times.append(b["drawn"] - b["down"] - press_ms)
                decode.append(st["lastDecodeMs"])
                lasts.append(st.get("last"))
        browser.close()
    t = np.array(times)
    return {"mode": mode, "decoder": decoder, "threads": threads, "choice_ms": choice, "clicks": len(t), "p50_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)),
            "min_ms": float(t.min()), "decode_p50_ms": float(np.median(decode)),
            "parts_p50_ms": _parts(lasts), "load_avg": os.getloadavg()[0]}


def _print_row(key: str, row: dict) -> None:
    parts = row.get("parts_p50_ms") or {}
    names = ("decode", "server_queue", "server_decode", "server_graph", "server_post", "server_encode", "transfer",
             "unpack", "canvas", "render", "frame")
    cells = " ".join(f"{n}={parts[n]:.1f}" if n in parts else f"{n}=-" for n in names)
    print(f"{key:20s} p50={row['p50_ms']:.0f} p95={row['p95_ms']:.0f} min={row['min_ms']:.0f} ms "
          f"({row['mode']}, {row['decoder']}, load {row['load_avg']:.1f}) | parts p50 ms: {cells}", flush=True)
    if row.get("choice_ms"):
        c = row["choice_ms"]
        print(f"{'':20s} ?decode=auto timed page {c['browser']:.0f} ms, server {c['server']:.0f} ms: "
              f"kept the {row['mode']}", flush=True)


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
    ap.add_argument("--press-ms", type=float, default=100.0, help="press length of the *_press rows (0: skip them)")
    ap.add_argument("--tree", type=Path, default=None, help="serve this samkit checkout (default: this one)")
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
        out = {"model": args.model, "auto": None, "browser_fast": None, "browser": None, "server_fast": None, "server": None,
               "server_fast_rle": None, "server_fast_press": None, "load": []}
        # the page's fast decoder pair and its reference decoder (?decoder=reference) on one server,
        # then server decoding
        cold, press = "?speculate=0", [] if not args.press_ms else [("server_fast_press", "", args.press_ms)]
        runs = [([("auto", cold, 0), ("browser_fast", cold + "&decode=browser", 0),
                  ("browser", cold + "&decode=browser&decoder=reference", 0)], []),
                ([("server_fast", cold, 0), ("server_fast_rle", cold + "&transport=rle", 0), *press],
                 ["--no-browser-decoder"]),
                ([("server", cold, 0)], ["--no-browser-decoder", "--no-fast-decoder"])]
        for rows, extra in runs:
            srv = Server(folder, data, extra=extra, root=args.tree)
            try:
                for key, query, press_ms in rows:
                    out[key] = click_latency(srv.url, args.clicks, args.chromium, query, press_ms)
                    _print_row(key, out[key])
            finally:
                srv.stop()
        if not args.clients:
            if args.json:
                args.json.write_text(json.dumps(out, indent=1))
            return 0
        srv = Server(folder, data, extra=["--queue", "8"], root=args.tree)
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
