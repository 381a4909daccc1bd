"""Command line: ``python -m stabkit {train,remeasure,sweep,collect,export,import,status} --help``.

Examples::

    python -m stabkit sweep sweeps/fig5_scale_detection.yaml --scale small --jobs 2
    python -m stabkit status --scale small
    python -m stabkit collect fig5_scale_detection --scale small --table output
    python -m stabkit export fig5_scale_detection --scale cpu       # merge into results/<sweep>/cpu/
    python -m stabkit import campaign-out/                            # merge a campaign's runs.tar
    python -m stabkit campaign --deadline 540 --out campaign-out --device cuda --jobs 4
    python -m stabkit train --task twopoints --net LeNet --set epochs=20 --set width_factor=0.5
    python -m stabkit remeasure runs/<key> --what output layers --shuffles 0 1

Only the standard library, torch, pandas and PyYAML are needed (no Jupyter); submitit only for
``--executor slurm``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

# The package faces load their modules on first use (stabkit.lazy), so these imports cost nothing until a
# command needs them: the command line imports pandas/torch only in the commands that need them.
from . import campaign, runs, sweeps
from .protocol import TASKS


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def _positive_seconds(text: str) -> float:
    import math
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return v


def _parse_value(text: str):
    import yaml
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _pairs(items: list[str] | None, what: str) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it or not it.split("=", 1)[0].strip():
            raise ValueError(f"{what} expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        if not v.strip():  # YAML reads "" as null: the field would silently fall back to its default
            raise ValueError(f"{what} {it!r}: no value after '='")
        try:
            out[k.strip()] = _parse_value(v)
        except Exception as exc:  # noqa: BLE001 - a YAML error: name the option
            raise ValueError(f"{what} {it!r}: the value is not valid YAML ({' '.join(str(exc).split())})") from None
    return out


def _config_from_args(a) -> runs.RunConfig:
    d: dict = {}
    if a.config:
        f = Path(a.config)
        if not f.is_file():
            raise ValueError(f"--config {f}: no such file")
        doc = sweeps.sweepfile.load_yaml(f, "--config") or {}
        if not isinstance(doc, dict):
            raise ValueError(f"--config {f}: must be a mapping of RunConfig fields, got {type(doc).__name__}")
        d.update(doc)
    flags = {k: getattr(a, k, None) for k in ("task", "net", "epochs", "seed", "ptr", "width_factor")}
    d.update({k: v for k, v in flags.items() if v is not None})
    pairs = _pairs(a.set, "--set")
    both = sorted(k for k in pairs if flags.get(k) is not None)
    if both:  # which one wins would be an accident of the code
        raise ValueError(f"--set {both[0]}=... and --{both[0].replace('_', '-')} both give {both[0]}; give it once")
    d.update(pairs)
    return runs.RunConfig.from_dict(d)


def _set_threads(a) -> None:
    """Torch threads of a single-run command: ``--threads``, else ``$STABKIT_THREADS``, else the usable
    CPUs (as a sweep's runs; see :func:`stabkit.sweeps.run_threads`)."""
    import torch

    torch.set_num_threads(sweeps.run_threads(a.threads))


def cmd_train(a) -> int:
    cfg = _config_from_args(a)
    _set_threads(a)
    if not a.measure:
        cfg = cfg.replace(measure=(), states=())
    path = runs.run(cfg, a.root, device=a.device, progress=not a.quiet, force=a.force)
    import pandas as pd
    s = pd.read_parquet(path / "summary.parquet").iloc[0]
    print(f"{path}\nbest test error {s.best_test_err:.4f} (epoch {s.best_epoch}), last {s.last_test_err:.4f}, "
          f"{s.epochs_run} epochs, {s.wall_seconds:.1f} s on {s.device}")
    return 0


def cmd_remeasure(a) -> int:
    if not Path(a.run_dir).is_dir():
        raise ValueError(f"run folder {a.run_dir} does not exist")
    for f in ("config.json", "best.pt"):
        if not (Path(a.run_dir) / f).is_file():
            raise ValueError(f"{a.run_dir} is not a finished run folder: no {f}")
    options = {"layers": {"relu_conventions": a.relu_conventions}} if a.relu_conventions else None
    _set_threads(a)
    tables = runs.remeasure(a.run_dir, measure=a.what, states=a.states, shuffles=a.shuffles, P=a.P,
                            device=a.device, out_dir=a.out, options=options, in_place=a.in_place)
    import pandas as pd
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 60):
        for name, df in tables.items():
            print(f"== {name} ({len(df)} rows)")
            print(df.to_string(max_rows=40))
    if a.out:
        print(f"tables written to {a.out}")
    return 0


