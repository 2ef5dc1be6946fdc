"""Benchmarks: `python -m bench NAME` times our kernels against a baseline in the same run."""
