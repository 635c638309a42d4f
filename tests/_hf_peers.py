"""Hugging Face transformers' SAM / SAM 2 / SAM 2 video / EdgeTAM / EdgeTAM video models as
benchmark peers.

transformers is a test- and benchmark-only package here. This module builds its models from
config objects written out by hand (the official sizes; nothing is downloaded) and loads the
SAME synthesized weights as samkit (``parity.synth_state_dict``), renamed from the official
checkpoint layout to transformers' own by ``remap``. The renaming rules are facts about the two
layouts (module names); ``tests/test_peers.py`` proves them by comparing the outputs with
samkit's on the same inputs.
"""
from __future__ import annotations

import re

import torch

# (pattern, replacement) applied in order with re.sub to every official key
_SAM_DECODER = [
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"(iou_prediction_head|output_hypernetworks_mlps\.\d+|pred_obj_score_head|obj_ptr_proj)\.layers\.0\.",
     r"\1.proj_in."),
    (r"(iou_prediction_head|output_hypernetworks_mlps\.\d+|pred_obj_score_head|obj_ptr_proj)\.layers\.1\.",
     r"\1.layers.0."),
    (r"(iou_prediction_head|output_hypernetworks_mlps\.\d+|pred_obj_score_head|obj_ptr_proj)\.layers\.2\.",
     r"\1.proj_out."),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.point_embeddings\.", ".point_embed."),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
]

SAM_RULES = _SAM_DECODER + [
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.blocks\.", ".layers."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.neck\.0\.", ".neck.conv1."),
    (r"\.neck\.1\.", ".neck.layer_norm1."),
    (r"\.neck\.2\.", ".neck.conv2."),
    (r"\.neck\.3\.", ".neck.layer_norm2."),
    (r"\.norm", ".layer_norm"),
]



def _downsampler(m: re.Match) -> str:
    """mask_downsampler.encoder: conv, LayerNorm2d, GELU repeated, then the final 1x1 conv."""
    i = int(m.group(1))
    if i == 12:  # total stride 16 in stride-2 steps: 4 x (conv, norm, act) then the 1x1 conv
        return "mask_downsampler.final_conv."
    if i % 3 == 2:
        raise KeyError(f"mask_downsampler.encoder.{i} is an activation and has no weights")
    return f"mask_downsampler.layers.{i // 3}.{'conv' if i % 3 == 0 else 'layer_norm'}."


