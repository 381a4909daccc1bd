"""Command line: ``python -m stabkit {train,remeasure,sweep,collect,export,status} --help``.

Examples::

    python -m stabkit sweep sweeps/fig5_scale_detection.yaml --scale small --jobs 2
    python -m stabkit status --scale small
    python -m stabkit collect fig5_scale_detection --scale small --table output
    python -m stabkit export fig5_scale_detection --scale gpu --out results/fig5_scale_detection/gpu
    python -m stabkit train --task twopoints --net LeNet --set epochs=20 --set width_factor=0.5
    python -m stabkit remeasure runs/<key> --what output layers --shuffles 0 1

Only the standard library, torch, pandas and PyYAML are needed (no Jupyter); submitit only for
``--executor slurm``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .protocol import TASKS

if TYPE_CHECKING:  # the command line imports pandas/torch only in the commands that need them
    from .runs import RunConfig


def _parse_value(text: str):
    import yaml
    return yaml.safe_load(text)


def _pairs(items: list[str] | None, what: str) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"error: {what} expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


def _config_from_args(a) -> RunConfig:
    from .runs import RunConfig
    d: dict = {}
    if a.config:
        import yaml
        d.update(yaml.safe_load(Path(a.config).read_text()) or {})
    for k in ("task", "net", "epochs", "seed", "ptr", "width_factor"):
        v = getattr(a, k, None)
        if v is not None:
            d[k] = v
    d.update(_pairs(a.set, "--set"))
    return RunConfig.from_dict(d)


def cmd_train(a) -> int:
    from . import runs
    cfg = _config_from_args(a)
    if not a.measure:
        cfg = cfg.replace(measure=(), states=())
    path = runs.run(cfg, a.root, device=a.device, progress=not a.quiet, force=a.force)
    import pandas as pd
    s = pd.read_parquet(path / "summary.parquet").iloc[0]
    print(f"{path}\nbest test error {s.best_test_err:.4f} (epoch {s.best_epoch}), last {s.last_test_err:.4f}, "
          f"{s.epochs_run} epochs, {s.wall_seconds:.1f} s on {s.device}")
    return 0


def cmd_remeasure(a) -> int:
    from . import runs
    tables = runs.remeasure(a.run_dir, measure=a.what, states=a.states, shuffles=a.shuffles, P=a.P,
                            device=a.device, out_dir=a.out)
    import pandas as pd
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 60):
        for name, df in tables.items():
            print(f"== {name} ({len(df)} rows)")
            print(df.to_string(max_rows=40))
    if a.out:
        print(f"tables written to {a.out}")
    return 0


def cmd_sweep(a) -> int:
    from . import runs
    sw = runs.load_sweep(a.spec, a.scale)
    root = Path(a.root) if a.root else runs.default_runs_root()
    if a.dry_run:
        sw.validate()
        for c in sw.configs:
            print(c.key, runs.run_state(root / c.key), json.dumps(c.to_dict(), sort_keys=True))
        print(f"{len(sw)} runs in {sw.name}/{sw.scale} under {root}")
        return 0
    rep = runs.sweep(sw, a.scale, root, executor=a.executor, jobs=a.jobs, device=a.device,
                     slots_per_gpu=a.slots_per_gpu, retry_failed=a.retry_failed, progress=not a.quiet,
                     submitit_params=_pairs(a.submitit_param, "--submitit-param") or None)
    counts = rep.status.value_counts().to_dict()
    print(f"{sw.name}/{sw.scale}: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("done", "failed", "running",
                                                                                  "pending")) + f" (root {root})")
    return 1 if counts.get("failed", 0) else 0


def cmd_export(a) -> int:
    from . import runs
    out = runs.export(a.spec, a.scale, a.root, a.out)
    print(f"exported {a.spec}/{a.scale} to {out}")
    return 0


def cmd_collect(a) -> int:
    from . import runs
    df = runs.collect(a.root, a.table, a.spec, a.scale)
    if a.csv:
        df.to_csv(a.csv, index=False)
        print(f"{len(df)} rows written to {a.csv}")
    else:
        import pandas as pd
        with pd.option_context("display.width", 200, "display.max_columns", 16):
            print(df.to_string(max_rows=40) if len(df) else f"no finished run has table {a.table!r}")
    return 0


def cmd_status(a) -> int:
    from . import runs
    specs = a.spec or sorted(str(p) for p in runs.sweeps_dir().glob("*.yaml"))
    if not specs:
        c = runs.status(a.root)
        print(f"{runs.default_runs_root() if not a.root else a.root}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
        return 0
    print(f"{'sweep':34s} {'scale':6s} {'total':>6s} {'done':>6s} {'pending':>8s} {'failed':>7s} {'running':>8s}")
    for spec in specs:
        path = runs.sweep_path(spec)
        scales = [a.scale] if a.scale else runs.sweep_scales(path)
        for sc in scales:
            try:
                c = runs.status(a.root, spec, sc)
            except ValueError as exc:
                print(f"{path.stem:34s} {sc:6s} error: {exc}")
                continue
            print(f"{path.stem:34s} {sc:6s} {c['total']:6d} {c['done']:6d} {c['pending']:8d} {c['failed']:7d} "
                  f"{c['running']:8d}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stabkit", description="stabkit: train, measure and sweep "
                                "(diffeomorphism / noise stabilities of deep nets, layer by layer).")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,remeasure,sweep,collect,export,status}")

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
    common(q)
    q.set_defaults(fn=cmd_train)

    q = sub.add_parser("remeasure", help="measure a trained run (best checkpoint) again",
                       description="Run measurements on a finished run folder (best checkpoint, checked "
                                   "against the run's key); prints the tables, never writes into the folder.")
    q.add_argument("run_dir", help="a run folder <root>/<key> with config.json and best.pt")
    q.add_argument("--what", nargs="+", default=None, help="measurement names (default: the run's)")
    q.add_argument("--states", nargs="+", default=None, choices=["init", "trained"])
    q.add_argument("--shuffles", nargs="+", type=int, default=None, choices=[0, 1, 2])
    q.add_argument("--P", type=int, default=None, help="number of probes")
    q.add_argument("--out", default=None, help="write <table>.parquet here")
    q.add_argument("--device", default="auto")
    q.set_defaults(fn=cmd_remeasure)

    q = sub.add_parser("sweep", help="run a sweep (skips finished runs)",
                       description="Run every unfinished configuration of sweeps/<fig>.yaml at one scale.")
    q.add_argument("spec", help="sweep YAML file or name under sweeps/")
    q.add_argument("--scale", default="small", help="tiny | small | cpu | gpu | paper (default small)")
    q.add_argument("--jobs", type=int, default=1, help="concurrent runs (default 1)")
    q.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local", "submitit-debug"])
    q.add_argument("--slots-per-gpu", dest="slots_per_gpu", type=int, default=1)
    q.add_argument("--retry-failed", dest="retry_failed", action="store_true")
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
    q.add_argument("--out", default=None, help="export folder (default: <results root>/<sweep>/<scale>)")
    common(q, device=False)
    q.set_defaults(fn=cmd_export)

    q = sub.add_parser("status", help="done / pending / failed per sweep",
                       description="Count done / pending / failed / running runs per sweep and scale.")
    q.add_argument("spec", nargs="*", help="sweep files or names (default: every sweeps/*.yaml)")
    q.add_argument("--scale", default=None, help="one scale (default: every scale of each sweep)")
    common(q, device=False)
    q.set_defaults(fn=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
