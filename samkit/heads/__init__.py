"""Prompt encoder, two-way transformer and mask decoder: written once, configured per family."""
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayAttentionBlock, TwoWayTransformer

__all__ = ["MaskDecoder", "PromptEncoder", "TwoWayAttentionBlock", "TwoWayTransformer"]