def _only(sw: sweeps.Sweep, keys: list[str]) -> sweeps.Sweep:
    """The sweep restricted to the runs ``--only`` names (full keys or unique prefixes), in grid order."""
    if not keys:
        raise ValueError("--only: give one or more run keys (`stabkit sweep ... --dry-run` lists them)")
    chosen = set()
    for k in keys:
        hits = [c.key for c in sw.configs if c.key.startswith(k)]
        if len(hits) != 1:
            what = "matches no run" if not hits else f"matches {len(hits)} runs ({', '.join(hits[:4])})"
            raise ValueError(f"--only: {k!r} {what} of {sw.name}/{sw.scale}; accepted: a key or a unique prefix "
                             f"of one (`stabkit sweep {sw.name} --scale {sw.scale} --dry-run` lists them)")
        chosen.add(hits[0])
    return replace(sw, configs=[c for c in sw.configs if c.key in chosen])


def cmd_sweep(a) -> int:
    if a.deadline is not None and (a.executor != "local" or runs.resolve_device(a.device).split(":")[0] != "cpu"):
        raise ValueError("--deadline: the forecast it reads is of CPU runs (--executor local on --device cpu); "
                         "on a GPU allocation `stabkit campaign --deadline` plans the runs")
    sw = sweeps.load_sweep(a.spec, a.scale)
    if a.only is not None:
        sw = _only(sw, a.only)
    root = Path(a.root) if a.root else runs.default_runs_root()
    committed = set() if a.recompute else sweeps.committed_keys(sw.name, sw.scale, a.results_root)
    if a.dry_run:
        sw.validate()
        for c in sw.configs:
            st = runs.run_state(root / c.key)
            st = "committed" if c.key in committed and st != "done" else st
            if st == "running" and (line := runs.progress_line(root / c.key)):
                st = f"{st} ({line})"
            donor = runs.find_trained(c, root) if st not in ("done", "committed") else None
            st = f"{st} (network trained by {donor.name})" if donor is not None else st
            if st == "interrupted" and runs.finished_training(root / c.key, c.key) is not None:
                st = f"{st} (trained: measured again)"
            elif st == "interrupted":
                from .checkpoints import CheckpointFolder  # pandas: only in the commands that need it
                ep = CheckpointFolder(root / c.key, c.net, c.key).resume_epoch()
                st = f"{st} (training resumes after epoch {ep})" if ep else st
            print(c.key, st, json.dumps(c.to_dict(), sort_keys=True))
        print(f"{len(sw)} runs in {sw.name}/{sw.scale} under {root} ({len(committed & set(sw.keys))} committed)")
        return 0
    rep = sweeps.sweep(sw, a.scale, root, executor=a.executor, jobs=a.jobs, device=a.device,
                     slots_per_gpu=a.slots_per_gpu, retry_failed=a.retry_failed, progress=not a.quiet,
                     submitit_params=_pairs(a.submitit_param, "--submitit-param") or None, verify=a.verify,
                     redo=True if a.redo == [] else (a.redo or False), threads=a.threads,
                     wait_timeout_s=a.wait_timeout, skip_keys=committed, emulated=a.emulated,
                     admit=None if a.deadline is None else campaign.admit_before(
                         sw, _process_start() + a.deadline, a.threads, label=f"--deadline {a.deadline:g} s",
                         runs_root=root, results_root=a.results_root))
    counts = rep.status.value_counts().to_dict()
    print(f"{sw.name}/{sw.scale}: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("done", "committed", "failed",
                                                                                  "running", "pending"))
          + f" (root {root})")
    bad = rep[~rep.status.isin(["done", "committed"])]
    if len(bad) and a.quiet:  # without --quiet, sweep() has printed the list already
        print(f"{len(bad)} of {len(rep)} run(s) did not finish:\n{sweeps.failure_summary(rep)}", file=sys.stderr)
    return 1 if len(bad) else 0


