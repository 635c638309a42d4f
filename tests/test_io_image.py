"""samkit.io: load_image (sources, modes, EXIF, bad files, bombs), image_size, atomic writes."""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samkit.errors import ImageError, InputError
from samkit.io import (
    DEFAULT_MAX_PIXELS,
    atomic_write_bytes,
    atomic_write_text,
    example_image_path,
    image_size,
    load_image,
)

# --------------------------------------------------------------------------- helpers


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (1-bit gray) but carries no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b""))
            + _png_chunk(b"IEND", b""))


def _rgb(rng_seed: int = 0, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(rng_seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_rgb(a: np.ndarray, h: int, w: int) -> None:
    assert a.dtype == np.uint8 and a.shape == (h, w, 3) and a.flags.c_contiguous


# --------------------------------------------------------------------------- modes (expected values from the rules)


def _mode_cases():
    """(id, PIL image, expected H x W x 3 uint8) built from pixel values with known answers."""
    cases = []
    g = np.array([[0, 64, 255]], np.uint8)
    cases.append(("L", Image.fromarray(g), np.repeat(g[..., None], 3, 2)))
    b = np.array([[True, False, True]])
    cases.append(("1", Image.fromarray(b).convert("1"), np.repeat((b * 255).astype(np.uint8)[..., None], 3, 2)))
    cmyk = Image.frombytes("CMYK", (3, 1), bytes([0, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 255]))
    cases.append(("CMYK", cmyk, np.array([[[255, 255, 255], [0, 255, 255], [0, 0, 0]]], np.uint8)))
    pal = Image.frombytes("P", (3, 1), bytes([0, 1, 2]))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    cases.append(("P", pal, np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)))
    palt = pal.copy()
    palt.info["transparency"] = 1  # green index fully transparent -> white background
    cases.append(("P+transparency", palt, np.array([[[255, 0, 0], [255, 255, 255], [0, 0, 255]]], np.uint8)))
    la = Image.frombytes("LA", (3, 1), bytes([0, 255, 0, 128, 200, 0]))
    # L=0, A=128 over white: (0*128 + 255*127 + 127) // 255 = 127
    cases.append(("LA", la, np.array([[[0] * 3, [127] * 3, [255] * 3]], np.uint8)))
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [200, 100, 0, 51]]], np.uint8)
    # 200*51 + 255*204 -> (10200 + 52020 + 127) // 255 = 244; 100 -> 224; 0 -> 204
    e_rgba = np.array([[[10, 20, 30], [255, 255, 255], [244, 224, 204]]], np.uint8)
    cases.append(("RGBA", Image.fromarray(rgba), e_rgba))
    v16 = np.array([[0, 128, 129, 1000, 32896, 65535]], np.uint16)
    e16 = np.array([[0, 0, 1, 4, 128, 255]], np.uint8)  # round(v / 257): no clipping at 255
    cases.append(("I;16", Image.fromarray(v16), np.repeat(e16[..., None], 3, 2)))
    big_endian = Image.frombytes("I;16B", (6, 1), v16.astype(">u2").tobytes())
    cases.append(("I;16B", big_endian, np.repeat(e16[..., None], 3, 2)))
    i16 = Image.fromarray(v16.astype(np.int32))
    cases.append(("I(16-bit range)", i16, np.repeat(e16[..., None], 3, 2)))
    i8 = np.array([[0, 17, 255]], np.int32)
    cases.append(("I(8-bit range)", Image.fromarray(i8), np.repeat(i8.astype(np.uint8)[..., None], 3, 2)))
    iw = np.array([[-100, 0, 100]], np.int32)  # stretched from [-100, 100] to [0, 255]
    cases.append(("I(stretch)", Image.fromarray(iw), np.repeat(np.array([[0, 128, 255]], np.uint8)[..., None], 3, 2)))
    f01 = np.array([[0.0, 0.5, 1.0]], np.float32)
    cases.append(("F[0,1]", Image.fromarray(f01), np.repeat(np.array([[0, 128, 255]], np.uint8)[..., None], 3, 2)))
    fw = np.array([[-2.0, 0.0, 2.0, np.nan]], np.float32)
    e_fw = np.repeat(np.array([[0, 128, 255, 0]], np.uint8)[..., None], 3, 2)
    cases.append(("F(stretch,nan)", Image.fromarray(fw), e_fw))
    return cases


MODE_CASES = _mode_cases()


@pytest.mark.parametrize("name,im,expected", MODE_CASES, ids=[c[0] for c in MODE_CASES])
def test_modes_from_pil(name, im, expected):
    out = load_image(im)
    _check_rgb(out, *expected.shape[:2])
    np.testing.assert_array_equal(out, expected)


