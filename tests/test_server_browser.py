"""The annotator page in a real browser (Playwright driving Debian's chromium, ``make test``
installs it): open the page, click the bundled example, see a mask, undo, box, brush, add an object,
export COCO and check the file; the same click decoded in the page by onnxruntime-web on an
exported tiny SAM decoder; a short video propagation. Screenshots go to ``test-artifacts/``."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from _server import data_folder, make_app  # noqa: E402

CHROMIUM = os.environ.get("SAMKIT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium at {CHROMIUM} (make test installs Debian's chromium)", allow_module_level=True)


class Served:
    """uvicorn on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _page(browser, url, query=""):
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/" + query)
    page.wait_for_selector("body[data-ready='1']", timeout=20000)
    return page, errors


def _image_to_page(page, x, y):
    """Page coordinates of image pixel (x, y) under the current view."""
    return page.evaluate("""([x, y]) => { const c = document.getElementById('canvas');
        const r = c.getBoundingClientRect();
        const v = window.samkit.S.view; return [r.left + (v.tx + x * v.scale) * r.width / c.width,
                                                r.top + (v.ty + y * v.scale) * r.height / c.height]; }""", [x, y])


def _pixels(page):
    return int(page.eval_on_selector("#canvas", "c => Number(c.dataset.maskPixels || 0)"))


def _wait_pixels(page, positive=True):
    cond = "> 0" if positive else "=== 0"
    page.wait_for_function(f"Number(document.getElementById('canvas').dataset.maskPixels || 0) {cond}", timeout=20000)


def _stroke(page, points):
    """A drag through image pixels ``points`` (the brush paints along it)."""
    page.mouse.move(*_image_to_page(page, *points[0]))
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(*_image_to_page(page, x, y), steps=4)
    page.mouse.up()


def _open_example(page):
    page.get_by_text("truck.png (example)").click()
    page.wait_for_selector("#canvas[data-ready='@example/truck.png']", timeout=30000)