def cmd_export(a) -> int:
    out = sweeps.export(a.spec, a.scale, a.root, a.results_root, out_dir=a.out)
    print(f"exported {a.spec}/{a.scale} to {out}")
    return 0


def cmd_import(a) -> int:
    rep = sweeps.import_runs(a.path, a.results_root)
    for (sw, sc), g in rep.groupby(["sweep", "scale"], sort=True):
        counts = g.action.value_counts().to_dict()
        print(f"{sw}/{sc}: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("added", "replaced", "kept", "repaired")
                                    if k != "repaired" or counts.get(k))
              + f" -> {sweeps.store_dir(sw, sc, a.results_root)}")
    print(f"imported {len(rep)} run record(s) from {a.path}")
    return 0


def _process_start() -> float:
    """When this process started (``time.time()`` clock): the campaign's deadline counts from there."""
    import time
    try:  # field 22 of /proc/self/stat: start time in clock ticks after boot
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return min(time.time(), boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration, AttributeError):
        return time.time()


def cmd_campaign(a) -> int:
    only = [o.strip() for o in a.only.split(",") if o.strip()] if a.only else None
    campaign.check_options(a.deadline, jobs=a.jobs, device=a.device, scale=a.scale, only=only,
                    smoke_seconds=a.smoke_seconds, out=a.out, runs_root=a.root)  # --dry-run too
    if a.dry_run:
        plan = campaign.make_plan(a.scale, only=only, runs_root=a.root, results_root=a.results_root)
        dev = a.device if a.device != "auto" else "cuda"
        slots = a.jobs if not dev.startswith("cuda") else 1
        model = campaign.TimeModel(dev, campaign.plan.zero_loss_epochs())
        est = campaign.estimate_plan(plan, model, slots)
        print(f"time model (assumptions, device {dev}), scale {a.scale}:")
        for n in plan.notes:
            print(f"  note: {n}")
        for r in est["stages"]:
            print(f"  {r['stage']:24s} {r['runs']:4d} runs, {r['committed']:3d} committed, {r['todo']:4d} to do, "
                  f"{r['estimate_serial_s']:9.0f} s")
        print(f"  total {len(plan.todo)} runs to do, {est['total_serial_s']:.0f} s on one slot")
        smoke = min(a.smoke_seconds, 0.5 * a.deadline)
        sim = campaign.simulate(plan, model, slots, a.deadline, start=smoke)
        fit = [r for r in sim if r["fits"]]
        print(f"expected to finish in {a.deadline:.0f} s ({smoke:.0f} s smoke test, {slots} slot(s)): {len(fit)} of "
              f"{len(sim)} runs")
        if dev.startswith("cuda") and a.jobs > 1:  # the throughput test may give the GPU to several runs
            many = campaign.simulate(plan, model, a.jobs, a.deadline, start=smoke)
            print(f"  with {a.jobs} runs sharing the GPU (time model's assumed speed-up): "
                  f"{sum(r['fits'] for r in many)} runs")
        for r in sim[:max(len(fit), 12)]:
            print(f"  {'+' if r['fits'] else '-'} {r['start_s']:7.1f} -> {r['end_s']:8.1f} s  {r['stage']:22s} "
                  f"{r['net']:15s} seed {r['seed']}  {r['key']}")
        return 0
    s = campaign.campaign(a.out, a.deadline, jobs=a.jobs, device=a.device, scale=a.scale, only=only, runs_root=a.root,
                   results_root=a.results_root, smoke_seconds=a.smoke_seconds, deterministic=a.deterministic,
                   started=_process_start())
    print(f"campaign: {s.get('finished', 0)} run(s) finished, {s.get('failed', 0)} failed, "
          f"{s.get('not_started', 0)} not started; files in {a.out}")
    return 0


