"""Reference for lesson 12: aios's sampler (aios/layers/sampler.py: Sampler.forward,
apply_top_k_top_p_min_p, sampling_tensors) and its Gumbel-max reference (aios/kernels/sampling.py:
sample_ref, gumbel_noise_ref, seeded_row_keys; the Triton `_sample_kernel` beside it)."""

from aios.kernels.sampling import gumbel_noise_ref, sample_ref, seeded_row_keys
from aios.layers.sampler import Sampler, SamplingTensors, apply_top_k_top_p_min_p, sampling_tensors

__all__ = ["Sampler", "SamplingTensors", "apply_top_k_top_p_min_p", "gumbel_noise_ref", "sample_ref",
           "sampling_tensors", "seeded_row_keys"]
