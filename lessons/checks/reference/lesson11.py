"""Reference for lesson 11: aios's own CUDAGraphRunner (aios/engine/cuda_graph.py: batch_size_for,
replay; ModelRunner.run in aios/engine/model_runner.py decides when to ask it) and the tile table of
a graphed mixed step (aios/kernels/q_tiles.py; its caller, MixedCUDAGraphRunner.stage in
aios/engine/cuda_graph_mixed.py)."""

from aios.engine.cuda_graph import CUDAGraphRunner
from aios.kernels.q_tiles import max_q_tiles, prefill_q_tiles

__all__ = ["CUDAGraphRunner", "max_q_tiles", "prefill_q_tiles"]
