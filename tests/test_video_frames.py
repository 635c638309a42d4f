"""Frames of a video: one size per video for every tracker (classic flow tracker and the SAM 2
family), and frame folders decoded by the image loader (pixel limit, EXIF orientation, colour
modes). Issue 13, defects 2 and 3."""
from __future__ import annotations

import numpy as np
import pytest
from _tiny_video import build_tiny_video_model
from PIL import Image

from samkit.errors import VideoError
from samkit.io.image import ENV_MAX_PIXELS, load_image
from samkit.io.video import open_frames
from samkit.video import VideoTracker

H, W = 48, 64


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_video_model(64, 32, seed=0)


def _tracker(kind, tiny):
    if kind == "classic":
        pytest.importorskip("cv2")
        from samkit.models.classic import GrabCutModel

        return VideoTracker(GrabCutModel())
    return VideoTracker(tiny)


def _frame(i, h=H, w=W):
    """A textured frame with a bright square (something to track)."""
    rng = np.random.default_rng(i)
    f = (rng.random((h, w, 3)) * 60 + 40).astype(np.uint8)
    f[h // 4: h // 4 + h // 3, w // 4 + i: w // 4 + i + h // 3] = (220, 40, 40)
    return f


def _folder(path, frames, ext="png"):
    path.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(path / f"{i:05d}.{ext}")
    return path


def _odd_frames(n=5, odd=2):
    return [_frame(i, 60, 80) if i == odd else _frame(i) for i in range(n)]


# ----------------------------------------------------------------------------- one frame size
@pytest.mark.parametrize("kind", ["classic", "sam2"])
def test_folder_with_a_frame_of_another_size_is_refused_before_any_work(kind, tiny, tmp_path):
    d = _folder(tmp_path / "frames", _odd_frames())
    tr = _tracker(kind, tiny)
    with pytest.raises(VideoError) as err:
        tr.start(d)
    msg = str(err.value)
    assert "frame 2" in msg and "00002.png" in msg and "80 x 60" in msg and "64 x 48" in msg and "Fix:" in msg


@pytest.mark.parametrize("kind", ["classic", "sam2"])
def test_stream_with_a_frame_of_another_size_names_that_frame(kind, tiny):
    tr = _tracker(kind, tiny)
    s = tr.start(iter(_odd_frames()))
    tr.add_prompt(s, 0, 1, box=[14, 10, 34, 30])
    done = []
    with pytest.raises(VideoError, match=r"frame 2 of the stream is 80 x 60 px but frame 0 .* 64 x 48"):
        for f, _ in tr.propagate(s):
            done.append(f)
    assert done == [0, 1]  # frames before the odd one keep their results

    s = tr.start(iter(_odd_frames()))  # a prompt on the odd frame is refused, not accepted first
    with pytest.raises(VideoError, match="frame 2 of the stream"):
        tr.add_prompt(s, 2, 1, box=[14, 10, 34, 30])


@pytest.mark.parametrize("kind", ["classic", "sam2"])
def test_list_of_frames_of_different_sizes_is_refused_at_start(kind, tiny):
    with pytest.raises(VideoError, match="frame 2 of the array is 80 x 60 px"):
        _tracker(kind, tiny).start(_odd_frames())


def test_every_source_reads_through_the_size_check():
    src = open_frames(iter(_odd_frames()))
    assert src.get(0).shape == (H, W, 3) and src.size == (H, W)
    with pytest.raises(VideoError, match="frame 2"):
        src.get(2)


# ----------------------------------------------------------------------------- the image loader
def test_a_bomb_frame_is_a_video_error_naming_the_frame_and_the_limit(tmp_path, monkeypatch, tiny):
    d = _folder(tmp_path / "frames", [_frame(i) for i in range(3)])
    monkeypatch.setenv(ENV_MAX_PIXELS, str(H * W - 1))
    with pytest.raises(VideoError) as err:
        VideoTracker(tiny).start(d)
    msg = str(err.value)
    assert "frame 0" in msg and "00000.png" in msg and "decompression-bomb" in msg and ENV_MAX_PIXELS in msg
    monkeypatch.setenv(ENV_MAX_PIXELS, str(H * W))
    assert VideoTracker(tiny).start(d).height == H  # at the limit: accepted


def _exif_rotated_jpeg(path, upright):
    """Store ``upright`` turned 90 degrees with EXIF orientation 6 (viewers turn it back)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(path, exif=exif, quality=95)


@pytest.mark.parametrize("kind", ["classic", "sam2"])
def test_exif_rotated_frame_is_upright_as_load_image_gives_it_and_tracks(kind, tiny, tmp_path):
    d = _folder(tmp_path / "frames", [_frame(i) for i in range(4)], ext="jpg")
    _exif_rotated_jpeg(d / "00001.jpg", _frame(1))
    with Image.open(d / "00001.jpg") as im:
        assert im.size == (H, W)  # stored turned: W x H swapped
    tr = _tracker(kind, tiny)
    s = tr.start(d)
    frame = s.source.get(1)
    assert frame.shape == (H, W, 3) and np.array_equal(frame, load_image(d / "00001.jpg"))
    r = tr.add_prompt(s, 1, 1, box=[14, 10, 34, 30])
    assert r.masks[1].shape == (H, W)
    out = dict(tr.propagate(s))
    assert sorted(out) == [1, 2, 3] and all(res.masks[1].shape == (H, W) for res in out.values())


def test_exif_orientation_counts_in_the_up_front_size_check(tmp_path):
    d = _folder(tmp_path / "frames", [_frame(i) for i in range(3)], ext="jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored W x H like the others, but shown turned: H x W
    Image.fromarray(_frame(1)).save(d / "00001.jpg", exif=exif)
    with pytest.raises(VideoError, match=r"frame 1 \(.*00001.jpg\) is 48 x 64 px but frame 0"):
        open_frames(d)


def test_frames_get_the_image_loaders_colour_conversions(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    rgba = np.dstack([_frame(0), np.full((H, W), 100, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "00000.png")  # composited onto white, not dropped
    Image.fromarray((np.arange(H * W, dtype=np.uint16).reshape(H, W) * 20)).save(d / "00001.png")  # 16-bit
    Image.fromarray(_frame(2)).convert("P").save(d / "00002.png")
    src = open_frames(d)
    for i in range(3):
        assert np.array_equal(src.get(i), load_image(d / f"{i:05d}.png")), i
    assert not np.array_equal(src.get(0), rgba[..., :3])


def test_track_cli_reports_a_frame_of_another_size_on_one_line(tmp_path, capsys):
    pytest.importorskip("cv2")
    pytest.importorskip("typer")
    from samkit.cli.main import main

    d = _folder(tmp_path / "frames", _odd_frames())
    code = main(["track", str(d), "--box", "0,14,10,34,30,1", "--model", "classic", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "frame 2" in lines[0] and "00002.png" in lines[0] and "Fix:" in lines[0]
