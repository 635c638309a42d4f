"""The fast prompt decoder of an export folder: the same masks for far less work per click.

The reference decoder graph (``graphs.SamDecoderGraph`` / ``Sam2DecoderGraph``) projects every
image token in every cross-attention for every prompt, and upsamples all mask tokens to the
image. Two graphs split that work (the math of ``samkit.heads.fast_two_way``):

* ``<m>.decoder_image.onnx`` (role ``decoder_image``), once per image: the image embedding ->
  ``image_keys`` 1 x L x C (the embedding plus the constant "no mask" dense embedding, token
  major; EfficientSAM has no dense embedding) and the first transformer block's
  prompt-independent projections ``first_k``, ``first_v`` (token->image keys / values) and
  ``first_q`` (image->token queries), each 1 x L x I (L = h*w, I = C / downsample rate).
* ``<m>.decoder_fast.onnx`` (role ``prompt_decoder_fast``), per click: those four, the SAM 2
  high-res features when the model has them, ``point_coords`` N x P x 2 and ``point_labels``
  N x P (the reference graph's conventions of the layout, box corners as points) ->
  ``low_res_masks`` N x K x 4h x 4w logits and ``iou_predictions`` N x K (K = every mask token).
  Every cross-attention takes its low-rank form (exact for any number of points), the first
  block uses the precomputed projections, and the final attention runs for the output tokens
  only (not for the prompt tokens, whose outputs nobody reads). EfficientSAM's padding points
  (up to 6 points, all alike) run as one token weighted by their number. No mask input: a
  prompt with a mask input (refinement) needs the reference decoder. No upsampling: the caller
  applies the layout's postprocessing (``image.postprocess`` of the manifest) to the masks it
  keeps.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from ..heads import fast_two_way as fast
from .graphs import GraphPlan, SamDecoderGraph

FAST_OUTPUTS = ["low_res_masks", "iou_predictions"]
FIRST_LAYER = ["image_keys", "first_k", "first_v", "first_q"]
FILES = {"decoder_image": "decoder_image", "prompt_decoder_fast": "decoder_fast"}
#: the manifest's ``pipelines.image_fast``
PIPELINE = {"encoder": "image_encoder", "decoder_image": "decoder_image", "decoder": "prompt_decoder_fast"}


def _key_pe(model: nn.Module) -> torch.Tensor:
    """The dense positional encoding, token major: 1 x L x C."""
    return model.prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2)


class DecoderImageGraph(nn.Module):
    """``image_embeddings`` (``image_embed`` for SAM 2) 1 x C x h x w -> ``image_keys`` 1 x L x C,
    ``first_k``, ``first_v``, ``first_q`` 1 x L x I (see the module docstring)."""

    def __init__(self, model: nn.Module, layout: str) -> None:
        super().__init__()
        self.model = model
        self.dense = layout != "efficient_sam"  # EfficientSAM's decoder has no dense embedding

    def forward(self, image_embeddings: torch.Tensor):
        src = image_embeddings
        if self.dense:
            src = src + self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        keys = src.flatten(2).transpose(1, 2)
        layer0 = self.model.mask_decoder.transformer.layers[0]
        pre = fast.first_layer_projections(layer0, keys, _key_pe(self.model))
        return pre["keys"], pre["k"], pre["v"], pre["q"]


class FastDecoderGraph(nn.Module):
    """Per-click decoder on the outputs of :class:`DecoderImageGraph` (see the module docstring)."""

    def __init__(self, model: nn.Module, layout: str) -> None:
        super().__init__()
        self.model = model
        self.layout = layout
        self.high_res = layout == "sam2" and bool(model.use_high_res_features)
        self.prompts = SamDecoderGraph(model, efficient=layout == "efficient_sam")

    def _sparse(self, rest: tuple) -> Tuple[object, torch.Tensor]:
        """(high-res features or None, sparse embeddings N x P' x C) as the reference graph makes them."""
        if self.layout == "sam2":  # SAM 2: a padding point appended, as the reference graph does
            high_res = tuple(rest[:2]) if self.high_res else None
            coords, labels = rest[-2:]
            sparse = self.model.prompt_encoder._embed_points(coords, labels, pad=True)
            p = torch._shape_as_tensor(labels)[1]
            return high_res, torch.index_select(sparse, 1, torch.arange(p + torch.clamp(p, max=1)))
        coords, labels = rest
        if self.layout == "efficient_sam":  # every padding point a token (merge_repeats off: benchmarks)
            coords, labels = self.prompts._efficient_prompts(coords, labels)
        return None, self.model.prompt_encoder._embed_points(coords, labels, pad=False)

    def _efficient_sparse(self, coords: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """EfficientSAM: the clicks and ONE padding point standing for the ``max(0, max_points - P)``
        that the reference pads with (identical tokens; ``factored_decoder.merge_repeated``) ->
        (sparse N x (P + 1) x C, the padding token's log multiplicity: -inf for none)."""
        coords = self.prompts.efficient_coords(coords, labels)
        n = coords.shape[0]
        coords = torch.cat([coords, coords.new_full((1, 1, 2), -1.0).expand(n, 1, 2)], 1)
        labels = torch.cat([labels, labels.new_full((1, 1), -1.0).expand(n, 1)], 1)
        pads = torch.clamp(self.prompts.max_points + 1 - torch._shape_as_tensor(labels)[1], min=0)
        return self.model.prompt_encoder._embed_points(coords, labels, pad=False), torch.log(pads.float()).view(1)

    def forward(self, image_keys, first_k, first_v, first_q, *rest):
        dec = self.model.mask_decoder
        high_res, key_bias = None, None
        if self.layout == "efficient_sam" and dec.merge_repeats:  # the last (padding) token for its copies
            sparse, log_pads = self._efficient_sparse(*rest)
            tokens = dec.prompt_tokens(sparse)
            key_bias = torch.cat([torch.zeros_like(tokens[0, :-1, 0]), log_pads])
        else:
            high_res, sparse = self._sparse(rest)
            tokens = dec.prompt_tokens(sparse)
        key_pe = _key_pe(self.model)
        pre = {"k": first_k, "v": first_v, "q": first_q, "keys": image_keys, "key_pe": key_pe}
        hs, keys = fast.transformer_forward(dec.transformer, tokens, image_keys, key_pe, pre, low_rank=True,
                                            out_tokens=dec.output_token_count(), key_bias=key_bias)
        h, w = self.model.prompt_encoder.image_embedding_size
        b, c = hs.shape[0], hs.shape[2]
        masks, iou, _, _ = dec.heads(hs, keys, (b, c, h, w), high_res)
        return masks, iou


def fast_plans(model: nn.Module, layout: str, reference: GraphPlan) -> List[Tuple[GraphPlan, list]]:
    """The two graphs (per image, per click) with example inputs taken from the reference decoder
    plan ``reference`` (its image features and prompts), each with its extra checks."""
    emb_name = "image_embed" if layout == "sam2" else "image_embeddings"
    emb = reference.inputs[emb_name]
    image = DecoderImageGraph(model, layout).eval()
    first = [t.detach() for t in image(emb)]
    image_plan = GraphPlan("decoder_image", image, {"image_embeddings": emb}, list(FIRST_LAYER), {})
    inputs: Dict[str, torch.Tensor] = dict(zip(FIRST_LAYER, first))
    for name in ("high_res_feats_0", "high_res_feats_1"):
        if layout == "sam2" and name in reference.inputs:
            inputs[name] = reference.inputs[name]
    inputs["point_coords"] = reference.inputs["point_coords"]
    inputs["point_labels"] = reference.inputs["point_labels"]
    axes = {"point_coords": {0: "num_prompts", 1: "num_points"}, "point_labels": {0: "num_prompts", 1: "num_points"},
            "low_res_masks": {0: "num_prompts"}, "iou_predictions": {0: "num_prompts"}}
    plan = GraphPlan("prompt_decoder_fast", FastDecoderGraph(model, layout).eval(), inputs, list(FAST_OUTPUTS), axes)
    alt = dict(inputs)  # one prompt of 2 points: no size of the example may be baked in
    alt["point_coords"] = inputs["point_coords"][:1, :2].clone()
    alt["point_labels"] = torch.tensor([[1.0, -1.0 if layout == "sam" else 0.0]], device=emb.device)
    return [(image_plan, []), (plan, [alt])]
