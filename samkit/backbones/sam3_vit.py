"""SAM 3's vision backbone: the Perception Encoder ViT and its two simple-FPN necks
(Carion et al., "SAM 3: Segment Anything with Concepts", arXiv:2511.16719).

Trunk facts (official ``sam3.model.vitdet.ViT`` as built by ``model_builder``): 1008 px input,
14 x 14 patch conv without bias (72 x 72 tokens), an absolute position embedding pretrained at
336 px with a class-token slot (``pos_embed``: ``1 x 577 x 1024``) whose 24 x 24 grid is TILED
(not resized) over the token grid, LayerNorm (eps 1e-5) before the blocks and none after;
32 pre-norm blocks of width 1024, 16 heads, GELU MLP of 4736 (ratio 4.625), q/k/v with bias;
blocks 7, 15, 23, 31 attend globally, the others in 24 x 24 windows (zero padding). Every block
rotates q and k with 2-D axial RoPE (theta 10000, channel pairs, x then y frequencies): windowed
blocks on the 24 x 24 window grid, global blocks on the 72 x 72 grid with positions scaled by
24/72 (``use_interp_rope``). The checkpoint stores those tables (``attn.freqs_cis``, complex);
they are recomputed here. Only the last block's output is used.

Neck facts (``Sam3DualViTDetNeck``): four levels from the one 72 x 72 map, scales 4, 2, 1,
0.5: (transposed 2x2 conv, GELU, transposed 2x2 conv) / transposed 2x2 conv / nothing /
2x2 max-pool, then 1x1 conv -> 256 and 3x3 conv; a second neck of the same shape
(``sam2_convs``) feeds the interactive/tracker head. The coarsest level is dropped
(``scalp=1``); the sine position encoding (128 frequencies per axis, normalised) goes with each
level.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import PatchEmbed, PositionEmbeddingSine
from ..layers.windows import window_partition, window_unpartition
from ..memory.attention import apply_rope, axial_rope_angles


def tile_abs_pos(pos: torch.Tensor, has_cls_token: bool, hw: Tuple[int, int]) -> torch.Tensor:
    """``1 x N x C`` pretrained grid (after an optional class slot) repeated over ``hw``:
    ``1 x h x w x C`` (``get_abs_pos(tiling=True)``: tile, then crop to ``hw``)."""
    if has_cls_token:
        pos = pos[:, 1:]
    side = int(round(pos.shape[1] ** 0.5))
    if side * side != pos.shape[1]:
        raise ValueError(f"position embedding with {pos.shape[1]} slots is not a square grid")
    grid = pos.reshape(1, side, side, -1)
    h, w = hw
    if (h, w) == (side, side):
        return grid
    return grid.repeat(1, h // side + 1, w // side + 1, 1)[:, :h, :w]


class RopeAttention(nn.Module):
    """Self-attention of one ViT block (keys ``qkv``, ``proj``) with axial RoPE on an
    ``grid x grid`` token grid whose positions are scaled by ``rope_scale``.
    ``B x H x W x C -> B x H x W x C`` with H = W = ``grid``."""

    def __init__(self, dim: int, num_heads: int, grid: int, rope_scale: float = 1.0,
                 rope_theta: float = 10000.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.grid = grid
        self.rope_scale = rope_scale
        self.rope_theta = rope_theta
        self._tables: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}

    def rope_tables(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each ``grid^2 x head_dim/2`` (built once per device)."""
        key = str(device)
        if key not in self._tables:
            hd = self.qkv.out_features // 3 // self.num_heads
            self._tables[key] = axial_rope_angles(hd, self.grid, self.grid, self.rope_theta, device, self.rope_scale)
        return self._tables[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # B x heads x HW x hd
        cos, sin = self.rope_tables(x.device)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2`` (timm's ``Mlp`` keys)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block; ``window`` > 0: attention inside ``window x window`` windows."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, window: int, grid: int, rope_grid: int,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.window = window
        att_grid = window if window > 0 else grid
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = RopeAttention(dim, num_heads, att_grid, rope_scale=rope_grid / att_grid)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window)
            x = window_unpartition(self.attn(x), self.window, pad_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Sam3ViT(nn.Module):
    """``B x 3 x S x S`` -> ``B x C x S/14 x S/14`` (the last block's tokens).

    ``img_size`` fixes the global blocks' RoPE grid; ``pretrain_img_size`` the ``pos_embed``
    grid (plus one class slot); ``window`` both the window side and the RoPE scale of the
    global blocks (``window / grid``)."""

    def __init__(self, img_size: int = 1008, patch_size: int = 14, embed_dim: int = 1024, depth: int = 32,
                 num_heads: int = 16, mlp_hidden: int = 4736, window: int = 24,
                 global_blocks: Sequence[int] = (7, 15, 23, 31), pretrain_img_size: int = 336) -> None:
        super().__init__()
        grid = img_size // patch_size
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(3, embed_dim, patch_size)
        self.patch_embed.proj.bias = None  # bias_patch_embed=False upstream
        n = (pretrain_img_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.ln_pre = nn.LayerNorm(embed_dim, eps=1e-5)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_hidden, 0 if i in global_blocks else window, grid, window)
            for i in range(depth))
        self.channel_list = [embed_dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # B x h x w x C
        x = x + tile_abs_pos(self.pos_embed, True, (x.shape[1], x.shape[2]))
        x = self.ln_pre(x)
        for blk in self.blocks:
            x = blk(x)
        return x.permute(0, 3, 1, 2)


def simple_fpn_level(dim: int, d_model: int, scale: float) -> nn.Sequential:
    """One level of the ViTDet simple FPN (upstream module names, so ``convs.N.<name>`` keys)."""
    mods: List[Tuple[str, nn.Module]] = []
    if scale == 4.0:
        mods += [("dconv_2x2_0", nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)), ("gelu", nn.GELU()),
                 ("dconv_2x2_1", nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2))]
        out = dim // 4
    elif scale == 2.0:
        mods.append(("dconv_2x2", nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)))
        out = dim // 2
    elif scale == 1.0:
        out = dim
    elif scale == 0.5:
        mods.append(("maxpool_2x2", nn.MaxPool2d(2, stride=2)))
        out = dim
    else:
        raise ValueError(f"scale factor {scale} is not one of 4, 2, 1, 0.5")
    mods += [("conv_1x1", nn.Conv2d(out, d_model, 1)), ("conv_3x3", nn.Conv2d(d_model, d_model, 3, padding=1))]
    seq = nn.Sequential()
    for name, mod in mods:
        seq.add_module(name, mod)
    return seq


