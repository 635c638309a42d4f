"""Video memory of the SAM 2 family: memory encoder, memory attention (RoPE, pooled,
EdgeTAM RoPE v2 + spatial perceiver), object pointers and per-family configuration."""
from .config import (EDGETAM, EFFICIENTTAM, EFFICIENTTAM_1, EFFICIENTTAM_2, SAM2, SAM21, MemoryConfig,
                     attach_memory, build_memory_attention)

__all__ = ["MemoryConfig", "attach_memory", "build_memory_attention",
           "SAM21", "SAM2", "EFFICIENTTAM", "EFFICIENTTAM_1", "EFFICIENTTAM_2", "EDGETAM"]
