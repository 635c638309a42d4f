"""Mask codecs of the server, in numpy and plain Python (no pycocotools: RLE from clients is
untrusted, and pycocotools' decoder writes past its buffer when the counts do not add up).

* COCO compressed RLE strings (the ``counts`` of ``pycocotools.mask.encode``): each run length,
  minus the run two before it from the third run on, written in 5-bit groups, least
  significant first, each group + 48 as one ASCII character, with bit 0x20 set while more
  groups follow (bit 0x10 of the last group is the sign). Column-major runs, the first run
  counts zeros (``samkit.mask_codecs`` has the uncompressed form).
* Label Studio brush RLE (``BrushLabels`` results, ``value.format == "rle"``): the H x W mask
  as an RGBA byte array (each pixel's value four times, row-major), packed bitwise, most
  significant bit first: 32 bits value count, 5 bits word size - 1, four 4-bit run-length widths
  - 1, then chunks: 1 bit "repeat", 2 bits width index, ``length - 1`` in that many bits, then
  one word (repeat) or ``length`` words (literal). Encoded here with repeat chunks only,
  word size 8 and widths 3, 4, 8, 16 (those of label-studio-converter's encoder).
* Bit masks of the bounding box (``bits_encode``; the annotator page asks its decodes in this
  form): ``{"box": [x0, y0, x1, y1], "data": base64}``, exclusive ends, ``data`` the crop's
  ``(y1 - y0) x (x1 - x0)`` pixels row-major, packed 8 to a byte, first pixel in the most
  significant bit (``np.packbits``), the last byte zero-padded; an empty mask is box ``[0, 0, 0, 0]``
  and ``data`` "". Constant time per pixel whatever the mask's shape (RLE grows with its runs).
"""
from __future__ import annotations

import base64
from typing import List, Sequence, Tuple

import numpy as np

from ..errors import InputError

MAX_RLE_CHARS = 8 * 1024 * 1024  # 8 M characters: far above any real mask string


