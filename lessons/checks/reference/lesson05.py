"""Reference for lesson 05: lessons/05_preallocated_kv_cache/static_cache_loop.py (StaticKVCache) and
aios/kernels/rmsnorm.py's fused_add_rms_norm_ref (the torch reference of the fused Triton kernel
beside it; aios/layers/layernorm.py's RMSNorm(x, residual) calls one or the other)."""

from aios.kernels import fused_add_rms_norm_ref as fused_add_rms_norm  # noqa: F401
from lessons.common import load_module

StaticKVCache = load_module("05_preallocated_kv_cache/static_cache_loop.py").StaticKVCache