SAM2_RULES = [
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"\.mlp\.layers\.0\.", ".mlp.proj_in."),   # the two-layer MLPs (Hiera blocks, two-way transformer)
    (r"\.mlp\.layers\.1\.", ".mlp.proj_out."),
    (r"^memory_encoder\.out_proj\.", "memory_encoder.projection."),
    (r"^memory_encoder\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"^memory_encoder\.fuser\.", "memory_encoder.memory_fuser."),
    (r"\.dwconv\.", ".depthwise_conv."),
    (r"\.pwconv(\d)\.", r".pointwise_conv\1."),
    (r"\.gamma$", ".scale"),
    (r"mask_downsampler\.encoder\.(\d+)\.", _downsampler),
    (r"\.out_proj\.", ".o_proj."),
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    (r"^obj_ptr_proj\.", "object_pointer_proj."),
    (r"(object_pointer_proj)\.layers\.0\.", r"\1.proj_in."),
    (r"(object_pointer_proj)\.layers\.1\.", r"\1.layers.0."),
    (r"(object_pointer_proj)\.layers\.2\.", r"\1.proj_out."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.norm", ".layer_norm"),
] + _SAM_DECODER

# EdgeTAM: SAM 2's names, the timm RepViT trunk under TimmWrapper's ``timm_model``
EDGETAM_RULES = [
    (r"^image_encoder\.trunk\.body\.", "vision_encoder.backbone.timm_model."),
    (r"^(memory_attention\.layers\.\d+)\.linear1\.", r"\1.mlp.up_proj."),
    (r"^(memory_attention\.layers\.\d+)\.linear2\.", r"\1.mlp.down_proj."),
    (r"^spatial_perceiver\.latents$", "spatial_perceiver.latents_1d"),
    (r"\.attn\.norm_x\.", ".layer_norm_input."),
    (r"\.attn\.norm_latents\.", ".layer_norm_latents."),
    (r"\.self_attn\.norm\.", ".layer_norm_self."),
    (r"(spatial_perceiver\.layers\.\d+)\.attn\.", r"\1.cross_attention."),
    (r"(spatial_perceiver\.layers\.\d+)\.self_attn\.", r"\1.self_attention."),
    (r"\.to_q\.", ".q_proj."),
    (r"\.to_kv\.", ".kv_proj."),   # fused key/value projection: split by ``remap``
    (r"\.to_out\.", ".o_proj."),
    (r"\.(ff|self_ff)\.0\.", lambda m: ".mlp.layer_norm." if m.group(1) == "ff" else ".self_mlp.layer_norm."),
    (r"\.(ff|self_ff)\.1\.", lambda m: ".mlp.up_proj." if m.group(1) == "ff" else ".self_mlp.up_proj."),
    (r"\.(ff|self_ff)\.3\.", lambda m: ".mlp.down_proj." if m.group(1) == "ff" else ".self_mlp.down_proj."),
] + SAM2_RULES

FAMILY = {"sam_vit_b": SAM_RULES, "sam2.1_hiera_t": SAM2_RULES, "edgetam": EDGETAM_RULES}


def remap(rules, state: dict, one_point_table: bool = False) -> dict:
    """Official-layout ``state`` -> transformers layout (new dict, same tensors).
    ``one_point_table``: the model keeps the four point-type embeddings as one 4-row table
    (SAM 2 family) instead of four 1-row embeddings (SAM)."""
    out = {}
    for key, value in state.items():
        if key in ("pixel_mean", "pixel_std"):
            continue
        for pat, rep in rules:
            key = re.sub(pat, rep, key)
        if ".kv_proj." in key:  # rows: keys first, then values
            k, v = value.chunk(2, dim=0)
            out[key.replace(".kv_proj.", ".k_proj.")], out[key.replace(".kv_proj.", ".v_proj.")] = k, v
            continue
        out[key] = value
    pe = out.get("prompt_encoder.shared_embedding.positional_embedding")
    if pe is not None:  # transformers keeps a second copy for the image positional encoding
        out["shared_image_embedding.positional_embedding"] = pe
    if one_point_table:
        out["prompt_encoder.point_embed.weight"] = torch.cat(
            [out.pop(f"prompt_encoder.point_embed.{i}.weight") for i in range(4)])
    return out


# ----------------------------------------------------------------------------- models
def _transformers():
    """transformers, its torchvision check settled to False even when an earlier test of this
    process left the torchvision stand-in in ``sys.modules``."""
    from oracle_shims import transformers_without_torchvision

    return transformers_without_torchvision()


def timm_for_transformers() -> bool:
    """Make transformers' TimmWrapper (EdgeTAM's RepViT trunk) usable without torchvision.

    transformers only enables timm when torchvision imports, and timm imports torchvision.
    Here (test / benchmark only) timm is imported through the torchvision stand-in of
    ``tests/oracle_shims`` after transformers has settled its own checks (so transformers keeps
    its torchvision-free paths), with an empty ``torchvision.datasets`` (timm's dataset factory
    imports it; nothing here uses it). ``SAMKIT_PEERS_TIMM`` (default ``<venv>/peers-timm``, where
    ``make test-venv`` puts it): an extra folder holding timm (``pip install --no-deps --target DIR
    timm==1.0.31``). False when timm is not to be found."""
    import importlib.util
    import os
    import sys
    import types

    _transformers()  # its availability checks run before the stand-in is visible
    import transformers.models.timm_wrapper.modeling_timm_wrapper as tw

    if getattr(tw, "timm", None) is not None:
        return True
    # timm stays out of site-packages: the MobileSAM / EdgeSAM oracles and transformers change
    # paths when it imports; the Makefile puts it in <venv>/peers-timm
    extra = os.environ.get("SAMKIT_PEERS_TIMM") or os.path.join(sys.prefix, "peers-timm")
    if extra and extra not in sys.path:
        sys.path.append(extra)
    if importlib.util.find_spec("timm") is None:
        return False
    from oracle_shims import shim_on_path

    with shim_on_path():
        import torchvision

        if "torchvision.datasets" not in sys.modules:
            ds = types.ModuleType("torchvision.datasets")
            for n in ("CIFAR100", "CIFAR10", "MNIST", "KMNIST", "FashionMNIST", "ImageFolder"):
                setattr(ds, n, type(n, (), {}))
            sys.modules["torchvision.datasets"] = torchvision.datasets = ds
        import timm
    tw.timm = timm
    tw.requires_backends = lambda *a, **k: None
    return True


def hf_config(name: str, video: bool = False):
    """transformers config of ``name`` written out by hand (their defaults are these sizes:
    SamConfig = ViT-B; Sam2Config / Sam2VideoConfig = Hiera-T of SAM 2.1); checked by
    ``tests/test_peers.py`` through the outputs."""
    T = _transformers()

    if name == "sam_vit_b":
        return T.SamConfig(vision_config=T.SamVisionConfig(hidden_size=768, num_hidden_layers=12,
                                                           num_attention_heads=12, global_attn_indexes=[2, 5, 8, 11]))
    if name == "sam2.1_hiera_t":
        cfg = (T.Sam2VideoConfig if video else T.Sam2Config)()
        bb = cfg.vision_config.backbone_config
        assert list(bb.blocks_per_stage) == [1, 2, 7, 2] and bb.hidden_size == 96, "not Hiera-T"
        assert list(bb.global_attention_blocks) == [5, 7, 9] and list(bb.window_size_per_stage) == [8, 4, 14, 7]
        return cfg
    if name == "edgetam":
        if not timm_for_transformers():
            raise ModuleNotFoundError("transformers' EdgeTAM needs timm: pip install --no-deps timm==1.0.31 "
                                      "(or a --target folder named by SAMKIT_PEERS_TIMM)")
        # the default EdgeTamVisionConfig misspells "architecture" and builds a ResNet-50: name RepViT-M1
        trunk = T.TimmWrapperConfig(architecture="repvit_m1.dist_in1k",
                                    model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]})
        # EdgeTAM's memory: no temporal encoding of object pointers, no occlusion embedding
        return (T.EdgeTamVideoConfig if video else T.EdgeTamConfig)(
            vision_config=T.EdgeTamVisionConfig(backbone_config=trunk),
            enable_temporal_pos_encoding_for_object_pointers=False, enable_occlusion_spatial_embedding=False)
    raise KeyError(f"no transformers peer for {name}")


