"""The campaign's plan: the runs missing from ``results/`` in priority order, checked options, and what the
time model says of them (``simulate()``, ``estimate_plan()``).
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runs.config import RunConfig
from ..runs.folder import run_state
from ..runs.paths import sweeps_dir
from ..sweeps.resultstore import committed_keys, committed_scales
from ..sweeps.sweepfile import Campaign, Stage, load_sweep, sweep_facts, sweep_scales
from .timemodel import TimeModel

__all__ = ["campaign_blocks", "stages", "zero_loss_epochs", "PlanItem", "Plan", "make_plan", "check_options",
           "simulate", "estimate_plan"]


@functools.cache
def _nets_at(sweep: str, scale: str) -> frozenset[str]:
    """The networks of ``sweep``'s grid at ``scale`` (empty when the sweep lacks that scale)."""
    if scale not in sweep_scales(sweep):
        return frozenset()
    return frozenset(c.net for c in load_sweep(sweep, scale).configs)


def campaign_blocks() -> dict[str, Campaign]:
    """The ``campaign:`` block of every sweep file of ``sweeps/`` that has one, by sweep name (name order)."""
    out = {}
    for name in _all_sweeps():
        block = sweep_facts(name).campaign
        if block is not None:
            out[name] = block
    return out


def stages() -> list[tuple[str, Stage]]:
    """``(sweep, stage)`` of every sweep file's ``campaign.stages``, by ascending priority (on a tie, by sweep
    name, then file order): the book's biggest gaps first, as the sweep files say. A run is planned in the first
    stage that selects it; sweeps without stages come after them all, in name order."""
    found = [(st.priority, name, i, st) for name, block in campaign_blocks().items()
             for i, st in enumerate(block.stages)]
    return [(name, st) for _, name, _, st in sorted(found, key=lambda t: t[:3])]


def zero_loss_epochs() -> dict[str, int]:
    """Network -> epochs until zero training loss, merged over the sweep files' ``campaign.zero_loss_epochs``
    (the time model's assumption; ``ValueError`` naming both files when two give one network different values)."""
    out: dict[str, int] = {}
    source: dict[str, str] = {}
    for name, block in campaign_blocks().items():
        for net, n in block.zero_loss_epochs.items():
            if net in out and out[net] != n:
                raise ValueError(f"campaign.zero_loss_epochs.{net}: {out[net]} in sweep {source[net]!r}, {n} in "
                                 f"sweep {name!r}; give one value")
            out[net], source[net] = n, name
    return out


# ---------------------------------------------------------------------------------------- the plan


