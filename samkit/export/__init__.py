"""ONNX export folders: ``samkit export MODEL --format onnx --out DIR`` / :func:`export_onnx`.

```python
from samkit import load_model
from samkit.export import export_onnx
export_onnx(load_model("mobile_sam"), "mobile_sam-onnx", quantize="int8")
```

Folder layout (``<m>`` is the model name, e.g. ``sam_vit_b``)::

    DIR/
      samkit-export.json          the manifest below
      <m>.encoder.onnx            image encoder, float32 (+ <m>.encoder.onnx.data above 1.8 GB)
      <m>.encoder.quant.onnx      int8 encoder (--quantize int8; "int8-static": <m>.encoder.int8-static.onnx)
      <m>.decoder.onnx            prompt decoder, float32
      <m>.decoder_image.onnx      fast decoder pair, once per image (samkit.export.fast_decoder)
      <m>.decoder_fast.onnx       fast decoder pair, per click: low-res masks, no mask input
      config.yaml                 AnyLabeling model config (SAM, MobileSAM, EdgeSAM, SAM 2, EdgeTAM)
      .samkit/export.json         samkit's own bookkeeping of the files it published

File names and graph contracts follow samexporter (github.com/vietanhdev/samexporter), whose
layout AnyLabeling reads: the SAM-family encoder takes the resized image (h x w x 3, 0..255)
and normalises and pads it itself; the SAM-family decoder is segment-anything's ONNX decoder;
the SAM 2-family encoder / decoder are samexporter's SAM 2 graphs. See
:mod:`samkit.export.graphs` for every input and output.

Manifest (``samkit-export.json``, JSON, ``format_version`` 1)::

    format            "samkit-onnx-export"
    format_version    1 (bumped only by incompatible changes; readers ignore unknown keys,
                      graphs and pipelines)
    samkit_version    the samkit that wrote it
    model             {name, weights_sha256 (samkit.checkpoint.weights_digest of the state dict),
                       spec: {name, family, license, commercial_use, paper, url, filename,
                              checkpoint_format, tag, input_size, video}}
    opset             ONNX opset of every graph
    exporter          {torch, onnx, onnxruntime} versions
    image             the image pipeline's rules: layout ("sam" | "efficient_sam" | "sam2"),
                      input_size, preprocess {rule "longest_side" | "stretch", antialias, mean,
                      std, ...}, prompts {coordinates, order, labels}, postprocess,
                      mask_threshold, mask_input_size, supports_mask_input, embedding_size,
                      mask_tokens {count, single, multimask}, dynamic_multimask (SAM 2: stability
                      delta / thresh, else null), default_selection, default_precision
    graphs            {id: {file, role, precision ("fp32" | "int8" | "int8-static"),
                       inputs / outputs: [{name, dtype, shape}] (symbolic axes as strings),
                       data_file (external weights, if any), quantized_from}}
                      image ids: image_encoder, image_encoder_int8 / _int8_static, prompt_decoder,
                      decoder_image, prompt_decoder_fast
    pipelines         {"image": {"encoder": "image_encoder", "decoder": "prompt_decoder"},
                       "image_fast": {"encoder": "image_encoder", "decoder_image": "decoder_image",
                                      "decoder": "prompt_decoder_fast"}, "video": ...}
    anylabeling       "config.yaml" or null (layouts AnyLabeling cannot read)
    files             {relative path: {sha256, bytes}} for every file of the folder but the
                      manifest itself (and .samkit/)

Video models (SAM 2 / 2.1, EdgeTAM, EfficientTAM; ``video=None``: whenever the model has a video
memory, ``video=True`` refuses a model without one) add their stateless video graphs, run by
:class:`samkit.runtime.OnnxVideoTracker`, which keeps the memory bank between graph calls
(see :mod:`samkit.export.video_graphs` for every input and output)::

      <m>.video_encoder.onnx              frame -> high-res features, vision features, position
      <m>.memory_attention.onnx           features + F memory frames + P object pointers -> features
      <m>.memory_attention_single.onnx    EfficientTAM v1 / v2 only: the same with one memory frame
      <m>.video_decoder.onnx              prompts -> masks of every token, IoU, object pointers, score
      <m>.memory_encoder.onnx             features + mask -> memory tokens and positions
      <m>.mask_downsample.onnx            mask prompt -> the decoder's mask input

with graph ids = roles ``video_image_encoder``, ``memory_attention`` (``_single``),
``video_decoder``, ``memory_encoder``, ``mask_downsample`` in ``graphs``, ``pipelines.video``
{"image_encoder", "memory_attention", ["memory_attention_single"], "decoder",
"memory_encoder", ["mask_downsample"]} -> graph id, and a ``video`` section: layout
"sam2_memory", image_size, feat_size, hidden_dim, mem_dim, memory_tokens_per_frame,
high_res_features, preprocess (PIL bicubic S x S, mean / std), config (every field of
``samkit.memory.config.MemoryConfig``), memory_dtype (bfloat16), mask_threshold,
no_obj_score, mask_tokens, dynamic_multimask, constants (no_mem_embed, no_obj_ptr,
maskmem_tpos_enc as float lists). Nothing of the image pipeline changes.
"""
from __future__ import annotations

from .exporter import ANYLABELING_CONFIG, OPSET, export_onnx

__all__ = ["export_onnx", "OPSET", "ANYLABELING_CONFIG"]
