"""The mask decoder shared by every family: SAM, MobileSAM, EdgeSAM, EfficientSAM and the
SAM 2 family (high-resolution skip features, object-score token, dynamic multimask)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn

from ..layers import MLP, LayerNorm2d
from ..layers.conv import conv1x1
from ..ops.mask_ops import stability_score
from . import factored_decoder as factored
from .fast_two_way import final_attention
from .upscale import conv_s1_blocks, high_res_blocks, project_masks, upscale_features, upscale_rest


def _constant_dense(dense: Optional[torch.Tensor]) -> bool:
    """Whether the dense prompt embedding is the same vector at every pixel (SAM's "no mask"
    embedding broadcast from its weight; a cache may then key on its storage), not a mask's."""
    return dense is None or (dense.stride(-1) == 0 and dense.stride(-2) == 0)


def _with_dense(image_embeddings: torch.Tensor, dense: Optional[torch.Tensor]) -> torch.Tensor:
    """The transformer's image input for a shared image: the embedding plus the (one) dense embedding."""
    return image_embeddings if dense is None else image_embeddings + dense[:1]


def _dense_key(dense: Optional[torch.Tensor]):
    """A constant dense embedding (see :func:`_constant_dense`) by its storage: only dense[:1] is read."""
    return None if dense is None else (dense.data_ptr(), dense.stride()[1:])


def _versions(module: nn.Module) -> tuple:
    return tuple(p._version for p in module.parameters())


def _kept(cache: dict, key, tensors: tuple, values: tuple, make):
    """``cache[key]`` while ``tensors`` are the same objects and ``values`` are equal, else ``make()``
    (kept for the next call)."""
    entry = cache.get(key)
    if (entry is not None and len(entry[0]) == len(tensors) and all(a is b for a, b in zip(entry[0], tensors))
            and entry[1] == values):
        return entry[2]
    out = make()
    cache[key] = (tensors, values, out)
    return out


