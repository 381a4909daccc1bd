"""Child process of :func:`benchmarks.common.peak_memory_mb`: ``python -m benchmarks._memprobe CASE VARIANT ARGS``.

Prepares the case's inputs, records the peak resident memory so far, runs the variant once, and prints
one JSON line ``{"peak_mb": ..., "before_mb": ...}`` (``VmHWM``, MiB).
"""
from __future__ import annotations

import importlib
import json
import sys

from .common import self_peak_mb

MODULES = {"measure": "bench_measure", "train": "bench_train", "diffeo": "bench_diffeo"}


def main(argv: list[str]) -> None:
    case, variant, args = argv[0], argv[1], json.loads(argv[2])
    module = importlib.import_module(f"benchmarks.{MODULES[case]}")
    call = module.memprobe(variant, args)
    before = self_peak_mb()
    call()
    print(json.dumps({"peak_mb": round(self_peak_mb(), 1), "before_mb": round(before, 1)}))


if __name__ == "__main__":
    main(sys.argv[1:])