def test_click_undo_box_add_and_export_coco(browser, tmp_path):
    data = data_folder(tmp_path)
    app, _ = make_app(data)
    served = Served(app)
    try:
        page, errors = _page(browser, served.url)
        _open_example(page)
        assert page.eval_on_selector("#canvas", "c => c.dataset.mode") == "server"  # classic: no exported decoder
        page.mouse.click(*_image_to_page(page, 200, 130))
        _wait_pixels(page)
        assert page.evaluate("window.samkit.S.candidates.length") == 3
        # the bit masks the page asks for are the server's masks: the same COCO RLE as its default answer
        point = page.evaluate("window.samkit.S.points[0]")
        ref = page.request.post(served.url + "/api/image/decode", data={
            "path": "@example/truck.png", "points": [point], "labels": [1], "polygons": False}).json()["masks"]
        assert page.evaluate(_PAGE_RLE, [m["rle"] for m in ref]) == [[m["rle"]["counts"] for m in ref], [True] * 3]
        stats = page.evaluate("window.samkit.stats")  # decoded from pointerdown, the click's own prompt
        assert stats["speculated"] == 1 and stats["decodes"] == 1 and stats["last"]["server"]["decode"] >= 0
        assert stats["maskPixels"] == max(ref, key=lambda m: m["score"])["area"]
        page.keyboard.press("Control+z")
        _wait_pixels(page, positive=False)
        page.keyboard.press("Control+Shift+z")  # redo brings the click back
        _wait_pixels(page)
        assert page.evaluate("window.samkit.S.points.length") == 1
        page.keyboard.press("Escape")
        _wait_pixels(page, positive=False)
        page.keyboard.press("b")
        x0, y0 = _image_to_page(page, 20, 60)
        x1, y1 = _image_to_page(page, 380, 200)
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2)
        page.mouse.move(x1, y1)
        page.mouse.up()
        _wait_pixels(page)
        page.keyboard.press("r")  # brush fix-ups: paint a stroke outside the mask, erase one across it
        decoded = _pixels(page)
        _stroke(page, [(385, 240), (395, 255)])
        painted = _pixels(page)
        assert painted > decoded
        page.keyboard.down("Shift")
        _stroke(page, [(60, 130), (340, 130)])
        page.keyboard.up("Shift")
        final = _pixels(page)
        assert final < painted and page.evaluate("window.samkit.S.candidates[window.samkit.S.choice].mask"
                                                 ".reduce((a, v) => a + v, 0)") == final
        page.keyboard.press("Enter")
        page.wait_for_function("document.getElementById('canvas').dataset.objects === '1'")
        page.wait_for_function("document.getElementById('status').textContent.includes('saved 1 object')")
        page.select_option("#export-format", "coco")
        page.click("#export")
        page.wait_for_selector("#exported a", timeout=20000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve_image.png"))
        (coco_file,) = (data / "exports" / "coco").glob("*.json")
        coco = json.loads(coco_file.read_text())
        assert len(coco["annotations"]) == 1 and coco["categories"][0]["name"] == "object"
        assert coco["images"][0]["width"] == 400 and coco["annotations"][0]["area"] == final > 1000
        href = page.get_attribute("#exported a", "href")
        assert json.loads(page.request.get(served.url + href).text())["annotations"] == coco["annotations"]
        saved = json.loads((data / ".samkit" / "annotations" / "@example" / "truck.png.json").read_text())
        assert len(saved["objects"]) == 1
        assert not errors, errors
    finally:
        served.stop()


_PAGE_RLE = """async (rles) => {  // the page's candidate masks as COCO RLE strings; the page's RLE decoder on rles
    const r = await import("/static/js/rle.js"), S = window.samkit.S;
    return [S.candidates.map((c) => r.encodeMask(c.mask, S.H, S.W).counts),
            S.candidates.map((c, i) => r.decodeRle(rles[i]).every((v, j) => v === c.mask[j]))];
}"""

_CROP_DIFF = """async () => {  // the same prompt upsampled over the whole image instead of the positive box
    const d = await import("/static/js/decoder.js"), S = window.samkit.S;
    d.options.crop = false;
    const whole = await d.decode(S.info, S.emb, S.points, S.labels, S.box, true);
    d.options.crop = true;
    return S.candidates.map((c, i) => [c.mask.reduce((a, v, j) => a + (v !== whole[i].mask[j]), 0),
                                       c.pixels - whole[i].pixels, c.box.join() === whole[i].box.join()]);
}"""

_REFERENCE_DIFF = """async () => {  // the same prompt through the reference decoder graph, in the same page
    const d = await import("/static/js/decoder.js"), S = window.samkit.S;
    await d.loadDecoder({ ...S.info, fast: null });
    const ref = await d.decode({ ...S.info, fast: null }, { ...S.emb, first: null }, S.points, S.labels, S.box, true);
    return S.candidates.map((c, i) => [c.mask.reduce((a, v, j) => a + (v !== ref[i].mask[j]), 0),
                                       Math.abs(c.score - ref[i].score)]);
}"""


# sam2 (the SAM 2 layout: its own export and prompt order) is the slow run's: ~12 s more of the default suite
@pytest.mark.parametrize("family", ["sam", "efficient_sam", pytest.param("sam2", marks=pytest.mark.slow)])
def test_decoder_runs_in_the_page_with_onnxruntime_web(browser, tmp_path, tiny_export, family):
    from samkit.runtime import OnnxImagePredictor
    from samkit.server.config import ServerConfig

    assets = ServerConfig(data=tmp_path).assets_dir()
    if assets is None:
        pytest.skip("onnxruntime-web is not vendored (run `make web`)")
    _, folder = tiny_export(family)
    data = data_folder(tmp_path)
    predictor = OnnxImagePredictor(folder)
    from samkit.server import create_app

    app = create_app(ServerConfig(data=data), predictor, family, export_folder=predictor.export)
    served = Served(app)
    try:
        page, errors = _page(browser, served.url, "?decode=browser")
        _open_example(page)
        assert page.eval_on_selector("#canvas", "c => c.dataset.mode") == "browser"
        page.mouse.click(*_image_to_page(page, 200, 130))
        _wait_pixels(page)
        stats = page.evaluate("window.samkit.stats")
        # the fast decoder pair, on multi-threaded wasm (the server's COOP / COEP headers isolate the page)
        assert stats["mode"] == "browser" and stats["decoder"] == "fast" and stats["decodes"] == 1
        cores = page.evaluate("navigator.hardwareConcurrency")
        assert page.evaluate("self.crossOriginIsolated") is True and stats["numThreads"] == min(4, cores)
        assert stats["numThreads"] > 1 or cores == 1
        point = page.evaluate("window.samkit.S.points[0]")
        ref = predictor.set_image(str(Path(__file__).resolve().parent.parent / "samkit/assets/truck.png")).predict(
            points=[point], labels=[1], multimask=True)
        best = int(ref.scores.argmax())
        area = int(ref.masks[best].sum())
        assert abs(_pixels(page) - area) <= max(20, 0.01 * area)  # wasm and CPU onnxruntime agree
        # upsampling the positive box only gives exactly the masks of the whole-image upsampling
        assert page.evaluate(_CROP_DIFF) == [[0, 0, True]] * 3
        # the reference decoder graph gives the same masks (up to pixels at |logit| ~ 0) and scores
        for differing, score_diff in page.evaluate(_REFERENCE_DIFF):
            assert differing <= max(3, 0.002 * area) and score_diff < 1e-3
        page.screenshot(path=str(ARTIFACTS / f"serve_browser_decoder_{family}.png"))
        assert not errors, errors
    finally:
        served.stop()


def test_page_keeps_the_faster_decode_path(browser, tmp_path, tiny_export):
    """?decode=auto (the default) times a warm page decode and two server decodes when the image
    opens and keeps the faster; ?decode=server never loads the page decoder. Both draw the mask."""
    from samkit.runtime import OnnxImagePredictor
    from samkit.server import create_app
    from samkit.server.config import ServerConfig

    if ServerConfig(data=tmp_path).assets_dir() is None:
        pytest.skip("onnxruntime-web is not vendored (run `make web`)")
    _, folder = tiny_export("sam")
    predictor = OnnxImagePredictor(folder)
    served = Served(create_app(ServerConfig(data=data_folder(tmp_path)), predictor, "sam",
                               export_folder=predictor.export))
    try:
        for query in ("", "?decode=server"):
            page, errors = _page(browser, served.url, query)
            _open_example(page)
            stats = page.evaluate("window.samkit.stats")
            if query:
                assert stats["mode"] == "server" and stats.get("choice") is None and stats["numThreads"] is None
            else:
                choice = stats["choice"]
                assert choice["browser"] > 0 and choice["server"] > 0
                assert stats["mode"] == ("browser" if choice["browser"] <= choice["server"] else "server")
            assert page.eval_on_selector("#canvas", "c => c.dataset.mode") == stats["mode"]
            page.mouse.click(*_image_to_page(page, 200, 130))
            _wait_pixels(page)
            assert _pixels(page) > 0 and not errors, errors
            page.close()
    finally:
        served.stop()


def test_video_prompt_and_propagate(browser, tmp_path):
    data = data_folder(tmp_path)
    app, _ = make_app(data)
    served = Served(app)
    try:
        page, errors = _page(browser, served.url)
        page.get_by_text("clip as video (4 frames)").click()
        page.wait_for_selector("#canvas[data-ready='clip']", timeout=30000)
        page.keyboard.press("b")
        x0, y0 = _image_to_page(page, 8, 10)
        x1, y1 = _image_to_page(page, 32, 34)
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x1, y1)
        page.mouse.up()
        _wait_pixels(page)
        page.click("#propagate")
        page.wait_for_function("document.getElementById('canvas').dataset.propagated === '4'", timeout=30000)
        page.fill("#timeline", "3")
        page.wait_for_function("document.getElementById('frame-label').textContent.startsWith('4 /')")
        assert page.evaluate("window.samkit.S.video.objectCount()") == 1
        page.screenshot(path=str(ARTIFACTS / "serve_video.png"))
        doc = json.loads((data / ".samkit" / "annotations" / "clip.json").read_text())
        assert doc["kind"] == "video" and sorted(doc["frames"]) == ["0", "1", "2", "3"]
        assert all(len(objs) == 1 for objs in doc["frames"].values())
        assert not errors, errors
    finally:
        served.stop()
