"""Benchmark pieces that ship with the engine, so `aios bench` runs from an installed wheel.

    workloads.py      the seeded workloads every engine runs (standard, batchN, short, prefix, long16k, json, ...)
    shapes.py         config.json of published checkpoints (Qwen3, Llama 3.1, Qwen3-MoE, ...; random weights at load)
    ladder.py         each lesson's engine settings: the course as a benchmark
    provenance.py     which code and which GPU a result came from
    profile_steps.py  where a step's time goes (`--profile`)
    engine_runner.py  one engine, one start, many workloads: the loop each engine's process runs
    aios_runner.py    AIOS behind that loop's engine interface; peers/ HuggingFace and vLLM behind it
    suite.py          `--suite` / `--scaling`: each engine in its own process, within one time budget
    estimate.py       how long a suite takes on an H200, before it starts (and what the budget guard plans with)
    report.py         the table (with AIOS / peer ratios), the JSON and the PNGs
    offline.py        the offline benchmark itself: `aios bench`, `python benchmark.py`

Results, the serving benchmark (benchmarks/serve.py) and kernel microbenchmarks stay in the
clone's benchmarks/ folder.
"""
