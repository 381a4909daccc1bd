#!/usr/bin/env bash
# The campaign on a lent GPU: one prepared call (issues 17, 27). Run from the checkout root.
#
# 1. Here, before the call:   bash tools/gpu_campaign.sh --prepare
#    (copies CIFAR-10 into the git-ignored data/ when ../shared/data has it, writes the git-ignored
#    .code_state.json, the code commit the runs record where the copied tree has no .git, and prints the
#    call.) Both paths are ignored, so the call must carry them: 19 MiB of the 64 MiB a call may carry.
# 2. The device call:         run(command="bash tools/gpu_campaign.sh 570", carry=["data", ".code_state.json"],
#                                 timeout_s=600)
#    570 s for the whole script: diagnostics first (versions, nvidia-smi, the CUDA-only tests, at most
#    ~60 s), then the campaign with what is left, then, if it failed early, a retry with one worker.
#    What comes back, all in $OUT/campaign/ (at most 8 files): diagnostics.txt, campaign.log, smoke.json,
#    gpu_trace.csv, timing.json and runs.tar.gz (runs-2.tar.gz, ... past 14 MiB).
#    STABKIT_RUNS and STABKIT_CACHE stay outside $OUT: checkpoints and the decoded CIFAR cache never come back.
# 3. Here, after the call:    .venv/bin/python -m stabkit import <files_at>/campaign   (merges every part)
#
# Rehearsal on a CPU:  OUT=/tmp/rehearsal DEVICE=cpu SCALE=tiny bash tools/gpu_campaign.sh 120
# Environment: OUT (default ./out), DEVICE (cuda), JOBS (4), SCALE (gpu), ONLY (sweeps, e.g. fig3,fig1),
# PYTHON (python3), MARGIN (seconds kept after the campaign, default 15).
set -u

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p data
    if [ ! -e data/cifar10-jpeg.tar.gz ] && [ -e ../shared/data/cifar10-jpeg.tar.gz ]; then
        cp ../shared/data/cifar10-jpeg.tar.gz data/
    fi
    commit=$(git rev-parse HEAD) || exit 1
    if [ -n "$(git status --porcelain --untracked-files=normal)" ]; then dirty=true; else dirty=false; fi
    printf '{"commit": "%s", "dirty": %s}\n' "$commit" "$dirty" > .code_state.json
    echo "data/: $(du -sh data | cut -f1); .code_state.json: $(cat .code_state.json)"
    echo 'call: run(command="bash tools/gpu_campaign.sh 570", carry=["data", ".code_state.json"], timeout_s=600)'
    exit 0
fi

T0=$(date +%s)
BUDGET=${1:-570}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
JOBS=${JOBS:-4}
SCALE=${SCALE:-gpu}
MARGIN=${MARGIN:-15}
DIR="${OUT:-out}/campaign"
mkdir -p "$DIR"
DIAG="$DIR/diagnostics.txt"
export STABKIT_DATA=${STABKIT_DATA:-data} STABKIT_RUNS=${STABKIT_RUNS:-/tmp/stabkit-runs}
export STABKIT_CACHE=${STABKIT_CACHE:-/tmp/stabkit-cache} PYTHONUNBUFFERED=1 PYTHONPATH=.
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
only=()
[ -n "${ONLY:-}" ] && only=(--only "$ONLY")

{
    echo "== $(date -u +%FT%TZ) gpu_campaign.sh: budget ${BUDGET} s, device $DEVICE, jobs $JOBS, scale $SCALE"
    echo "== code: $(cat .code_state.json 2>/dev/null || echo 'no .code_state.json (run --prepare here first)')"
    echo "== data: $(ls -l "$STABKIT_DATA" 2>&1 | tail -n +1 | head -5)"
    echo "== nvidia-smi"
    timeout 20 nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    echo "== versions"
    timeout 120 "$PY" -c 'import platform, torch, torchvision, numpy, pandas, pyarrow, yaml
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__,
      "numpy", numpy.__version__, "pandas", pandas.__version__, "pyarrow", pyarrow.__version__, "yaml", yaml.__version__)
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, round(p.total_memory / 2**30, 1), "GiB, capability", f"{p.major}.{p.minor}")
import stabkit; print("stabkit", stabkit.__file__)' 2>&1 || echo "(versions: exit $?, 124 = timed out)"
    echo "== CUDA-only tests (skipped where CUDA is absent)"
    if "$PY" -c "import pytest" 2>/dev/null; then
        timeout 90 "$PY" -m pytest -q -p no:cacheprovider -x \
            tests/test_stability.py::test_measure_cuda_matches_cpu \
            tests/test_stability.py::test_measure_float32_on_cuda_turns_tf32_off \
            tests/test_train.py::test_no_host_synchronisation_per_batch_on_cuda \
            tests/test_campaign_preflight.py::test_cuda_float32_training_runs_without_tf32 2>&1 | tail -15
        echo "(pytest exit ${PIPESTATUS[0]})"
    else
        echo "(no pytest on this machine: CUDA-only tests not run)"
    fi
} > "$DIAG" 2>&1

campaign() {  # campaign JOBS: the campaign with the seconds left, output appended to the diagnostics
    local dl=$(( $(left) - MARGIN ))
    if [ "$dl" -lt 30 ]; then echo "== $(left) s left: no campaign with $1 job(s)" >> "$DIAG"; return 3; fi
    echo "== $(date -u +%FT%TZ) campaign: --deadline $dl --jobs $1" >> "$DIAG"
    "$PY" -m stabkit campaign --deadline "$dl" --out "$DIR" --device "$DEVICE" --jobs "$1" --scale "$SCALE" \
        "${only[@]}" > "$DIR/.stdout" 2>> "$DIAG"
    local rc=$?
    cat "$DIR/.stdout" >> "$DIAG"
    echo "== campaign exit $rc after $(( $(date +%s) - T0 )) s" >> "$DIAG"
    return $rc
}

campaign "$JOBS"
rc=$?
finished=$(sed -n 's/^campaign: \([0-9]*\) run(s) finished.*/\1/p' "$DIR/.stdout" 2>/dev/null | tail -1)
rm -f "$DIR/.stdout"
# failed early (an error, or nothing finished) with time to spare: once more with one worker; the runs
# finished so far stay in the runs root and are packed again
if { [ "$rc" -ne 0 ] || [ "${finished:-0}" = "0" ]; } && [ "$(left)" -gt 120 ] && [ "$JOBS" != "1" ]; then
    echo "== retry with one worker (exit $rc, ${finished:-0} run(s) finished)" >> "$DIAG"
    campaign 1
    rc=$?
    rm -f "$DIR/.stdout"
fi
echo "== $(date -u +%FT%TZ) done after $(( $(date +%s) - T0 )) s; files: $(ls "$DIR" | tr '\n' ' ')" >> "$DIAG"
tail -5 "$DIAG"
exit $rc