@dataclass
class PlanItem:
    """One run of the plan: its stage label, configuration and the (sweep, scale) pairs that list it."""
    stage: str
    cfg: RunConfig
    members: list[tuple[str, str]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.cfg.key


@dataclass
class Plan:
    """``items`` (every run of the selected stages, in priority order, unique), ``todo`` (their keys
    neither committed nor finished in the runs root), ``done`` (finished in the runs root, not committed),
    ``committed`` (keys), ``stages`` (per stage: label, sweep, runs, committed, done, todo), ``notes``."""
    scale: str
    items: list[PlanItem]
    todo: list[str]
    done: list[str]
    committed: set[str]
    stages: list[dict[str, Any]]
    members: dict[str, list[tuple[str, str]]]
    notes: list[str]

    def item(self, key: str) -> PlanItem:
        index = self.__dict__.get("_index")
        if index is None or len(index) != len(self.items):  # the scheduler asks every second: no scan
            index = self.__dict__["_index"] = {i.key: i for i in self.items}
        return index[key]


def _all_sweeps() -> list[str]:
    return sorted(p.stem for p in sweeps_dir().glob("*.yaml"))


def _selected(only: Sequence[str] | None, sweep: str) -> bool:
    return not only or any(sweep == o or sweep.startswith(f"{o}_") for o in only)


def make_plan(scale: str, *, only: Sequence[str] | None = None, runs_root: str | Path | None = None,
              results_root: str | Path | None = None, skip_tasks: Sequence[str] = ()) -> Plan:
    """The campaign's runs at ``scale`` in priority order (see the module text). ``only``: sweep names
    (or prefixes such as ``fig6``); ``skip_tasks``: tasks that cannot run here (e.g. ``cifar10`` without
    the data set)."""
    notes: list[str] = []
    members: dict[str, list[tuple[str, str]]] = {}
    loaded: dict[str, list[RunConfig]] = {}
    for name in _all_sweeps():
        if scale not in sweep_scales(name):
            continue
        sw = load_sweep(name, scale).validate()
        loaded[name] = sw.configs
        for c in sw.configs:
            members.setdefault(c.key, []).append((name, scale))
    # a run key hashes the whole configuration: a key committed at any (sweep, scale) is the same run, e.g.
    # the cpu scale's runs whose configuration is also in the gpu grid (Fig. 6), so it is never planned
    committed: set[str] = set()
    elsewhere: dict[str, set[str]] = {}
    for name in _all_sweeps():
        for sc in committed_scales(name, results_root):
            keys = committed_keys(name, sc, results_root)
            committed |= keys
            if sc != scale:
                for k in keys & members.keys():
                    elsewhere.setdefault(k, set()).add(sc)
    if elsewhere:
        scales = sorted({sc for v in elsewhere.values() for sc in v})
        notes.append(f"{len(elsewhere)} run(s) of the {scale} grid are committed at scale(s) {scales} only: "
                     "counted as done (pages read them by key)")
    ordered = [(st.label, name, st) for name, st in stages()]
    ordered += [(f"other: {n}", n, None) for n in loaded if n not in {name for _, name, _ in ordered}]
    root = Path(runs_root) if runs_root else None
    items: dict[str, PlanItem] = {}
    rows = []
    for label, name, stage in ordered:
        if not _selected(only, name):
            continue
        if name not in loaded:
            notes.append(f"{label}: sweep {name} has no scale {scale!r} (skipped)")
            continue
        nets = _nets_at(name, stage.unless_nets_of_scale) if stage and stage.unless_nets_of_scale else frozenset()
        cfgs = [c for c in loaded[name] if stage is None or stage.selects(c, nets)]
        skipped = [c for c in cfgs if c.task in skip_tasks]
        if skipped:
            notes.append(f"{label}: {len(skipped)} run(s) of task(s) {sorted({c.task for c in skipped})} "
                         "cannot run here (skipped)")
        cfgs = [c for c in cfgs if c.task not in skip_tasks]
        # seed 0 of every network before any second seed (stable: grid order otherwise)
        cfgs = sorted(cfgs, key=lambda c: c.seed)
        new = [c for c in cfgs if c.key not in items]
        for c in new:
            items[c.key] = PlanItem(label, c, members.get(c.key, [(name, scale)]))
        n_comm = sum(c.key in committed for c in cfgs)
        n_done = sum(c.key not in committed and root is not None and run_state(root / c.key) == "done"
                     for c in cfgs)
        rows.append({"stage": label, "sweep": name, "runs": len(cfgs), "new_in_stage": len(new),
                     "committed": n_comm, "done_in_runs_root": n_done, "todo": len(cfgs) - n_comm - n_done})
    todo, done = [], []
    for k, it in items.items():
        if k in committed:
            continue
        if root is not None and run_state(root / k) == "done":
            done.append(k)
        else:
            todo.append(k)
    return Plan(scale, list(items.values()), todo, done, committed, rows, members, notes)


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_options(deadline: float, *, jobs: int = 1, device: str = "auto", scale: str = "gpu",
                  only: Sequence[str] | None = None, smoke_seconds: float = 30.0, reserve: float | None = None,
                  out: str | Path | None = None, runs_root: str | Path | None = None) -> list[str]:
    """Check every campaign option before anything runs (``--dry-run`` too): ``ValueError`` naming the
    option and the accepted values. Returns the selected sweeps (all sweeps with ``scale`` when ``only``
    is empty)."""
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not math.isfinite(deadline) \
            or deadline <= 0:
        raise ValueError(f"deadline must be a finite number of seconds > 0, got {deadline!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N, got {device!r}")
    if isinstance(smoke_seconds, bool) or not isinstance(smoke_seconds, (int, float)) \
            or not math.isfinite(smoke_seconds) or smoke_seconds < 0:
        raise ValueError(f"smoke_seconds must be a finite number of seconds >= 0, got {smoke_seconds!r}")
    if reserve is not None and (isinstance(reserve, bool) or not isinstance(reserve, (int, float))
                                or not math.isfinite(reserve) or not 0 <= reserve < deadline):
        raise ValueError(f"reserve must be a number of seconds in [0, deadline), got {reserve!r}")
    names = _all_sweeps()
    with_scale = [n for n in names if scale in sweep_scales(n)]
    if not with_scale:
        have = sorted({sc for n in names for sc in sweep_scales(n)})
        raise ValueError(f"scale must be a scale of the sweeps {have}, got {scale!r}")
    only = [o for o in (only or []) if o]
    unknown = [o for o in only if not any(_selected([o], n) for n in names)]
    if unknown:
        raise ValueError(f"only: {unknown} match(es) no sweep; sweeps: {names} (a sweep name or a prefix of one)")
    selected = [n for n in with_scale if _selected(only, n)]
    if not selected:
        raise ValueError(f"only: {only} select(s) no sweep with scale {scale!r}; those with it: {with_scale}")
    if out is not None and runs_root is not None:
        o, r = Path(out).resolve(), Path(runs_root).resolve()
        if r == o or o in r.parents:
            raise ValueError(f"runs_root {r} must not be inside out {o} (checkpoints never go there)")
    return selected


def simulate(plan: Plan, model: TimeModel, slots: int, deadline: float, start: float = 0.0,
             reserve: float | None = None) -> list[dict[str, Any]]:
    """What the scheduler would do with the time model's estimates: runs started in priority order on
    ``slots`` workers from ``start`` seconds (the smoke test's end) while their estimate ends before
    ``deadline - reserve`` (the campaign's rule). One row per planned run: key, stage, net, seed, start_s,
    end_s, fits (ends before the deadline)."""
    reserve = max(2.0, 0.02 * deadline) if reserve is None else reserve
    stop = deadline - reserve
    free_at = [float(start)] * max(1, slots)
    trained = {plan.item(k).cfg.training_key for k in plan.done}
    rows = []
    for k in plan.todo:
        cfg = plan.item(k).cfg
        w = min(range(len(free_at)), key=lambda i: free_at[i])
        t = free_at[w]
        reuse = cfg.training_key in trained
        est = model.estimate(cfg, min(slots, len(plan.todo)), reuse)
        fits = t + est <= stop
        if fits:
            free_at[w] = t + est
            trained.add(cfg.training_key)
        rows.append({"key": k, "stage": plan.item(k).stage, "net": cfg.net, "seed": cfg.seed,
                     "start_s": round(t, 1), "end_s": round(t + est, 1), "fits": fits})
    return rows


def estimate_plan(plan: Plan, model: TimeModel, slots: int = 1) -> dict[str, Any]:
    """Time-model estimates of a plan: per stage (runs to do, serial seconds, wall seconds with ``slots``
    runs sharing the device, counting each shared run once, in the first stage that lists it) and per run."""
    per_run = {}
    trained = {plan.item(k).cfg.training_key for k in plan.done}
    for k in plan.todo:  # in priority order: a network is trained by the first run that needs it
        it = plan.item(k)
        reuse = it.cfg.training_key in trained
        trained.add(it.cfg.training_key)
        p = model.parts(it.cfg, reuse)
        per_run[it.key] = {"stage": it.stage, "net": it.cfg.net, "seed": it.cfg.seed, "task": it.cfg.task,
                           "reuses_training": reuse, **{k: round(v, 3) for k, v in p.items()},
                           "wall_with_slots": round(model.estimate(it.cfg, slots, reuse) / max(1, slots), 3)}
    stages = []
    for row in plan.stages:
        mine = [r for r in per_run.values() if r["stage"] == row["stage"]]
        serial = sum(r["total"] for r in mine)
        stages.append({**row, "estimate_serial_s": round(serial, 1),
                       "estimate_wall_s": round(sum(r["wall_with_slots"] for r in mine), 1)})
    total = sum(r["total"] for r in per_run.values())
    return {"scale": plan.scale, "slots": slots, "stages": stages, "runs": per_run,
            "total_serial_s": round(total, 1),
            "total_wall_s": round(sum(r["wall_with_slots"] for r in per_run.values()), 1)}
