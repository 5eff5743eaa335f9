"""taskflow's benchmark suite: ``bench/run`` (see docs/benchmarks.md)."""
