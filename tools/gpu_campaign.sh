#!/usr/bin/env bash
# The campaign on a lent GPU (issue 17). Run from the checkout root.
# Prepared and rehearsed on CPU (tests/test_campaign.py); never run on a GPU yet (no GPU was lent so far).
#
# 1. Here, before the call (data/ is git-ignored, so it must be carried; 19 MiB of the 64 MiB a call may carry):
#      mkdir -p data && cp ../shared/data/cifar10-jpeg.tar.gz data/
# 2. The device call: run(command=<the line below>, carry=["data"], timeout_s=600).
#    STABKIT_RUNS and STABKIT_CACHE stay outside $OUT: checkpoints and the decoded CIFAR cache never come back.
#    What comes back: $OUT/campaign/{runs.tar,campaign.log,smoke.json,gpu_trace.csv,timing.json} (5 files).
# 3. Here, after the call: python -m stabkit import <files_at>/campaign   (merges runs.tar into results/)
export STABKIT_DATA=data STABKIT_RUNS=/tmp/stabkit-runs STABKIT_CACHE=/tmp/stabkit-cache PYTHONUNBUFFERED=1; nvidia-smi -L; PYTHONPATH=. python3 -m stabkit campaign --deadline 540 --out $OUT/campaign --device cuda --jobs 4
