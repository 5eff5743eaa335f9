"""``python -m bench``: run the benchmark suite (``bench/run`` sets up its venv first)."""

import sys

from bench.harness import main

sys.exit(main(sys.argv[1:]))
