"""Reference for lesson 09: the online-softmax step of lessons/09_flash_attention/online_softmax.py,
aios/kernels/prefill_attention.py's torch reference `prefill_attention_ref` (it builds the score
matrix whole: the same result your tiled loop must give) and its Triton kernel `prefill_attention`
(the stretch; read `_prefill_tile` and `_prefill_attention_kernel`)."""

from aios.kernels.prefill_attention import prefill_attention as prefill_attention_triton
from aios.kernels.prefill_attention import prefill_attention_ref as prefill_attention
from lessons.common import load_module

online_softmax_step = load_module("09_flash_attention/online_softmax.py").online_softmax_step

__all__ = ["online_softmax_step", "prefill_attention", "prefill_attention_triton"]
