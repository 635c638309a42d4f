"""Building blocks shared by every family. Never imports ``samkit.models``."""
from .attention import Attention
from .mlp import MLP, MLPBlock
from .norm import LayerNorm2d
from .position import PositionEmbeddingRandom

__all__ = ["Attention", "MLP", "MLPBlock", "LayerNorm2d", "PositionEmbeddingRandom"]