# file formats that can store each mode losslessly
_FILE_FORMAT = {"L": "PNG", "1": "PNG", "CMYK": "TIFF", "P": "PNG", "P+transparency": "PNG", "LA": "PNG",
                "RGBA": "PNG", "I;16": "PNG", "I;16B": "TIFF", "I(16-bit range)": "TIFF", "I(8-bit range)": "TIFF",
                "I(stretch)": "TIFF", "F[0,1]": "TIFF", "F(stretch,nan)": "TIFF"}


@pytest.mark.parametrize("name,im,expected", MODE_CASES, ids=[c[0] for c in MODE_CASES])
def test_modes_from_files(tmp_path, name, im, expected):
    fmt = _FILE_FORMAT[name]
    kw = {"transparency": 1} if name == "P+transparency" else {}
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(_encode(im, fmt, **kw))
    np.testing.assert_array_equal(load_image(path), expected)
    np.testing.assert_array_equal(load_image(path.read_bytes()), expected)


@pytest.mark.parametrize("alpha,expected", [("white", [255, 255, 255]), ("black", [0, 0, 0]), ("drop", [10, 20, 30])])
def test_alpha_policy(alpha, expected):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = [10, 20, 30]  # fully transparent everywhere
    np.testing.assert_array_equal(load_image(rgba, alpha=alpha)[0, 0], expected)
    np.testing.assert_array_equal(load_image(Image.fromarray(rgba), alpha=alpha)[1, 1], expected)


def test_bad_alpha_argument():
    with pytest.raises(InputError, match="white"):
        load_image(_rgb(), alpha="pink")


def test_gif_first_frame_and_transparency(tmp_path):
    frames = [Image.new("P", (4, 4), i) for i in range(2)]
    for f in frames:
        f.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(load_image(path)[0, 0], [255, 0, 0])


# --------------------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation,corner", [(1, "tl"), (3, "br"), (6, "tr"), (8, "bl")])
def test_exif_orientation(tmp_path, orientation, corner):
    stored = np.full((20, 40, 3), 255, np.uint8)  # H=20, W=40 stored
    stored[:6, :6] = [255, 0, 0]  # red marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rot.jpg"
    path.write_bytes(_encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif))
    out = load_image(path)
    upright_hw = (40, 20) if orientation in (6, 8) else (20, 40)
    _check_rgb(out, *upright_hw)
    assert image_size(path) == upright_hw
    h, w = upright_hw
    blocks = {"tl": out[:4, :4], "tr": out[:4, w - 4:], "bl": out[h - 4:, :4], "br": out[h - 4:, w - 4:]}
    for name, block in blocks.items():
        red = block[..., 0].mean() > 200 and block[..., 1].mean() < 60
        assert red == (name == corner), (name, block.mean(axis=(0, 1)))


# --------------------------------------------------------------------------- sources


def test_sources_agree(tmp_path):
    arr = _rgb(1)
    png = _encode(Image.fromarray(arr), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(png)
    for src in (path, str(path), png, bytearray(png), memoryview(png), io.BytesIO(png), Image.fromarray(arr), arr):
        out = load_image(src)
        np.testing.assert_array_equal(out, arr)
    assert not np.shares_memory(load_image(arr), arr)


@pytest.mark.parametrize("shape", [(5, 7, 3), (5, 7), (5, 7, 1), (5, 7, 4)])
def test_array_layouts(shape):
    arr = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    if len(shape) == 3 and shape[2] == 4:
        arr[..., 3] = 255  # opaque: RGB kept exactly
    out = load_image(arr)
    _check_rgb(out, 5, 7)
    ref = arr if arr.ndim == 2 else arr[..., 0] if arr.shape[2] == 1 else None
    if ref is not None:
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], ref)
    else:
        np.testing.assert_array_equal(out, arr[..., :3])


def test_non_contiguous_array_becomes_contiguous():
    arr = _rgb(3)[:, ::-1]
    out = load_image(arr)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    "arr,match",
    [
        (np.zeros((4, 4, 3), np.float32), "float32.*255"),
        (np.zeros((4, 4, 3), np.float64), "float64"),
        (np.zeros((4, 4, 3), np.uint16), "uint16.*257"),
        (np.zeros((4, 4, 3), bool), "bool"),
        (np.zeros((4, 4, 3), np.int64), "int64"),
        (np.zeros((3, 10, 12), np.uint8), "transpose"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((1, 4, 4, 3), np.uint8), "shape"),
    ],
)
def test_bad_arrays(arr, match):
    with pytest.raises(InputError, match=match):
        load_image(arr)


def test_zero_size_array():
    with pytest.raises(ImageError, match="zero size"):
        load_image(np.zeros((0, 5, 3), np.uint8))


def test_unsupported_source_type():
    with pytest.raises(InputError, match="file path"):
        load_image([[1, 2, 3]])


