"""Reference for lesson 11: aios's own CUDAGraphRunner (aios/engine/cuda_graph.py: batch_size_for,
replay; ModelRunner.run in aios/engine/model_runner.py decides when to ask it)."""

from aios.engine.cuda_graph import CUDAGraphRunner

__all__ = ["CUDAGraphRunner"]