class MaskDecoder(nn.Module):
    """Predicts masks from image embeddings and prompt embeddings.

    ``num_multimask_outputs`` + 1 mask tokens: token 0 is the single-mask output, tokens 1..
    the multimask outputs. Family options: ``use_high_res_features`` (``conv_s0``/``conv_s1``
    project backbone levels that are added during upscaling; SAM 2), ``pred_obj_scores`` (an
    object-score token and head), ``iou_prediction_use_sigmoid``, ``use_multimask_token_for_obj_ptr``,
    ``dynamic_multimask_via_stability`` (single-mask requests fall back to the best multimask
    output when the single mask is unstable; SAM 2), ``upscaling_norm`` ("layer": LayerNorm2d
    per pixel, SAM; "group": GroupNorm(1, C) over C x H x W, EfficientSAM).
    """

    def __init__(self, transformer_dim: int = 256, transformer: Optional[nn.Module] = None,
                 num_multimask_outputs: int = 3, activation: Type[nn.Module] = nn.GELU,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256,
                 hypernet_activation: Type[nn.Module] = nn.ReLU,
                 use_high_res_features: bool = False, pred_obj_scores: bool = False,
                 pred_obj_scores_mlp: bool = False, use_multimask_token_for_obj_ptr: bool = False,
                 iou_prediction_use_sigmoid: bool = False, dynamic_multimask_via_stability: bool = False,
                 dynamic_multimask_stability_delta: float = 0.05,
                 dynamic_multimask_stability_thresh: float = 0.98, upscaling_norm: str = "layer") -> None:
        super().__init__()
        if transformer is None:
            raise ValueError("MaskDecoder needs a transformer module")
        c = transformer_dim
        self.transformer_dim = c
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, c)
        if upscaling_norm not in ("layer", "group"):
            raise ValueError(f"upscaling_norm must be 'layer' or 'group', got {upscaling_norm!r}")
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4) if upscaling_norm == "layer" else nn.GroupNorm(1, c // 4),
            activation(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(c, c, c // 8, 3, activation=hypernet_activation) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(c, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth,
                                       activation=hypernet_activation, sigmoid_output=iou_prediction_use_sigmoid)
        if pred_obj_scores:
            self.pred_obj_score_head = MLP(c, c, 1, 3) if pred_obj_scores_mlp else nn.Linear(c, 1)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh
        self.prune_tokens = True  # fast path: the final attention only for the tokens read (output_token_count)
        self.factored = True  # fast path: the image side factored once per image (factored_decoder)
        self.merge_repeats = True  # factored path: repeated prompt tokens run once (factored_decoder.merge_repeated)

    def project_high_res(self, level0: torch.Tensor, level1: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """SAM 2 high-res features: the two finest FPN levels ``B x C x 4h x 4w`` and ``B x C x 2h x 2w``
        through ``conv_s0`` / ``conv_s1`` -> ``B x C/8 x 4h x 4w``, ``B x C/4 x 2h x 2w`` (the 1x1
        convolutions run as matrix products)."""
        return conv1x1(level0, self.conv_s0), conv1x1(level1, self.conv_s1)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: Optional[torch.Tensor],
                multimask_output: Union[bool, str], repeat_image: Optional[bool] = None,
                high_res_features: Optional[Sequence[torch.Tensor]] = None, cache: Optional[dict] = None,
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """image_embeddings: 1 or B x C x h x w; image_pe: 1 x C x h x w; sparse: B x N x C;
        dense: B x C x h x w (or None). ``multimask_output``: True (multimask tokens), False
        (single mask, or the stability fallback when enabled), or "all" (every token).
        ``cache``: a dict that lives as long as ``image_embeddings`` (``ImageFeatures.cache``);
        the first transformer block's image-side projections are kept there.
        Returns masks B x K x 4h x 4w, iou B x K, the mask tokens used for object pointers
        B x k x C and object-score logits B x 1."""
        dynamic = (multimask_output is False and self.dynamic_multimask_via_stability and not self.training)
        # fast path: the single mask first, the multimask tokens only when it is unstable
        lazy = dynamic and self.prune_tokens and getattr(self.transformer, "fast", False)
        state = {} if lazy else None
        if multimask_output == "all" or (dynamic and not lazy):
            wanted = list(range(self.num_mask_tokens))
        elif multimask_output:
            wanted = list(range(1, self.num_mask_tokens))
        else:
            wanted = [0]
        masks, iou, mask_tokens_out, obj = self._predict(image_embeddings, image_pe, sparse_prompt_embeddings,
                                                         dense_prompt_embeddings, repeat_image, high_res_features,
                                                         wanted, cache, state)
        if multimask_output == "all":
            pass
        elif multimask_output:
            iou = iou[:, 1:]
        elif lazy:
            masks, iou = self._dynamic_lazy(masks, iou, state)
        elif dynamic:
            masks, iou = self._dynamic_multimask(masks, iou)
        else:
            iou = iou[:, 0:1]
        if multimask_output is True and self.use_multimask_token_for_obj_ptr:
            tokens = mask_tokens_out[:, 1:]
        else:
            tokens = mask_tokens_out[:, 0:1]
        return masks, iou, tokens, obj

    def _predict(self, image_embeddings, image_pe, sparse, dense, repeat_image, high_res_features,
                 wanted: Optional[Sequence[int]] = None, cache: Optional[dict] = None,
                 state: Optional[dict] = None):
        """Masks for the mask tokens in ``wanted`` (all by default), IoU for every token.
        ``state`` (fast path): receives what :meth:`_dynamic_lazy` needs for more mask tokens."""
        tokens = self.prompt_tokens(sparse)
        b = tokens.shape[0]
        if repeat_image is None:
            repeat_image = image_embeddings.shape[0] != b
        fast = not self.training and getattr(self.transformer, "fast", False)
        shared = fast and image_embeddings.shape[0] == 1 and (repeat_image or b == 1) and (
            dense is None or dense.shape[0] == 1 or dense.stride(0) == 0)
        plan = None
        if shared and cache is not None and self.factored and not torch.is_grad_enabled():
            merged, key_bias = tokens, None
            if self.merge_repeats:
                merged, key_bias = factored.merge_repeated(tokens, tokens.shape[1] - sparse.shape[1])
            plan = self._plan(cache, image_embeddings, image_pe, dense, high_res_features, merged.shape[1])
        if plan is not None:
            _, c, h, w = image_embeddings.shape
            hs, keys = factored.transformer_forward(self.transformer, plan, merged, self.output_token_count(wanted),
                                                    state, key_bias)
            return self.heads(hs, keys, (b, c, h, w), high_res_features, wanted, True, state, plan)
        first = self._first_layer(cache, image_embeddings, image_pe, dense) if shared else None
        if shared:
            # with the first block's projections at hand the transformer takes its image tokens
            # from them: the embedding + dense sum is only needed without
            src = image_embeddings if first is not None else _with_dense(image_embeddings, dense)
        else:
            src = torch.repeat_interleave(image_embeddings, b, dim=0) if repeat_image else image_embeddings
            if dense is not None:
                src = src + dense
        _, c, h, w = src.shape
        if fast:
            hs, keys = self.transformer(src, image_pe, tokens, first_layer=first,
                                        out_tokens=self.output_token_count(wanted), state=state)
        else:
            pos_src = image_pe.expand(b, -1, -1, -1) if image_pe.shape[0] != b else image_pe
            hs, keys = self.transformer(src, pos_src, tokens)
        return self.heads(hs, keys, (b, c, h, w), high_res_features, wanted, fast, state)

    def output_token_count(self, wanted: Optional[Sequence[int]] = None) -> Optional[int]:
        """How many leading transformer tokens the heads read: [obj-score], IoU and the mask
        tokens up to the last one in ``wanted`` (all by default; the single-mask token 0 is
        always among them: it makes the object pointer). None when ``prune_tokens`` is off
        (every token leaves the transformer: the path before the pruning, kept for benchmarks)."""
        if not self.prune_tokens:
            return None
        last = self.num_mask_tokens - 1 if wanted is None else max(wanted)
        return (1 if self.pred_obj_scores else 0) + 2 + last

    def prompt_tokens(self, sparse: torch.Tensor) -> torch.Tensor:
        """The transformer's token input: [obj-score], IoU, mask tokens, then ``sparse`` B x N x C."""
        weights = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            weights.insert(0, self.obj_score_token.weight)
        out_tokens = torch.cat(weights, dim=0).unsqueeze(0).expand(sparse.shape[0], -1, -1)
        return torch.cat([out_tokens, sparse], dim=1)

    def heads(self, hs: torch.Tensor, keys, bchw: Tuple[int, int, int, int], high_res_features,
              wanted: Optional[Sequence[int]] = None, fast: bool = True, state: Optional[dict] = None,
              plan: Optional[dict] = None):
        """Transformer outputs (tokens ``hs`` B x T x C, image tokens ``keys`` B x hw x C, or
        factored with its image ``plan``) -> (masks B x K x 4h x 4w for the tokens in ``wanted``,
        IoU B x all tokens, mask tokens, object-score logits B x 1). ``fast``: the channels-last
        upscaling (``upscale_masks``)."""
        b, c, h, w = bchw
        s = 1 if self.pred_obj_scores else 0
        iou_token_out = hs[:, s, :]
        mask_tokens_out = hs[:, s + 1 : s + 1 + self.num_mask_tokens, :]
        idx = list(range(self.num_mask_tokens)) if wanted is None else list(wanted)
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in idx], dim=1)
        if plan is not None:
            masks, z = self._planned_masks(plan, keys, hyper_in, (h, w), state is not None)
            if state is not None:
                state["upscaled"] = z
        elif fast:
            z = upscale_features(self, keys.reshape(b, h, w, c), high_res_features)
            masks = project_masks(z, hyper_in)
            if state is not None:
                state["upscaled"] = z
        else:
            masks = self._masks_reference(keys, hyper_in, b, c, h, w, high_res_features)
        iou = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            obj = self.pred_obj_score_head(hs[:, 0, :])
        else:
            obj = 10.0 * iou.new_ones(iou.shape[0], 1)
        return masks, iou, mask_tokens_out, obj

    def _planned_masks(self, plan: dict, keys, hyper_in: torch.Tensor, hw: Tuple[int, int],
                       keep: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Masks B x K x 4h x 4w of the factored path, upscaled one prompt at a time: a prompt's
        temporaries (4 and 8 MB at 64 x 64) stay in cache, a batch's would not (about half the
        upscaling time for 16 prompts). Also the upscaled features (``keep``: for :meth:`_dynamic_lazy`)."""
        h, w = hw
        masks, feats = [], []
        for i in range(hyper_in.shape[0]):
            y = factored.conv1_output(plan, keys, i)
            z = upscale_rest(self, y.view(1, h, w, 2, 2, -1), plan["s0"], fused=True)
            masks.append(project_masks(z, hyper_in[i : i + 1]))
            if keep:
                feats.append(z)
        if len(masks) == 1:
            return masks[0], feats[0] if keep else None
        return torch.cat(masks), torch.cat(feats) if keep else None

    def _first_layer(self, cache, image_embeddings, image_pe, dense):
        """The transformer's first-block projections of a shared image, kept in ``cache``
        while the embedding, positional encoding, dense embedding and weights are the same."""
        if cache is None:
            return None
        make = lambda: self.transformer.first_layer(_with_dense(image_embeddings, dense), image_pe)  # noqa: E731
        if not _constant_dense(dense):
            return make()
        versions = _versions(self.transformer.layers[0])
        return _kept(cache, id(self), (image_embeddings, image_pe), (_dense_key(dense), versions), make)

    def _plan(self, cache, image_embeddings, image_pe, dense, high_res_features, n_tokens: int) -> Optional[dict]:
        """The per-image plan of :mod:`factored_decoder` for a shared image, kept in ``cache``
        (None: a mask prompt, or too many prompt tokens for it to pay; the caller has checked
        that there is a cache, ``factored`` is on and no gradients are recorded)."""
        tr = self.transformer
        if not hasattr(tr, "final_attn_token_to_image") or not _constant_dense(dense):  # dense: a mask prompt
            return None
        attn = tr.layers[0].cross_attn_image_to_token
        if attn.num_heads * n_tokens > attn.internal_dim:
            return None
        high = () if high_res_features is None else tuple(high_res_features)
        make = lambda: self._build_plan(image_embeddings, image_pe, dense, high)  # noqa: E731
        tensors, values = (image_embeddings, image_pe, *high), (_dense_key(dense), _versions(self))
        return _kept(cache, ("plan", id(self)), tensors, values, make)

    def _build_plan(self, image_embeddings, image_pe, dense, high) -> dict:
        _, c, h, w = image_embeddings.shape
        x0 = _with_dense(image_embeddings, dense).flatten(2).transpose(1, 2)
        pe = image_pe.flatten(2).transpose(1, 2)
        extra, s0 = None, None
        if high:
            s1 = high[1]
            extra = conv_s1_blocks(s1, h, w).reshape(h * w, -1)
            s0 = high_res_blocks(high[0], h, w).contiguous()
        plan = factored.build_plan(self.transformer, self.output_upscaling[0], x0, pe, extra)
        plan["s0"] = s0
        return plan

    def _masks_reference(self, keys, hyper_in, b, c, h, w, high_res_features):
        src = keys.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_high_res_features:
            upscaled = self.output_upscaling(src)
        else:
            dc1, ln1, act1, dc2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            upscaled = act1(ln1(dc1(src) + feat_s1))
            upscaled = act2(dc2(upscaled) + feat_s0)
        b, c, h, w = upscaled.shape
        return (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)

    def _dynamic_lazy(self, single: torch.Tensor, iou: torch.Tensor, state: dict) -> Tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_dynamic_multimask` from the single mask ``single`` B x 1 x H x W alone when it is
        stable for every prompt (the usual case); else the multimask tokens' rows of the final
        attention, their hypernetworks and masks run now, on the transformer and upscaling
        outputs kept in ``state`` by the first pass (for one prompt only the multimask token it
        picks, the highest predicted IoU). Same results, a quarter of the mask heads."""
        stable = self._stable(single)
        if bool(stable.all()):
            return single, iou[:, 0:1]
        s = 1 if self.pred_obj_scores else 0
        # one prompt, no gradients recorded: only the multimask token the fallback picks (highest
        # predicted IoU) is decoded (under autograd every token's head stays in the graph, so that
        # data-parallel training sees the same parameters used on every rank)
        one = single.shape[0] == 1 and not torch.is_grad_enabled()
        first = s + 2 + int(torch.argmax(iou[0, 1:])) if one else s + 2
        last = first + 1 if one else s + 1 + self.num_mask_tokens
        if "final_rows" in state:  # factored path
            rows = state["final_rows"](first, last)
        else:
            rows = final_attention(self.transformer, state["queries"], state["point_embedding"], state["keys"],
                                   state["k_pe"], state["low_rank"], first, last)
        hyper = torch.stack([self.output_hypernetworks_mlps[first - s - 1 + i](rows[:, i, :])
                             for i in range(rows.shape[1])], 1)
        multi = project_masks(state["upscaled"], hyper)
        if one:
            best_iou = iou[:, first - s - 1 : first - s]
            return (torch.where(stable[..., None, None], single, multi),
                    torch.where(stable, iou[:, 0:1], best_iou))
        masks = torch.cat([single, multi], dim=1)
        return self._dynamic_multimask(masks, iou, stable)

    def _stable(self, single: torch.Tensor) -> torch.Tensor:
        """B x 1 bool: SAM 2's stability test of the single-mask output B x 1 x H x W."""
        delta = self.dynamic_multimask_stability_delta
        stable = stability_score(single, 0.0, delta) >= self.dynamic_multimask_stability_thresh
        # SAM 2 scores an empty single mask (no logit above -delta) 1.0, i.e. stable: keep it
        return stable | ~(single > -delta).flatten(-2).any(-1)

    def _dynamic_multimask(self, masks: torch.Tensor, iou: torch.Tensor,
                           stable: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        multi, multi_iou = masks[:, 1:], iou[:, 1:]
        best = torch.argmax(multi_iou, dim=-1)
        rows = torch.arange(multi.shape[0], device=masks.device)
        best_masks = multi[rows, best].unsqueeze(1)
        best_iou = multi_iou[rows, best].unsqueeze(1)
        single, single_iou = masks[:, 0:1], iou[:, 0:1]
        stable = self._stable(single) if stable is None else stable
        out_masks = torch.where(stable[..., None, None].expand_as(single), single, best_masks)
        out_iou = torch.where(stable.expand_as(single_iou), single_iou, best_iou)
        return out_masks, out_iou
