"""Benchmark suite of stabkit (``make bench`` = ``python -m benchmarks``): each case times stabkit against a
naive baseline written from the spec (``benchmarks/naive.py``) on the same inputs and checks that both give
the same numbers; results go to ``benchmarks/RESULTS.md``."""
