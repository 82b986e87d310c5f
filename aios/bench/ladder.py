"""The course as a benchmark: the same workload under each lesson's engine settings.

Each rung turns on one more optimization (a Config switch) on top of the rung before it, so the
table `benchmark.py --ladder` prints is the course's progression, measured. Lessons 03-05 are
teaching loops below the engine's floor (they measure themselves in their lesson folders);
lesson 12 (sampling) and 14 (tensor parallelism) change results or hardware, not this table.
"""

from __future__ import annotations

# lesson -> (what it adds, Config overrides relative to the engine's defaults)
_OFF = dict(attention_backend="torch", fused_kernels=False, enforce_eager=True, async_scheduling=False,
            enable_prefix_caching=False)

LADDER: list[tuple[str, str, dict]] = [
    ("06", "paged KV cache, one sequence at a time", dict(_OFF, max_num_seqs=1)),
    ("07", "static batches (cu_seqlens)", dict(_OFF, static_batching=True, enable_chunked_prefill=True)),
    ("08", "continuous batching + chunked prefill", dict(_OFF)),
    ("09", "+ Triton FlashAttention (prefill + paged decode)", dict(_OFF, attention_backend="triton")),
    ("10", "+ fused Triton kernels (norm+residual, qk-norm+RoPE, SiLU*mul)",
     dict(_OFF, attention_backend="triton", fused_kernels=True)),
    ("11", "+ CUDA graphs (decode and small mixed steps), async scheduling",
     dict(_OFF, attention_backend="triton", fused_kernels=True, enforce_eager=False, async_scheduling=True)),
    ("13", "+ prefix caching (no shared prefixes here: no change expected)", dict()),
]


OVERRIDES: dict[str, dict] = {lesson: overrides for lesson, _, overrides in LADDER}   # lesson -> its settings


def rungs(device: str) -> list[tuple[str, str, dict]]:
    """On CPU the Triton and CUDA-graph rungs are the same engine as rung 08 (reference kernels)."""
    if device == "cpu":
        return [r for r in LADDER if r[0] in ("06", "07", "08", "13")]
    return LADDER
