"""``make bench`` = ``python -m benchmarks``: stabkit against naive baselines, table + RESULTS.md.

Usage: ``python -m benchmarks [--quick] [--gpu] [--only measure,diffeo,train,gpu] [--repeats N] [--no-memory]
[--output PATH]``. ``step``: one training step per net family, float32 vs bf16 autocast, channels_last on/off,
1 and 2 threads. ``precision``: LeNet trained in float32 and bf16 (same seeds): does bf16 cost accuracy? ``--gpu``: only the CUDA cases (``--only gpu``), written to ``benchmarks/RESULTS-gpu.md``;
needs nothing beyond torch, numpy, PIL/torchvision (no papermill, no Jupyter). ``--quick`` is a smoke test at toy sizes (prints, writes nothing unless ``--output``).
The full run writes ``benchmarks/RESULTS.md``. GPU cases run only when ``torch.cuda.is_available()``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from . import records
from .common import Result, load_average, machine, versions

HERE = Path(__file__).resolve().parent
CASES = ("measure", "diffeo", "train", "step", "precision", "gpu")
#: Full-run repeats per case, sized so that ``make bench`` stays under 10 minutes on 2 CPU cores.
REPEATS = {"measure": 3, "diffeo": 5, "train": 3, "step": 3, "precision": 3, "gpu": 2}
MEASURE_TARGET = 5.0
#: ``make bench`` must finish in under 10 minutes: cases not started by then are skipped (and listed).
BUDGET_S = 480.0


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"


def table(results: list[Result]) -> list[str]:
    """Markdown table, one block of rows per case, speed-ups relative to the case's baseline (wall time,
    and CPU time of the process, which a shared machine distorts less)."""
    lines = ["| case | variant | median s | min s | max s | items/s | speed-up (wall) | CPU s (median) | "
             "speed-up (CPU) | peak RSS MiB (+ by the call) | check / notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    cases: dict[str, list[Result]] = {}
    for r in results:
        cases.setdefault(r.case, []).append(r)
    for case, rows in cases.items():
        base = next((r for r in rows if r.baseline), None)
        for r in rows:
            speed = None if base is None else base.median / r.median
            cpu_speed = None
            if base is not None and base.cpu_median and r.cpu_median:
                cpu_speed = base.cpu_median / r.cpu_median
            mem = "-"
            if r.memory:
                mem = f"{r.memory['peak_mb']:.0f} (+{r.memory['peak_mb'] - r.memory['before_mb']:.0f})"
            lines.append(f"| {case} | {r.variant} | {_fmt(r.median)} | {_fmt(min(r.seconds))} | "
                         f"{_fmt(max(r.seconds))} | {_fmt(r.throughput)} | "
                         f"{'baseline' if r.baseline else _fmt(speed)} | {_fmt(r.cpu_median)} | "
                         f"{'baseline' if r.baseline else _fmt(cpu_speed)} | {mem} | {r.notes} |")
    return lines


def verdicts(results: list[Result]) -> list[str]:
    out = []
    for r in results:
        if r.case.startswith("measure") and not r.baseline:
            base = next(b for b in results if b.case == r.case and b.baseline)
            speed = base.median / r.median
            cpu = base.cpu_median / r.cpu_median if base.cpu_median and r.cpu_median else float("nan")
            best = min(base.seconds) / min(r.seconds)
            met = speed >= MEASURE_TARGET and r.extra.get("ok")
            out.append(f"- {r.case}, {r.variant}: {speed:.1f}x the naive float64 pipeline (median wall time; "
                       f"{best:.1f}x best-of, {cpu:.1f}x in CPU time), max relative difference "
                       f"{r.extra.get('err', float('nan')):.1e} -> target (>= {MEASURE_TARGET:g}x and <= 1e-6) "
                       f"**{'met' if met else 'not met'}**.")
    bad = [r for r in results if r.extra.get("ok") is False and not r.case.startswith("measure")]
    for r in bad:
        out.append(f"- CHECK FAILED: {r.case} / {r.variant}: {r.notes}")
    return out


def breakdown_lines(results: list[Result]) -> list[str]:
    """Where measure's time goes (torch profiler self time by kind of op)."""
    for r in results:
        b = r.extra.get("breakdown")
        if b:
            cols = [k for k in b if k != "P"]
            lines = ["", f"## Where the time goes in `measure` (VGG11, P = {b['P']}, torch profiler self time, s)",
                     "", "| op group | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
            for g in b[cols[0]]:
                lines.append(f"| {g} | " + " | ".join(f"{b[c][g]:.2f}" for c in cols) + " |")
            return lines
    return []


def _now() -> str:
    return dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def write_results(path: Path, kept: dict[str, dict], args, wall: float, skipped: list[str],
                  errors: list[str]) -> None:
    """``RESULTS.md`` from every case's record (``records.merge``): this run's cases and the earlier ones."""
    order = [c for c in CASES if c in kept] + sorted(set(kept) - set(CASES))
    results = [r for c in order for r in records.results_of(kept[c])]
    latest = max(order, key=lambda c: kept[c].get("date") or "") if order else None
    info = kept[latest]["machine"] if latest else {}
    vers = kept[latest]["versions"] if latest else {}
    lines = ["# Benchmark results", "",
             f"Generated by `make bench` (`python -m benchmarks{' --quick' if args.quick else ''}`), last written "
             f"{_now()} (this run: {wall:.0f} s). Do not edit by hand: each case's numbers are kept in "
             f"`{records.records_path(path).name}` and replaced when that case runs again "
             "(`python -m benchmarks --only CASE`).", "",
             "Each case runs stabkit and a naive baseline written inside the benchmark (`benchmarks/naive.py`, "
             "the straightforward implementation of the spec) on the same inputs in the same process, "
             "interleaved round-robin (so both see the same load on a shared machine), and checks that both "
             "give the same numbers. Times are wall-clock seconds per call: median, min and max over the "
             "repeats; also the CPU time of the process (all threads), which a shared machine distorts much "
             "less than wall time. Peak memory: the peak resident set (`VmHWM`) of a fresh process that "
             "prepares the inputs and runs the variant once; in brackets what the call added to the peak "
             "reached once the inputs were ready.",
             "", "## When and where each case ran", "",
             "| case | measured | wall s | cpu | cores | load average at start / end | torch |",
             "|---|---|---|---|---|---|---|"]
    for c in order:
        rec, m = kept[c], kept[c].get("machine", {})
        lines.append(f"| {c} | {rec.get('date', '-')} | {_fmt(rec.get('wall_s'))} | {m.get('cpu', '-')} | "
                     f"{m.get('cores_usable', '-')} | {m.get('load_average_at_start', '-')} / "
                     f"{m.get('load_average_at_end', '-')} | {rec.get('versions', {}).get('torch', '-')} |")
    lines += ["", f"## Machine (of the latest case, {latest})", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "## Versions", "", "- " + ", ".join(f"{k} {v}" for k, v in vers.items()), "",
              "## Results", ""]
    lines += table(results)
    lines += ["", "## Targets and checks", ""] + (verdicts(results) or ["- (no measure case run)"])
    lines += breakdown_lines(results)
    if skipped:
        lines += ["", "## Not run", ""] + [f"- {s}" for s in skipped]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in errors]
    lines += ["", "## Notes", "",
              "- measure: VGG11 (CIFAR size, 32x32, at initialisation), P probes drawn once with "
              "`stabkit.probes.draw_probes(x, seed=0)` (delta 1 pixel, cut 3, bilinear, matched noise); "
              "every tensor-valued node of the FX graph, output included. The naive pipeline also returns "
              "the input placeholder, which `measure` excludes; it is left out of the comparison.",
              "- diffeo: the naive loop draws the coefficients with the layout documented in "
              "`stabkit.transforms.diffeo` (one `randn(B, 2, cut, cut)` float64), so both produce the same "
              "fields from the same seed and the images are compared directly.",
              "- train: CPU throughput of one epoch (forward, backward, SGD step, augmentation) plus one "
              "128-image evaluation, both paths.",
              "- step: one SGD step (forward, backward, update) at batch 128 on random CIFAR-sized inputs, "
              "through `stabkit.train`'s autocast; the baseline is float32 + channels_last (the CPU default "
              "before `precision` existed). bf16 pays only on CPUs with native bf16 (avx512_bf16 / AMX).",
              "- precision: LeNet trained to the end in float32 and in bf16 autocast with the same seeds, data "
              "order and augmentation; the bf16 - float32 gap of the mean last-epoch test error is compared "
              "with float32's seed-to-seed spread. Without native bf16 the bf16 runs are emulated (slow), "
              "but the arithmetic, and so the accuracy answer, is the same.",
              "- Load: on a shared machine the multi-threaded torch paths (OpenMP threads wait for each other "
              "when one is descheduled) suffer much more than single-threaded Python loops: the same suite at "
              "load average 6-8 on these 2 cores gave speed-ups 2-5x lower (and up to 18x slower DeviceLoader "
              "epochs). Compare the load averages above before comparing runs.", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="toy sizes, 1 repeat (smoke test)")
    p.add_argument("--only", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--gpu", action="store_true", help="only the CUDA cases, into benchmarks/RESULTS-gpu.md")
    p.add_argument("--repeats", type=int, default=None, help="repeats per case (default: per-case)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--budget", type=float, default=BUDGET_S,
                   help="seconds after which the remaining cases are skipped (default %(default)s)")
    p.add_argument("--output", default=None,
                   help="RESULTS.md path (default: benchmarks/RESULTS.md for a full run, none for --quick)")
    args = p.parse_args(argv)
    if args.gpu:
        args.only = "gpu"
        if not torch.cuda.is_available():
            print("--gpu: torch.cuda.is_available() is False on this machine", file=sys.stderr)
            return 2
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in only if c not in CASES]
    if unknown:
        p.error(f"--only: unknown cases {unknown}; accepted: {', '.join(CASES)}")
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    t0 = time.perf_counter()
    info, vers = machine(), versions()
    print("machine:", ", ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    results: list[Result] = []
    runs: dict[str, dict] = {}  # case key -> its record (results, when, where)
    skipped: list[str] = []
    errors: list[str] = []

    def reps(case: str) -> int:
        return 1 if args.quick else (args.repeats or REPEATS[case])

    for case in only:
        elapsed = time.perf_counter() - t0
        if elapsed > args.budget and case != "gpu":
            skipped.append(f"{case}: skipped, the time budget ({args.budget:.0f} s) was spent after "
                           f"{elapsed:.0f} s (a busy machine?); run `python -m benchmarks --only {case}`")
            print(f"== {case}: skipped (budget)", flush=True)
            continue
        print(f"== {case}", flush=True)
        first, load0 = len(results), load_average("load_average_at_start")
        try:
            if case == "measure":
                from . import bench_measure
                results += bench_measure.run(args.quick, reps(case), memory=not args.no_memory and not args.quick)
            elif case == "diffeo":
                from . import bench_diffeo
                results += bench_diffeo.run(args.quick, reps(case))
            elif case == "train":
                from . import bench_train
                results += bench_train.run(args.quick, reps(case))
            elif case == "step":
                from . import bench_step
                results += bench_step.run(args.quick, reps(case))
            elif case == "precision":
                from . import bench_precision
                results += bench_precision.run(args.quick, reps(case))
            elif case == "gpu":
                if not torch.cuda.is_available():
                    skipped.append("GPU cases (epoch time on CIFAR-10 for ResNet18, VGG11bn, LeNet at batch "
                                   "128, device path vs DataLoader, with/without bf16 autocast + "
                                   "channels_last; measure on GPU; 1/2/4 concurrent runs): no GPU on this "
                                   "machine (torch.cuda.is_available() is False). Implemented in "
                                   "benchmarks/bench_gpu.py; they run automatically on a CUDA machine.")
                    print("   skipped: no GPU", flush=True)
                    continue
                from . import bench_gpu
                results += bench_gpu.run(args.quick, reps(case))
        except Exception as err:  # one broken case must not hide the others
            traceback.print_exc()
            errors.append(f"{case}: {type(err).__name__}: {err}")
        if len(results) > first:
            print("\n".join(table(results[first:])), flush=True)
            runs[case] = {"results": results[first:], "date": _now(), "machine": {**info, **load0, **load_average("load_average_at_end")},
                          "versions": vers, "wall_s": time.perf_counter() - t0 - elapsed}
    wall = time.perf_counter() - t0
    print()
    print("\n".join(table(results)))
    print("\n".join(verdicts(results)))
    out = args.output or (None if args.quick else str(HERE / ("RESULTS-gpu.md" if args.gpu else "RESULTS.md")))
    if out:
        out = Path(out)
        kept = records.merge(records.records_path(out), runs)
        write_results(out, kept, args, wall, skipped, errors)
        others = sorted(set(kept) - set(runs))
        print(f"wrote {out} ({wall:.0f} s)" + (f"; kept the earlier records of {', '.join(others)}" if others else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