def hf_model(name: str, video: bool = False):
    """The transformers model of ``name`` (image model, or the video model with ``video``),
    randomly initialised; build it under ``torch.device("meta")`` to check layouts for free."""
    T = _transformers()

    cfg = hf_config(name, video)
    cls = {"sam_vit_b": T.SamModel, "sam2.1_hiera_t": T.Sam2VideoModel if video else T.Sam2Model,
           "edgetam": T.EdgeTamVideoModel if video else T.EdgeTamModel}[name]
    return cls(cfg)


def converted(name: str, want: dict, state: dict) -> dict:
    """``state`` (official layout) renamed for a model whose ``state_dict()`` is ``want``.
    Every tensor the model saves must come from the checkpoint with the same shape; official
    keys the model has no use for (the memory modules, for an image-only model) are dropped."""
    state = remap(FAMILY[name], state, "prompt_encoder.point_embed.weight" in want)
    missing = sorted(set(want) - set(state))
    if missing:
        raise KeyError(f"{name}: transformers keys without a checkpoint tensor: {missing[:8]}")
    bad = [k for k in want if tuple(want[k].shape) != tuple(state[k].shape)]
    if bad:
        raise ValueError(f"{name}: shape mismatch for {bad[:8]}")
    return {k: state[k] for k in want}


