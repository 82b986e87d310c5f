"""The parts of benchmarks/bench_kernels.py, one module a kernel family (timing: the shared helpers)."""
