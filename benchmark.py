#!/usr/bin/env python
"""Measure AIOS (and peers, side by side) on the standard workloads: `aios bench` from a clone.

The benchmark lives in aios/bench/offline.py (so an installed aios runs it too); this file keeps
`python benchmark.py [flags]` working and writes results to this clone's benchmarks/results/.
Run `python benchmark.py --help` for the flags.
"""

import os
import sys

from aios.bench.offline import main

if __name__ == "__main__":
    sys.exit(main(results_dir=os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks", "results")))