def _runs(mask: np.ndarray) -> np.ndarray:
    """H x W bool -> column-major run lengths as int64, the first run counting zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.zeros(0, np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    return np.concatenate([[0], runs]) if flat[0] else runs


def runs_of(mask: np.ndarray) -> List[int]:
    """H x W bool -> column-major run lengths, the first run counting zeros (0 if the first pixel is set)."""
    return [int(r) for r in _runs(mask)]


def counts_to_string(counts: Sequence[int]) -> str:
    """Run lengths -> COCO compressed string (vectorised: every count's 5-bit groups at once)."""
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    if c.size == 0:
        return ""
    x = c.copy()
    x[3:] -= c[1:-2]  # each run minus the run two before it, from the third run on
    groups = np.zeros((8, c.size), np.uint8)  # int64 deltas of 40-bit counts need at most 8 groups
    live = np.ones(c.size, bool)  # still writing groups for this count
    keep = np.zeros((8, c.size), bool)
    for k in range(8):
        g = (x & 0x1F).astype(np.uint8)
        x >>= 5
        more = np.where(g & 0x10, x != -1, x != 0) & live
        groups[k] = (g | np.where(more, 0x20, 0).astype(np.uint8)) + 48
        keep[k] = live
        live = more
        if not live.any():
            break
    return groups.T[keep.T].tobytes().decode("ascii")


def string_to_counts(text: str) -> List[int]:
    """COCO compressed string -> run lengths (``InputError`` on characters outside the alphabet)."""
    if not isinstance(text, str) or len(text) > MAX_RLE_CHARS:
        raise InputError("an RLE 'counts' must be a string of at most 8 M characters. Fix: send the counts of "
                         "pycocotools.mask.encode (or samkit's Masks.to_coco_rle()).")
    counts: List[int] = []
    p, n = 0, len(text)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise InputError("the RLE string ends inside a number. Fix: send the complete counts string.")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise InputError(f"the RLE string holds the character {text[p]!r}, outside COCO's alphabet. Fix: "
                                 "send the counts of pycocotools.mask.encode.")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
            if k > 8:
                raise InputError("the RLE string holds a number over 40 bits. Fix: send a valid counts string.")
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode(mask: np.ndarray) -> dict:
    """H x W bool -> ``{"size": [H, W], "counts": str}`` (identical to pycocotools' encoding)."""
    m = np.asarray(mask, dtype=bool)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": counts_to_string(_runs(m))}


def decode(rle, size=None) -> np.ndarray:
    """COCO RLE dict (compressed string or list counts) -> H x W bool, checked: the counts must
    be non-negative and cover exactly H x W pixels, and ``size`` (H, W), when given, must match."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise InputError("a mask must be a COCO RLE {'size': [H, W], 'counts': ...}. Fix: send it in that form.") \
            from None
    if size is not None and (h, w) != tuple(int(v) for v in size):
        raise InputError(f"the mask is {h} x {w} but the image is {size[0]} x {size[1]}. Fix: send a mask of the "
                         "image's size.")
    if h <= 0 or w <= 0 or h * w > 1 << 31:
        raise InputError(f"the mask size {h} x {w} is not a valid image size. Fix: send the image's size.")
    c = np.asarray(string_to_counts(counts) if isinstance(counts, str) else counts, dtype=np.int64).reshape(-1)
    if (c < 0).any() or int(c.sum()) != h * w:
        raise InputError(f"the RLE counts cover {int(c.sum())} pixels (or one is negative) but the mask has {h * w}. "
                         "Fix: send the counts and size of the same mask.")
    flat = np.repeat(np.arange(len(c)) % 2 == 1, c)
    return np.ascontiguousarray(flat.reshape(w, h).T)


# --------------------------------------------------------------------------- bit masks of the box


def bits_encode(mask: np.ndarray, box: Sequence[float] = None) -> dict:
    """H x W bool -> ``{"box": [x0, y0, x1, y1], "data": base64}`` (module docstring). ``box``:
    the mask's bounding box when the caller has it (``Masks.boxes``), else computed here."""
    m = np.asarray(mask, dtype=bool)
    if box is None:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        box = (0, 0, 0, 0) if rows.size == 0 else (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        return {"box": [0, 0, 0, 0], "data": ""}
    packed = np.packbits(m[y0:y1, x0:x1], axis=None)
    return {"box": [x0, y0, x1, y1], "data": base64.b64encode(packed.tobytes()).decode("ascii")}


def bits_decode(item: dict, size: Tuple[int, int]) -> np.ndarray:
    """``bits_encode``'s dict and the image size (H, W) -> H x W bool (``InputError`` when they disagree)."""
    h, w = (int(v) for v in size)
    try:
        x0, y0, x1, y1 = (int(v) for v in item["box"])
        packed = np.frombuffer(base64.b64decode(item["data"], validate=True), np.uint8)
    except (KeyError, TypeError, ValueError):
        raise InputError("a bit mask must be {'box': [x0, y0, x1, y1], 'data': base64}. Fix: send it in that "
                         "form.") from None
    out = np.zeros((h, w), bool)
    if (x0, y0, x1, y1) == (0, 0, 0, 0) and packed.size == 0:
        return out
    n = (y1 - y0) * (x1 - x0)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h) or packed.size != (n + 7) // 8:
        raise InputError(f"the bit mask's box {[x0, y0, x1, y1]} or its {packed.size} bytes do not fit a {h} x {w} "
                         "image. Fix: send the box and data of the same mask.")
    out[y0:y1, x0:x1] = np.unpackbits(packed, count=n).reshape(y1 - y0, x1 - x0).astype(bool)
    return out


# --------------------------------------------------------------------------- Label Studio brush RLE

_LS_WIDTHS = (3, 4, 8, 16)


def _bits(value: int, width: int) -> str:
    return format(value, f"0{width}b")


def brush_encode(mask: np.ndarray) -> List[int]:
    """H x W bool -> Label Studio brush RLE bytes (a list of ints 0..255), 255 where the mask is set."""
    m = np.asarray(mask, dtype=bool)
    flat = m.ravel(order="C")
    total = flat.size * 4
    head = _bits(total, 32) + _bits(8 - 1, 5) + "".join(_bits(w - 1, 4) for w in _LS_WIDTHS)
    parts = [head]
    if flat.size:
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        starts = np.concatenate([[0], change])
        lengths = np.diff(np.concatenate([starts, [flat.size]])) * 4
        for start, length in zip(starts, lengths):
            value = 255 if flat[start] else 0
            left = int(length)
            while left > 0:
                take = min(left, 1 << 16)
                idx = next(i for i, w in enumerate(_LS_WIDTHS) if take <= 1 << w)
                parts.append("1" + _bits(idx, 2) + _bits(take - 1, _LS_WIDTHS[idx]) + _bits(value, 8))
                left -= take
    stream = "".join(parts)
    stream += "0" * (-len(stream) % 8)
    return np.packbits(np.frombuffer(stream.encode("ascii"), np.uint8) - 48).tolist()


def brush_decode(data: Sequence[int], height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> H x W bool (alpha channel > 0), for checks and imports."""
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8))
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > bits.size:
            raise InputError("the brush RLE ends early. Fix: send the complete rle list.")
        v = 0
        for b in bits[pos:pos + n]:
            v = (v << 1) | int(b)
        pos += n
        return v

    num, word = read(32), read(5) + 1
    widths = [read(4) + 1 for _ in range(4)]
    if num != height * width * 4:
        raise InputError(f"the brush RLE holds {num} values, not {height} x {width} x 4. Fix: pass the image size.")
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeat = read(1)
        j = min(num, i + 1 + read(widths[read(2)]))
        if repeat:
            out[i:j] = read(word)
        else:
            for t in range(i, j):
                out[t] = read(word)
        i = j
    return out.reshape(height, width, 4)[..., 3] > 0
