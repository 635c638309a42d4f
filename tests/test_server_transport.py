"""How the server hands masks to the annotator page: the vectorised COCO RLE encoder (the same
strings as the one-count-at-a-time codec and pycocotools), the bit mask of the box
(``mask_format: "bits"``, the page's form) giving exactly the masks of the RLE answer, and the
``Server-Timing`` header of a decode."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _server import client, data_folder, make_app  # noqa: E402

from samkit.errors import InputError  # noqa: E402
from samkit.server import rle as rle_codec  # noqa: E402


def _scalar_counts_to_string(counts):
    """The COCO compressed-counts rule one count at a time (pycocotools' rleToString)."""
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            group = x & 0x1F
            x >>= 5
            more = (x != -1) if (group & 0x10) else (x != 0)
            out.append(chr((group | (0x20 if more else 0)) + 48))
    return "".join(out)


def test_vectorised_rle_strings_match_the_scalar_rule_and_pycocotools():
    rng = np.random.default_rng(0)
    for t in range(100):  # small, large and 40-bit counts, growing and shrinking (negative deltas)
        counts = [int(v) for v in rng.integers(0, [2, 40, 5000, 1 << 20, 1 << 39][t % 5], rng.integers(0, 30))]
        text = rle_codec.counts_to_string(counts)
        assert text == _scalar_counts_to_string(counts)
        assert rle_codec.string_to_counts(text) == counts
    assert rle_codec.counts_to_string([]) == ""
    pycoco = pytest.importorskip("pycocotools.mask")
    for mask in (rng.random((67, 41)) > 0.5, np.ones((5, 7), bool), np.zeros((5, 7), bool)):
        ref = pycoco.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
        assert rle_codec.encode(mask)["counts"] == ref


def test_bit_masks_round_trip_and_refuse_bad_input():
    rng = np.random.default_rng(1)
    masks = [rng.random((13, 29)) > 0.6, np.zeros((13, 29), bool), np.ones((13, 29), bool)]
    one = np.zeros((13, 29), bool)
    one[12, 28] = True  # a single pixel in the last corner
    masks.append(one)
    blob = np.zeros((13, 29), bool)
    blob[3:9, 5:8] = True  # 18 pixels: the last byte padded
    masks.append(blob)
    for m in masks:
        item = rle_codec.bits_encode(m)
        assert (rle_codec.bits_decode(item, m.shape) == m).all()
    assert rle_codec.bits_encode(blob)["box"] == [5, 3, 8, 9]
    assert rle_codec.bits_encode(np.zeros((4, 4), bool)) == {"box": [0, 0, 0, 0], "data": ""}
    good = rle_codec.bits_encode(blob)
    for bad in ({"box": [5, 3, 8, 9]}, {"box": [5, 3, 30, 9], "data": good["data"]},
                {"box": [5, 3, 8, 9], "data": good["data"][:-4]}, {"box": [5, 3, 8, 9], "data": "%%%"}):
        with pytest.raises(InputError):
            rle_codec.bits_decode(bad, (13, 29))


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from tiny import tiny_sam

    from samkit.predict.image import ImagePredictor

    out = {}
    data = data_folder(tmp_path_factory.mktemp("serve_transport"))
    for name, predictor in (("classic", None), ("tiny_sam", ImagePredictor(tiny_sam(seed=0, image_size=128)))):
        app, _ = make_app(data, predictor, name)
        out[name] = app
    return out


# classic (GrabCut) and a random-weight SAM (fragmented masks: many runs) on the small square
@pytest.mark.parametrize("name", ["classic", "tiny_sam"])
def test_bits_answer_the_same_masks_as_rle(servers, name):
    path, hw = "sub/square.png", (48, 64)
    prompts = [{"points": [[30, 20]], "labels": [1]}, {"points": [[30, 20], [60, 40]], "labels": [1, 0]},
               {"box": [18, 8, 46, 32], "multimask": False}]
    with client(servers[name]) as c:
        for prompt in prompts:
            body = {"path": path, "polygons": False, **prompt}
            a = c.post("/api/image/decode", json=body)
            b = c.post("/api/image/decode", json={**body, "mask_format": "bits"})
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            ma, mb = a.json()["masks"], b.json()["masks"]
            assert len(ma) == len(mb) and all("rle" not in m for m in mb)
            for x, y in zip(ma, mb):
                full = rle_codec.decode(x["rle"], hw)
                assert (rle_codec.bits_decode(y["bits"], hw) == full).all()
                assert x["area"] == y["area"] == int(full.sum()) and x["score"] == y["score"]
                assert [int(v) for v in y["box"]] == (y["bits"]["box"] if full.any() else [0, 0, 0, 0])
            timing = dict(part.split(";dur=") for part in b.headers["server-timing"].split(", "))
            assert set(timing) == {"queue", "decode", "encode"} and all(float(v) >= 0 for v in timing.values())
        r = c.post("/api/image/decode", json={"path": path, "points": [[1, 1]], "mask_format": "png"})
        assert r.status_code == 400 and "mask_format" in r.json()["error"]


def test_export_folder_encode_prepares_the_fast_pair_and_times_its_parts(tiny_export, tmp_path):
    """With an export's fast decoder pair, encoding an image also runs its per-image half (the
    first click does not), and a decode's Server-Timing splits the model time into the graph run
    and the numpy postprocessing; the bit masks are the RLE masks here too."""
    from samkit.runtime import OnnxImagePredictor
    from samkit.server import create_app
    from samkit.server.config import ServerConfig

    _, folder = tiny_export("sam")
    predictor = OnnxImagePredictor(folder)
    app = create_app(ServerConfig(data=data_folder(tmp_path)), predictor, "sam", export_folder=predictor.export)
    with client(app) as c:
        assert c.post("/api/image/encode", json={"path": "sub/square.png"}).status_code == 200
        assert predictor._state.first is not None
        body = {"path": "sub/square.png", "points": [[30, 20]], "polygons": False}
        a = c.post("/api/image/decode", json=body)
        b = c.post("/api/image/decode", json={**body, "mask_format": "bits"})
        for x, y in zip(a.json()["masks"], b.json()["masks"]):
            assert (rle_codec.bits_decode(y["bits"], (48, 64)) == rle_codec.decode(x["rle"], (48, 64))).all()
        timing = dict(part.split(";dur=") for part in b.headers["server-timing"].split(", "))
        assert set(timing) == {"queue", "decode", "graph", "post", "encode"}
        assert float(timing["graph"]) + float(timing["post"]) <= float(timing["decode"]) + 0.2