def load_hf(name: str, video: bool = False, seed: int = 0):
    """``hf_model`` in eval mode holding samkit's synthesized parity weights (strict load)."""
    from parity import synth_state_dict

    model = hf_model(name, video).eval()
    model.load_state_dict(converted(name, model.state_dict(), synth_state_dict(name, seed)), strict=True)
    return model


# ----------------------------------------------------------------------------- image
def hf_encode(model, x: torch.Tensor):
    """Image embeddings of the normalised 1 x 3 x 1024 x 1024 input ``x`` (what a transformers
    user caches per image): one tensor for SAM, the list of feature levels for SAM 2."""
    return model.get_image_embeddings(x)


def hf_decode(model, emb, points: torch.Tensor, labels: torch.Tensor, multimask: bool):
    """``points`` N x 2 in the 1024 model frame, ``labels`` N -> (low-res logits K x 256 x 256,
    iou K), K = 3 or 1."""
    out = model(image_embeddings=emb, input_points=points[None, None].float(),
                input_labels=labels[None, None].long(), multimask_output=multimask)
    return out.pred_masks[0, 0], out.iou_scores[0, 0]


_PROCESSORS: dict = {}


def hf_full_mask(model, low: torch.Tensor, image_hw, frame_hw) -> torch.Tensor:
    """transformers' own post-processing of K x 256 x 256 low-res logits to K x H x W bool masks:
    SAM's image processor (upscale to 1024, crop the resized image, resize to H x W), SAM 2's
    (one bilinear resize to H x W, the arithmetic of Sam2ImageProcessor.post_process_masks,
    whose class needs torchvision)."""
    import torch.nn.functional as F

    if type(model).__name__ == "SamModel":
        if "sam" not in _PROCESSORS:  # built once, as a user keeps their processor
            T = _transformers()

            _PROCESSORS["sam"] = T.SamImageProcessorPil()
        # masks: one 1 x K x 256 x 256 entry per image -> one 1 x K x H x W bool tensor per image
        return _PROCESSORS["sam"].post_process_masks(low[None, None], [list(image_hw)], [list(frame_hw)])[0][0]
    return F.interpolate(low[None], tuple(image_hw), mode="bilinear", align_corners=False)[0] > 0.0


# ----------------------------------------------------------------------------- video
def hf_video_session(model, frames: torch.Tensor, height: int, width: int):
    """A ``Sam2VideoInferenceSession`` over normalised frames T x 3 x 1024 x 1024 (the
    session a transformers user gets from the processor's ``init_video_session``)."""
    T = _transformers()

    session = getattr(T, type(model).__name__.replace("Model", "InferenceSession"))
    return session(video=frames, video_height=height, video_width=width,
                                       inference_device="cpu", dtype=torch.float32)


def hf_video_prompt(model, session, frame_idx: int, obj_id: int, points: torch.Tensor, labels: torch.Tensor):
    """Point prompt (N x 2, already in the 1024 frame) for one object; runs the prompted frame
    and returns its low-res logits 1 x 256 x 256."""
    idx = session.obj_id_to_idx(obj_id)
    session.add_point_inputs(idx, frame_idx, {"point_coords": points[None, None].float(),
                                              "point_labels": labels[None, None].int()})
    session.remove_mask_inputs(idx, frame_idx)
    session.obj_with_new_inputs = [obj_id]
    return model(inference_session=session, frame_idx=frame_idx).pred_masks[0]


def hf_video_frames(model, session, height: int, width: int):
    """Generator over the propagated frames after the prompt: (frame index, video-resolution
    logits O x H x W), upscaled the way transformers' video processor does."""
    import torch.nn.functional as F

    for out in model.propagate_in_video_iterator(session):
        yield out.frame_idx, F.interpolate(out.pred_masks, (height, width), mode="bilinear",
                                           align_corners=False)[:, 0]
