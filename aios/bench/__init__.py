"""Benchmark pieces that ship with the engine, so `aios bench` runs from an installed wheel.

    workloads.py      the seeded workloads every engine runs (standard, batchN, prefix, ladder)
    shapes.py         config.json of real Qwen3 shapes (random weights at load)
    ladder.py         each lesson's engine settings: the course as a benchmark
    provenance.py     which code and which GPU a result came from
    profile_steps.py  where a step's time goes (`--profile`)
    peers/            HuggingFace and vLLM on the same workload, each in its own process
    offline.py        the offline benchmark itself: `aios bench`, `python benchmark.py`

Results, the serving benchmark (benchmarks/serve.py) and kernel microbenchmarks stay in the
clone's benchmarks/ folder.
"""