class Sam3VisionBackbone(nn.Module):
    """Trunk + detector neck (``convs``) + tracker neck (``sam2_convs``), upstream names.

    ``forward(x)`` -> dict: ``detector_fpn`` / ``tracker_fpn`` (lists of ``B x 256 x h x w``,
    finest first, the coarsest level dropped: 288, 144, 72 at 1008 px) and ``pos`` (their sine
    encodings, the same for both necks). ``necks`` chooses which necks run."""

    def __init__(self, trunk: nn.Module, d_model: int = 256, scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 scalp: int = 1) -> None:
        super().__init__()
        dim = trunk.channel_list[-1]
        self.trunk = trunk
        self.position_encoding = PositionEmbeddingSine(d_model, normalize=True)
        self.convs = nn.ModuleList(simple_fpn_level(dim, d_model, s) for s in scale_factors)
        self.sam2_convs = nn.ModuleList(simple_fpn_level(dim, d_model, s) for s in scale_factors)
        self.scalp = scalp

    def run_neck(self, convs: nn.ModuleList, x: torch.Tensor) -> List[torch.Tensor]:
        """The kept levels of one neck on the trunk map ``x`` (B x C x h x w)."""
        keep = len(convs) - self.scalp
        return [conv(x) for conv in list(convs)[:keep]]

    def forward(self, x: torch.Tensor, necks: Sequence[str] = ("detector", "tracker"),
                trunk_out: Optional[torch.Tensor] = None) -> dict:
        feats = self.trunk(x) if trunk_out is None else trunk_out
        out: dict = {"trunk": feats}
        if "detector" in necks:
            out["detector_fpn"] = self.run_neck(self.convs, feats)
        if "tracker" in necks:
            out["tracker_fpn"] = self.run_neck(self.sam2_convs, feats)
        levels = out.get("detector_fpn") or out.get("tracker_fpn") or []
        out["pos"] = [self.position_encoding(t) for t in levels]
        return out
