"""Mask upsampling as two banded matrix products.

Every family turns its low-res logits ``B x K x h x w`` into full-resolution logits by steps
that are linear along each axis on their own: SAM's bilinear to the frame, crop, bilinear to the
original size; SAM 2's bilinear and EfficientSAM's bicubic straight to the original size. So the
whole postprocessing is ``out = R_y @ low @ R_x^T`` with one ``H x h`` and one ``W x w`` matrix,
made once per image size by running the reference steps (``F.interpolate`` itself) on an
identity matrix in float64. Each output row of ``R`` is non-zero on a few neighbouring inputs
only, so the products run block by block: ``bs`` consecutive outputs read one window of ``win``
inputs, and all blocks go through one batched matrix product. On a 1200 x 1800 image that is a
few times faster than the two (SAM) or one (EfficientSAM: bicubic) ``F.interpolate`` calls, with
the same values up to float rounding (|difference| ~1e-6 of the logits' scale).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

#: outputs per block: the window grows with it, the number of blocks shrinks
BLOCK = 32
#: :func:`resample_mask` interpolates tile by tile up to this share of tiles in doubt
DOUBT_SHARE = 0.25


def _interp_rows(m: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """``n x k`` float64 -> ``size x k``: the reference interpolation along the first axis only."""
    return F.interpolate(m[None, None], (size, m.shape[1]), mode=mode, align_corners=False)[0, 0]


@functools.lru_cache(maxsize=64)
def axis_matrix(n_in: int, n_out: int, mode: str, frame: Optional[int] = None,
                valid: Optional[int] = None) -> torch.Tensor:
    """``n_out x n_in`` float64 map of one axis. ``frame``/``valid`` given: SAM's rule
    (``mode`` to ``frame``, keep the first ``valid``, ``mode`` to ``n_out``); else ``mode``
    straight to ``n_out``. Made by running ``F.interpolate`` on float32 identities."""
    # float32 like the logits: the interpolation then computes its source positions and weights
    # in float32 exactly as it does for them (float64 weights differ by ~1e-5 at large indices)
    with torch.inference_mode(False), torch.no_grad():
        m = torch.eye(n_in, dtype=torch.float32)
        if frame is not None:
            first = _interp_rows(m, frame, mode)[:valid].double()
            return _interp_rows(torch.eye(valid, dtype=torch.float32), n_out, mode).double() @ first
        return _interp_rows(m, n_out, mode).double()


@functools.lru_cache(maxsize=64)
def _band(n_in: int, n_out: int, mode: str, frame: Optional[int], valid: Optional[int],
          block: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``axis_matrix`` as blocks: (window start per block ``nb`` int64, weights ``nb x block x win``
    float32); block ``i`` = outputs ``i*block ..`` read inputs ``start[i] .. start[i] + win``."""
    m = axis_matrix(n_in, n_out, mode, frame, valid)
    nb = -(-n_out // block)
    pad = torch.zeros(nb * block - n_out, n_in, dtype=m.dtype)
    blocks = torch.cat([m, pad]).view(nb, block, n_in)
    nz = blocks.abs().sum(1) != 0  # nb x n_in: inputs each block reads
    first = torch.where(nz.any(1), nz.float().argmax(1), torch.zeros(nb, dtype=torch.long))
    last = n_in - 1 - torch.where(nz.any(1), nz.flip(1).float().argmax(1), torch.zeros(nb, dtype=torch.long))
    win = int((last - first).max()) + 1
    start = torch.clamp(first, max=n_in - win)
    idx = _windows(start, win, start.device)  # nb x win
    weights = torch.gather(blocks, 2, idx[:, None, :].expand(nb, block, win)).float()
    return start, weights


def _windows(start: torch.Tensor, win: int, device: torch.device) -> torch.Tensor:
    """Input indices ``start[i] .. start[i] + win`` of every block: ``nb x win``."""
    return (start[:, None] + torch.arange(win)[None]).to(device)


def _rows(x: torch.Tensor, band: Tuple[torch.Tensor, torch.Tensor], n_out: int) -> torch.Tensor:
    """``N x n_in x W`` -> ``N x n_out x W``: the band applied along the rows."""
    start, weights = band
    nb, block, win = weights.shape
    idx = _windows(start, win, x.device).reshape(-1)
    windows = x[:, idx].view(x.shape[0], nb, win, x.shape[-1])  # N x nb x win x W
    out = torch.matmul(weights.to(x.device), windows)  # N x nb x block x W
    return out.view(x.shape[0], nb * block, x.shape[-1])[:, :n_out]


def _cols(x: torch.Tensor, band: Tuple[torch.Tensor, torch.Tensor], n_out: int) -> torch.Tensor:
    """``N x H x n_in`` -> ``N x H x n_out``: the band applied along the columns."""
    start, weights = band
    nb, block, win = weights.shape
    idx = _windows(start, win, x.device).reshape(-1)
    windows = x[..., idx].view(x.shape[0], x.shape[1], nb, win).transpose(1, 2)  # N x nb x H x win
    out = torch.matmul(windows, weights.to(x.device).transpose(1, 2))  # N x nb x H x block
    return out.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], nb * block)[..., :n_out]


