"""Timing a GPU call the way a decode step runs it: replayed in a CUDA graph, over copies of its
inputs that together spill the L2 cache (a step reads every weight once, so a call must not find
its weight in L2). The host's launch cost, often longer than these kernels, is not measured.
Used by the engine's start-up choice of kernels (aios/layers/gemm_choice.py) and the kernel
benchmarks (benchmarks/kernel_bench/).
"""

import math

import torch

L2_FLUSH_BYTES = 256 << 20


def bench_graph(make_call, num_copies, calls_per_graph=64, replays=5):
    """ms per call: CUDA graph of calls_per_graph calls cycling through num_copies input copies."""
    calls = [make_call(i % num_copies) for i in range(calls_per_graph)]
    for c in calls[:num_copies]:
        c()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm the allocator on the side stream before capture
        for c in calls[:2]:
            c()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / (replays * calls_per_graph)


def copies_for(bytes_per_call: int) -> int:
    """How many copies of a call's inputs spill L2 (at most 64)."""
    return max(1, min(64, math.ceil(L2_FLUSH_BYTES / max(bytes_per_call, 1))))