def cmd_collect(a) -> int:
    df = sweeps.collect(a.root, a.table, a.spec, a.scale)
    if a.csv:
        df.to_csv(a.csv, index=False)
        print(f"{len(df)} rows written to {a.csv}")
    else:
        import pandas as pd
        with pd.option_context("display.width", 200, "display.max_columns", 16):
            print(df.to_string(max_rows=40) if len(df) else f"no finished run has table {a.table!r}")
    return 0


def cmd_status(a) -> int:
    specs = a.spec or sorted(str(p) for p in runs.sweeps_dir().glob("*.yaml"))
    if not specs:
        c = sweeps.status(a.root)
        print(f"{runs.default_runs_root() if not a.root else a.root}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
        return 0
    errors = 0  # a sweep file that cannot be read: the exit status says so, not only the table
    shown: set[str] = set()  # running runs already listed (a run is in every sweep that includes it)
    forecasts: list = []  # the sweeps whose unfinished runs --forecast estimates
    # committed: published under results/; finished: done in the runs root, not committed (export them)
    print(f"{'sweep':34s} {'scale':6s} {'total':>6s} {'committed':>9s} {'finished':>8s} {'running':>8s} "
          f"{'failed':>7s} {'pending':>8s}")
    for spec in specs:
        path = sweeps.sweep_path(spec)
        scales = [a.scale] if a.scale else sweeps.sweep_scales(path)
        for sc in scales:
            try:
                sw = sweeps.load_sweep(path, sc)
                c = sweeps.status(a.root, sw, committed=sweeps.committed_keys(sw.name, sc, a.results_root))
            except ValueError as exc:
                print(f"{path.stem:34s} {sc:6s} error: {exc}")
                errors += 1
                continue
            print(f"{path.stem:34s} {sc:6s} {c['total']:6d} {c['committed']:9d} {c['done']:8d} {c['running']:8d} "
                  f"{c['failed']:7d} {c['pending']:8d}")
            if c["running"]:  # what each running run last reported
                root = Path(a.root) if a.root else runs.default_runs_root()
                for cfg in sw.configs:
                    if cfg.key not in shown and runs.run_state(root / cfg.key) == "running":
                        shown.add(cfg.key)
                        line = runs.progress_line(root / cfg.key) or "no progress reported yet"
                        print(f"  running {cfg.key} {cfg.net} seed {cfg.seed}: {line}")
            if a.forecast:
                forecasts.append(sw)
    if a.forecast:
        _print_forecasts(forecasts, a.root, a.results_root)
    return 1 if errors else 0


def _print_forecasts(sws: list, root: str | None, results_root: str | None) -> None:
    """The unfinished runs of each sweep with the core-hours they still need (stabkit.campaign.forecast);
    a run shared by several sweeps is listed under the first."""
    import os

    from .campaign import forecast_sweep, paces
    measured = paces(results_root, root)
    listed: set[str] = set()
    planned: dict[str, str] = {}  # networks that a run listed above trains
    cores = os.cpu_count() or 1
    print(f"\nCore-hours still needed on a CPU, at the pace of {len(measured)} finished CPU runs "
          "(the median epoch of the same network, scaled by the time model; CPU time where recorded):")
    for sw in sws:
        f = forecast_sweep(sw, runs_root=root, results_root=results_root, measured=measured, planned=planned)
        shared = f.key.isin(listed)
        f = f[~shared]
        listed.update(f.key)
        if f.empty:
            if shared.any():
                print(f"{sw.name} {sw.scale}: its {int(shared.sum())} unfinished runs are listed above")
            continue
        emulated = f.emulated.astype(bool)
        total = f.core_hours[~emulated].sum()
        also = f" ({int(shared.sum())} more listed above)" if shared.any() else ""
        print(f"{sw.name} {sw.scale}: {int((~emulated).sum())} unfinished runs{also}, about {total:.1f} core-hours "
              f"({total / cores:.1f} h on this machine's {cores} cores)"
              + (f"; {int(emulated.sum())} more in bf16, which this CPU only emulates (11-29x slower; a sweep here "
                 f"skips them): about {f.core_hours[emulated].sum():.1f} core-hours on a CPU with native bf16"
                 if emulated.any() else ""))
        print(f"  {'key':12s} {'net':16s} {'width':>5s} {'epochs':>6s} {'noise':>5s} {'seed':>4s} {'state':11s} "
              f"{'left':>4s} {'core-h':>6s}  basis")
        for r in f.itertuples(index=False):
            print(f"  {r.key:12s} {r.net:16s} {r.width_factor:5.3g} {r.epochs!s:>6s} {r.noise_std:5.3g} {r.seed:4d} "
                  f"{r.state:11s} {r.epochs_left:4d} {r.core_hours:6.2f}  {r.basis}"
                  + ("  [bf16 emulated here: skipped]" if r.emulated else ""))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stabkit", description="stabkit: train, measure and sweep "
                                "(diffeomorphism / noise stabilities of deep nets, layer by layer).")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,remeasure,sweep,collect,export,import,campaign,status}")

    def threads(q, whose="", note=""):
        q.add_argument("--threads", type=_positive_int, default=None,
                       help=f"torch threads{whose} (default $STABKIT_THREADS, else the usable CPUs{note})")

    def common(q, device=True):
        q.add_argument("--root", default=None, help="runs root (default: $STABKIT_RUNS, else <repo>/runs, "
                       "else ~/.cache/stabkit/runs)")
        if device:
            q.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")

    q = sub.add_parser("train", help="train one configuration (a run without measurements unless --measure)",
                       description="Train one RunConfig; its folder is <root>/<key>.")
    q.add_argument("--config", help="YAML/JSON file with RunConfig fields")
    q.add_argument("--task", choices=list(TASKS))
    q.add_argument("--net")
    q.add_argument("--epochs", type=int)
    q.add_argument("--seed", type=int)
    q.add_argument("--ptr", type=int)
    q.add_argument("--width-factor", dest="width_factor", type=float)
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="any RunConfig field (YAML value)")
    q.add_argument("--measure", action="store_true", help="also run the config's measurements")
    q.add_argument("--force", action="store_true", help="redo even if the run is done")
    q.add_argument("--quiet", action="store_true")
    threads(q)
    common(q)
    q.set_defaults(fn=cmd_train)

    q = sub.add_parser("remeasure", help="measure a trained run (best checkpoint) again",
                       description="Run measurements on a finished run folder (best checkpoint, checked "
                                   "against the run's key); prints the tables; writes into the folder only with "
                                   "--in-place (the run's own tables, refreshed by the current code).")
    q.add_argument("run_dir", help="a run folder <root>/<key> with config.json and best.pt")
    q.add_argument("--what", nargs="+", default=None, help="measurement names (default: the run's)")
    q.add_argument("--states", nargs="+", default=None, choices=["init", "trained"])
    q.add_argument("--shuffles", nargs="+", type=int, default=None, choices=[0, 1, 2])
    q.add_argument("--P", type=int, default=None, help="number of probes")
    q.add_argument("--out", default=None, help="write <table>.parquet here")
    q.add_argument("--relu-conventions", dest="relu_conventions", nargs="+", default=None,
                   choices=["true", "inplace"], help="layers measured with these ReLU conventions ('inplace': the "
                                                    "original code's post-ReLU values at conv/BN nodes)")
    q.add_argument("--in-place", dest="in_place", action="store_true",
                   help="replace the run's own measurement tables with the current code's (no other option)")
    threads(q)
    q.add_argument("--device", default="auto")
    q.set_defaults(fn=cmd_remeasure)

    q = sub.add_parser("sweep", help="run a sweep (skips finished runs)",
                       description="Run every unfinished configuration of sweeps/<fig>.yaml at one scale.")
    q.add_argument("spec", help="sweep YAML file or name under sweeps/")
    q.add_argument("--scale", default="small", help="tiny | small | cpu | gpu | paper (default small)")
    q.add_argument("--jobs", type=_positive_int, default=1, help="concurrent runs (default 1)")
    q.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local", "submitit-debug"],
                   help="local (default) | slurm (refused where SLURM is absent) | submitit-local | submitit-debug")
    q.add_argument("--slots-per-gpu", dest="slots_per_gpu", type=_positive_int, default=1,
                   help="concurrent runs per GPU with --jobs (default 1)")
    threads(q, " of every run", "; the same whatever --jobs, so that results do not depend on it")
    q.add_argument("--verify", action="store_true",
                   help="check the files of finished runs first; redo those that are damaged (named)")
    q.add_argument("--redo", nargs="*", default=None, metavar="KEY",
                   help="recompute these runs (default: every run of the sweep) even if finished")
    q.add_argument("--only", nargs="*", default=None, metavar="KEY",
                   help="run only these runs of the sweep (keys or unique prefixes; the others stay as they are)")
    q.add_argument("--deadline", type=_positive_seconds, default=None, metavar="SECONDS",
                   help="start a run only if its forecast (`status --forecast`, with a 20%% margin) ends within "
                        "SECONDS of this command's start; the others stay pending, with the reason (a session "
                        "whose machine goes away starts nothing it cannot finish)")
    q.add_argument("--emulated", default="skip", choices=["skip", "run"],
                   help="runs trained in bf16 on a CPU without native bf16 (emulated, 11-29x slower): skip "
                        "(default; reported pending, the other runs go on) | run")
    q.add_argument("--wait-timeout", dest="wait_timeout", type=float, default=None, metavar="SECONDS",
                   help="stop waiting for runs computed by another process after this long (default: wait "
                        "while their heartbeat is younger than 2 h)")
    q.add_argument("--retry-failed", dest="retry_failed", action="store_true")
    q.add_argument("--recompute", action="store_true",
                   help="also run configurations whose results are committed under results/ (skipped by default)")
    q.add_argument("--results-root", dest="results_root", default=None,
                   help="committed results store (default: $STABKIT_RESULTS, else <repo>/results)")
    q.add_argument("--submitit-param", dest="submitit_param", action="append", metavar="KEY=VALUE",
                   help="submitit update_parameters, e.g. timeout_min=600 slurm_partition=gpu")
    q.add_argument("--dry-run", dest="dry_run", action="store_true", help="list the runs and their state")
    q.add_argument("--quiet", action="store_true")
    common(q)
    q.set_defaults(fn=cmd_sweep)

    q = sub.add_parser("collect", help="gather one table of a sweep's finished runs",
                       description="Print/save one collected table (the rows of every finished run, then its "
                                   "configuration columns; mapping fields as dotted columns, e.g. "
                                   "task_options.d).")
    q.add_argument("spec", nargs="?", default=None, help="sweep YAML file or name (default: every run)")
    q.add_argument("--scale", default="small")
    q.add_argument("--table", default="output", help="metrics | output | layers | spectra | summary | ...")
    q.add_argument("--csv", default=None, help="write the table as CSV")
    common(q, device=False)
    q.set_defaults(fn=cmd_collect)

    q = sub.add_parser("export", help="write every table of a sweep and provenance.json, for committing",
                       description="Export every collected table of a sweep's finished runs and provenance.json "
                                   "(git commit, versions, devices, wall times) to a folder (default "
                                   "results/<sweep>/<scale>/).")
    q.add_argument("spec", help="sweep YAML file or name")
    q.add_argument("--scale", default="small")
    q.add_argument("--runs-root", "--root", dest="root", default=None,
                   help="runs root (default: $STABKIT_RUNS, else <repo>/runs)")
    q.add_argument("--results-root", dest="results_root", default=None,
                   help="results store root (default: $STABKIT_RESULTS, else <repo>/results)")
    q.add_argument("--out", default=None, help="the store folder itself (default: <results root>/<sweep>/<scale>)")
    q.set_defaults(fn=cmd_export)

    q = sub.add_parser("import", help="merge a campaign's runs.tar into the results store",
                       description="Merge the finished runs packed by `campaign` (a campaign folder, its runs.tar, "
                                   "or a folder of run folders with manifest.json) into results/<sweep>/<scale>/ "
                                   "for every sweep and scale the manifest lists, by run key.")
    q.add_argument("path", help="campaign folder, runs.tar, or folder with manifest.json")
    q.add_argument("--results-root", dest="results_root", default=None,
                   help="results store root (default: $STABKIT_RESULTS, else <repo>/results)")
    q.set_defaults(fn=cmd_import)

    q = sub.add_parser("campaign", help="run the missing figure runs that fit before a deadline (GPU allocations)",
                       description="Smoke test, then the configurations missing from results/ (committed at any "
                                   "scale counts) in priority order (Fig. 3, Fig. 1 noise 0, Fig. 1 noise 30, the "
                                   "Fig. 5 nets the cpu scale lacks, Fig. 2, Fig. 6, Fig. 5, 1-D appendix, the rest "
                                   "of Fig. 1, probes), never starting a run whose estimated time passes the "
                                   "deadline; after each run DIR/runs.tar.gz (then runs-2.tar.gz, ... past 14 MiB) "
                                   "holds every finished run's tables (no checkpoints), beside campaign.log, "
                                   "smoke.json, gpu_trace.csv, timing.json. Merge with `python -m stabkit import DIR`.")
    q.add_argument("--deadline", type=float, required=True, help="seconds from now when everything must be done")
    q.add_argument("--out", required=True, help="campaign folder DIR (the packed runs and 4 files)")
    q.add_argument("--jobs", type=int, default=1, help="worker processes (CUDA: runs sharing the GPU chosen from "
                   "measured throughput, at most this many; CPU: all of them)")
    q.add_argument("--scale", default="gpu", help="sweep scale (default gpu; tiny for a rehearsal)")
    q.add_argument("--only", default=None, help="comma-separated sweep names or prefixes, e.g. fig6,fig5")
    q.add_argument("--smoke-seconds", dest="smoke_seconds", type=float, default=30.0,
                   help="smoke-test budget (default 30)")
    q.add_argument("--deterministic", action="store_true", help="deterministic training (slower on CUDA)")
    q.add_argument("--results-root", dest="results_root", default=None,
                   help="committed results (default: $STABKIT_RESULTS, else <repo>/results)")
    q.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print the plan and the time model's estimates (assumptions), run nothing")
    q.add_argument("--root", default=None, help="runs root for run folders and checkpoints (default: "
                   "$STABKIT_RUNS, else a new temporary folder; never inside --out)")
    q.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    q.set_defaults(fn=cmd_campaign)

    q = sub.add_parser("status", help="committed / finished / running / failed / pending per sweep",
                       description="Count the runs of each sweep and scale: committed (published under results/), "
                                   "finished (done in the runs root, not committed yet: export them), running, "
                                   "failed and pending.")
    q.add_argument("spec", nargs="*", help="sweep files or names (default: every sweeps/*.yaml)")
    q.add_argument("--scale", default=None, help="one scale (default: every scale of each sweep)")
    q.add_argument("--results-root", dest="results_root", default=None,
                   help="committed results store (default: $STABKIT_RESULTS, else <repo>/results)")
    q.add_argument("--forecast", action="store_true",
                   help="also list each sweep's unfinished runs with the core-hours they still need on a CPU, "
                        "estimated from the pace of finished CPU runs (committed and in the runs root)")
    common(q, device=False)
    q.set_defaults(fn=cmd_status)
    return p


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that report bad input or a missing file: one line on stderr, exit status 2."""
    errs: list[type[BaseException]] = [ValueError, TypeError, OSError]
    try:
        import yaml
        errs.append(yaml.YAMLError)
    except ImportError:
        pass
    return (*errs, runs.RunLocked)


def main(argv: list[str] | None = None) -> int:
    """Run one command; an expected error (bad input, a missing file or folder, a run locked by another
    process) prints one line ``error: ...`` on stderr and returns 2 (``$STABKIT_DEBUG=1``: traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("STABKIT_DEBUG") or not isinstance(exc, _expected_errors()):
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{exc.filename}: {msg}"
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