def resample(low: torch.Tensor, size: Tuple[int, int], mode: str = "bilinear", frame: Optional[int] = None,
             valid: Optional[Tuple[int, int]] = None, block: int = BLOCK) -> torch.Tensor:
    """``... x h x w`` logits -> ``... x H x W`` (``size``), the same function as
    ``F.interpolate(low, size, mode=mode, align_corners=False)`` or, with ``frame`` and
    ``valid`` (h', w'), SAM's ``interpolate to frame x frame, crop [:h', :w'], interpolate to
    size``. ``mode``: "bilinear" or "bicubic". Float rounding differs (~1e-6)."""
    x, rb, cb, (out_h, out_w) = _prepare(low, size, mode, frame, valid, block)
    # columns first (a small h x W result), rows last: their batched product writes the large
    # output in place, row-major, with no reordering copy
    x = _rows(_cols(x, cb, out_w), rb, out_h)
    return x.reshape(*low.shape[:-2], out_h, out_w).to(low.dtype)


def _prepare(low: torch.Tensor, size, mode: str, frame: Optional[int], valid, block: int):
    """Checks ``mode`` -> (``low`` as float ``N x h x w``, row band, column band, (H, W))."""
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    h, w = low.shape[-2:]
    out_h, out_w = int(size[0]), int(size[1])
    vy, vx = (None, None) if valid is None else (int(valid[0]), int(valid[1]))
    rb, cb = _band(h, out_h, mode, frame, vy, block), _band(w, out_w, mode, frame, vx, block)
    return low.reshape(-1, h, w).float(), rb, cb, (out_h, out_w)


def _negative_mass(band: Tuple[torch.Tensor, torch.Tensor]) -> float:
    """Largest sum of the negative weights of one output (0 for bilinear)."""
    return float((-band[1].clamp(max=0)).sum(-1).max())


def _tile_extremes(low: torch.Tensor, rb, cb) -> Tuple[torch.Tensor, torch.Tensor]:
    """Min and max of ``low`` (N x h x w) over each tile's input window: N x nb_r x nb_c each."""
    (rs, rw), (cs, cw) = rb, cb
    ridx = _windows(rs, rw.shape[2], low.device).reshape(-1)
    cidx = _windows(cs, cw.shape[2], low.device).reshape(-1)
    rows = low[:, ridx].view(low.shape[0], rs.shape[0], rw.shape[2], -1)  # N x nb_r x win_r x w
    lo, hi = rows.amin(2), rows.amax(2)
    lo = lo[..., cidx].view(*lo.shape[:2], cs.shape[0], cw.shape[2]).amin(-1)
    hi = hi[..., cidx].view(*hi.shape[:2], cs.shape[0], cw.shape[2]).amax(-1)
    return lo, hi


def resample_mask(low: torch.Tensor, size: Tuple[int, int], mode: str = "bilinear", frame: Optional[int] = None,
                  valid: Optional[Tuple[int, int]] = None, block: int = BLOCK) -> torch.Tensor:
    """``resample(low, ...) > 0`` as a bool ``... x H x W`` mask, computed only where it is in
    doubt. The output is cut into ``block`` x ``block`` tiles; a tile whose input window is all
    above (or all at or below) zero by more than the interpolation's negative weights can undo
    (none for bilinear: its outputs are convex combinations) takes that sign whole; the other
    tiles (along the mask's boundary) are interpolated as in :func:`resample`, or the whole
    output when more than ``DOUBT_SHARE`` of the tiles are in doubt (noise-like logits)."""
    x, rb, cb, (out_h, out_w) = _prepare(low, size, mode, frame, valid, block)
    lo, hi = _tile_extremes(x, rb, cb)
    ny, nx = _negative_mass(rb), _negative_mass(cb)
    neg = (1 + ny) * nx + ny * (1 + nx)  # negative mass of the 2-d weights
    spread = (hi - lo) * neg + 1e-5 * torch.maximum(hi.abs(), lo.abs()) * float(neg > 0)
    sure_pos, sure_neg = lo - spread > 0, hi + spread <= 0
    n, nr, nc = lo.shape
    doubt = ~(sure_pos | sure_neg)
    if int(doubt.sum()) > DOUBT_SHARE * doubt.numel():  # ragged logits: the plain products are cheaper
        return resample(low, size, mode, frame=frame, valid=valid, block=block) > 0
    out = sure_pos[:, :, None, :, None].expand(n, nr, block, nc, block).clone()  # N x nb_r x bs x nb_c x bs
    todo = torch.nonzero(doubt)
    if todo.shape[0]:
        k, i, j = todo.unbind(1)
        (rs, rw), (cs, cw) = rb, cb
        rw, cw = rw.to(x.device), cw.to(x.device)
        ri = _windows(rs, rw.shape[2], x.device)[i]  # T x win_r
        ci = _windows(cs, cw.shape[2], x.device)[j]  # T x win_c
        windows = x[k[:, None, None], ri[:, :, None], ci[:, None, :]]  # T x win_r x win_c
        tiles = torch.bmm(torch.bmm(rw[i], windows), cw[j].transpose(1, 2))  # T x bs x bs
        out[k, i, :, j, :] = tiles > 0
    out = out.view(n, nr * block, nc * block)[:, :out_h, :out_w].contiguous()
    return out.view(*low.shape[:-2], out_h, out_w)
