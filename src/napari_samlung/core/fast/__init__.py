"""Speed paths for the models: same arithmetic as the reference modules up to
float rounding (the agreement is tested in ``tests/core/test_engine_equivalence.py``).

- :mod:`.tinyvit`: Conv+BN folding and fused forwards for TinyViT (LiteMedSAM);
- :mod:`.decoder`: :class:`FastDecoder`, SAM's mask decoder with less work per prompt;
- :mod:`.sdpa`: SAM ViT attention through scaled-dot-product attention.
"""

from .decoder import FastDecoder
from .sdpa import use_sdpa_attention
from .tinyvit import fuse_conv_bn, has_conv_bn, speed_up_tinyvit

__all__ = ["FastDecoder", "fuse_conv_bn", "has_conv_bn", "speed_up_tinyvit", "use_sdpa_attention"]
