#!/usr/bin/env python
"""Generate text from a prompt with AIOS: `aios generate` from a clone.

    python generate.py                                   # the small bundled model, on CPU or GPU
    python generate.py --model /path/to/Qwen3-0.6B --prompt "Explain KV caching" --chat

The command lives in aios/cli/generate.py (so an installed aios has it as `aios generate`).
"""

import sys

from aios.cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