# --------------------------------------------------------------------------- bad files


def _bad_files(tmp_path: Path):
    jpg = _encode(Image.fromarray(_rgb(4, 64, 64)), "JPEG", quality=90)
    png = _encode(Image.fromarray(_rgb(5, 64, 64)), "PNG")
    files = {
        "truncated.jpg": (jpg[: len(jpg) // 2], "truncated"),
        "header_only.jpg": (jpg[:12], "truncated|not an image"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "cut_header.png": (png[:30], "not an image"),
        "text.jpg": (b"this is not an image\n" * 20, "not an image"),
        "page.png": (b"<!DOCTYPE html><html><body>404</body></html>", "not an image"),
        "empty.jpg": (b"", "empty"),
        "zero_width.png": (_header_only_png(0, 10), "zero-size|not an image"),
        "bomb.png": (_header_only_png(30000, 30000), r"30000 x 30000.*over the limit"),
    }
    out = []
    for name, (data, match) in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        out.append((name, p, match))
    return out


BAD_NAMES = ["truncated.jpg", "header_only.jpg", "truncated.png", "cut_header.png", "text.jpg", "page.png",
             "empty.jpg", "zero_width.png", "bomb.png"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_files_raise_image_error(tmp_path, name):
    cases = {n: (p, m) for n, p, m in _bad_files(tmp_path)}
    path, match = cases[name]
    with pytest.raises(ImageError, match=match) as info:
        load_image(path)
    assert "Fix:" in str(info.value)
    if path.stat().st_size:
        with pytest.raises(ImageError):
            load_image(path.read_bytes())


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="does not exist.*Fix"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_bomb_rejected_before_decoding():
    # The fake file has no pixel data: decoding it would report "truncated", not the limit.
    with pytest.raises(ImageError, match="over the limit of 178,956,970") as info:
        load_image(_header_only_png(20000, 10000))
    assert "max_pixels" in str(info.value) and "SAMKIT_MAX_IMAGE_PIXELS" in str(info.value)
    assert image_size(_header_only_png(20000, 10000)) == (10000, 20000)  # header read still works
    assert DEFAULT_MAX_PIXELS == 178_956_970


def test_limit_argument_and_env(monkeypatch):
    png = _encode(Image.fromarray(_rgb(6, 100, 100)), "PNG")
    assert load_image(png, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageError, match="10,000 px, over the limit of 9,999"):
        load_image(png, max_pixels=9_999)
    monkeypatch.setenv("SAMKIT_MAX_IMAGE_PIXELS", "5000")
    with pytest.raises(ImageError, match="over the limit of 5,000"):
        load_image(png)
    assert load_image(png, max_pixels=20_000).shape == (100, 100, 3)  # argument wins over env
    monkeypatch.setenv("SAMKIT_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(InputError, match="SAMKIT_MAX_IMAGE_PIXELS"):
        load_image(png)
    with pytest.raises(InputError, match="positive"):
        load_image(png, max_pixels=0)


def test_pil_global_limit(monkeypatch):
    png = _encode(Image.fromarray(_rgb(7, 100, 100)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL itself would refuse > 2000 px
    assert load_image(png).shape == (100, 100, 3)  # our (higher) default limit decides
    assert Image.MAX_IMAGE_PIXELS == 1000  # and PIL's setting is restored
    with pytest.raises(ImageError, match="too many pixels|over the limit"):
        load_image(png, max_pixels=1500)  # PIL's DecompressionBombError is an ImageError


def test_zero_size_pil_image():
    with pytest.raises(ImageError, match="zero size"):
        load_image(Image.new("RGB", (0, 5)))


# --------------------------------------------------------------------------- example image, image_size


def test_example_image_matches_golden():
    path = example_image_path()
    img = load_image(path)
    _check_rgb(img, 267, 400)
    assert image_size(path) == (267, 400)
    golden = Path(__file__).resolve().parents[2] / "shared" / "parity" / "golden" / "sam_vit_b.safetensors"
    env = os.environ.get("SAMKIT_PARITY_DIR")
    if env:
        golden = Path(env) / "golden" / "sam_vit_b.safetensors"
    if golden.exists():
        from safetensors.numpy import load_file

        np.testing.assert_array_equal(img, load_file(str(golden))["image_0"])


def test_image_size_sources():
    arr = _rgb(8, 11, 13)
    assert image_size(arr) == (11, 13)
    assert image_size(Image.fromarray(arr)) == (11, 13)
    assert image_size(_encode(Image.fromarray(arr), "PNG")) == (11, 13)
    with pytest.raises(ImageError):
        image_size(b"not an image at all")


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_creates_and_replaces(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "one")
    assert target.read_text() == "one"
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert (target.stat().st_mode & 0o777) == 0o640  # permissions of the replaced file kept
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temp files left


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
