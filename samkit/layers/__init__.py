"""Building blocks shared by every family. Never imports ``samkit.models``, ``samkit.backbones``
or ``samkit.memory`` (those build on these)."""
from .attention import Attention, PackedAttention
from .conv import ConvGeluConv, ConvStem, PatchEmbed
from .mlp import MLP, MLPBlock
from .neck import sam_neck
from .norm import LayerNorm2d
from .position import PositionEmbeddingRandom, PositionEmbeddingSine, sine_encoding_1d, sine_encoding_2d
from .residual_attention import PackedSelfAttention, QuickGELU, ResidualAttentionBlock, ResidualTransformer

__all__ = ["Attention", "PackedAttention", "ConvGeluConv", "ConvStem", "MLP", "MLPBlock", "LayerNorm2d", "PatchEmbed",
           "PackedSelfAttention", "PositionEmbeddingRandom", "PositionEmbeddingSine", "QuickGELU",
           "ResidualAttentionBlock", "ResidualTransformer", "sam_neck", "sine_encoding_1d", "sine_encoding_2d"]
