"""Hydra launcher ``bench_parallel``: a sweep's trials run side by side, at most N at a time."""
