"""`python -m aios.cli` = the `aios` command (for a clone that is not installed)."""

import sys

from aios.cli import main

sys.exit(main())
