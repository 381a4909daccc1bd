"""The campaign's smoke test: does this machine run stabkit, and how fast (:mod:`stabkit.campaign`).

The smoke test ends at its budget's end: a part is skipped once the budget is spent, and a part still
running then is left behind on its thread (recorded as skipped / overrun). Versions and TF32 flags; whether
CIFAR-10 is here, from file names alone and before any budget check, so that a slow machine never drops
the CIFAR-10 runs (their decoding runs in parallel on a background thread, :class:`CifarWarmup`, so that
the workers read the cache); one tiny run per task
(the first configuration of its ``tiny`` sweep), then the same with the fast mode on CUDA; float64
``measure`` on the device against the CPU (relative difference of ``D_f, G_f, R_f`` at most 1e-10); a
training-step and a ``measure`` probe per network family of the plan, which replace the time model's
assumptions; on CUDA with several jobs, the throughput of 1, 2 and 4 concurrent runs.
"""
from __future__ import annotations

import json
import platform
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import contextlib
import os

import numpy as np
import pandas as pd
import torch

from .. import data, nets
from ..data import TwoPoints, twopoints_probes
from ..graph import strict_float32, tf32_float32
from ..runs.config import RunConfig
from ..runs.execute import run
from ..runs.validation import validate
from ..probes import Probes
from ..stability import measure
from ..sweeps.sweepfile import load_sweep
from ..precision import float32_mode, tf32_state
from ..train import make_loss, make_optimizer
from .plan import campaign_blocks
from .timemodel import TimeModel, input_shape, net_features

__all__ = ["smoke_sweeps", "PARITY_TOL", "versions", "cifar_presence", "CifarWarmup", "smoke", "build_model", "step_time", "measure_time",
           "probe_families", "concurrent_rate", "choose_slots", "fast_runs"]

#: Largest relative difference of float64 ``measure`` on the device against the CPU.
PARITY_TOL = 1e-10


def smoke_sweeps() -> list[str]:
    """The sweeps whose first ``tiny`` configuration is the smoke test's run of its task: those whose sweep file
    sets ``campaign.smoke``, in ascending order of it (on a tie, by name)."""
    return [name for _, name in sorted((block.smoke, name) for name, block in campaign_blocks().items()
                                       if block.smoke is not None)]


def versions(device: str) -> dict[str, Any]:
    """Python, torch, torchvision, numpy, pandas, pyarrow versions; CUDA/cuDNN and the GPU on CUDA."""
    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "platform": platform.platform()}
    for name in ("torchvision", "numpy", "pandas", "pyarrow", "yaml"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing package is worth recording, not failing on
            out[name] = None
    if device.startswith("cuda"):
        dev = torch.device(device)
        out.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   gpu=torch.cuda.get_device_name(dev), gpus=torch.cuda.device_count(),
                   capability=".".join(map(str, torch.cuda.get_device_capability(dev))),
                   gpu_memory_gib=round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1))
    return out


def _bounded(fn: Callable[[], Any], until: float) -> tuple[bool, Any]:
    """``(finished, value)`` of ``fn()`` run on a daemon thread and waited for until ``until`` at most: a part
    still running then is left behind (a thread cannot be stopped; its result is ignored), so the smoke test
    really ends at ``until``. ``fn``'s exception is raised here."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    th = threading.Thread(target=target, daemon=True, name="smoke-part")
    th.start()
    th.join(max(0.0, until - time.time()))
    if th.is_alive():
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box.get("value")


def _part(report: dict, name: str, until: float, log: Callable[[str], None], fn: Callable[[], Any]) -> Any:
    """Run one part of the smoke test unless the budget is spent, and never past ``until``; record result,
    error, skip (``report["skipped"]``) or overrun (``report["overrun"]``: still running at ``until``)."""
    if time.time() >= until:
        report.setdefault("skipped", []).append(name)
        log(f"smoke: {name} skipped (budget spent)")
        return None
    t = time.time()
    try:
        finished, value = _bounded(fn, until)
    except Exception as exc:  # noqa: BLE001 - a smoke failure is reported, the campaign decides
        report.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        report.setdefault("tracebacks", {})[name] = "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))[-3000:]
        log(f"smoke: {name} FAILED: {type(exc).__name__}: {exc}")
        return None
    if not finished:
        report.setdefault("overrun", []).append(name)
        log(f"smoke: {name} still running when the budget ran out ({time.time() - t:.1f} s): left in the "
            "background, its result ignored")
        return None
    log(f"smoke: {name} ok ({time.time() - t:.1f} s)")
    return value


def cifar_presence() -> dict[str, Any]:
    """Whether CIFAR-10 is here, decided from names alone (no decoding, milliseconds): ``{"available",
    "kind", "path", "roots"}``. The campaign keeps or drops the CIFAR-10 runs on this, never on the time
    the smoke test has left."""
    found = data.cifar10_location()
    return {"available": found is not None, "kind": found[0] if found else None,
            "path": str(found[1]) if found else None, "roots": [str(r) for r in data.data_roots()]}


class CifarWarmup(threading.Thread):
    """Decodes (and caches) both CIFAR-10 splits on a daemon thread, in parallel, while the smoke test goes
    on, so that the workers read the cache; ``result`` (counts and seconds) or ``error`` once done."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="cifar-warmup")
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.started_at = time.time()

    def run(self) -> None:
        try:
            x, _ = data.cifar10_tensors(train=True)
            te, _ = data.cifar10_tensors(train=False)
            self.result = {"train": int(len(x)), "test": int(len(te)),
                           "seconds": round(time.time() - self.started_at, 2)}
        except Exception as exc:  # noqa: BLE001 - recorded: the CIFAR-10 runs will fail and say why
            self.error = f"{type(exc).__name__}: {exc}"


def _tiny_run(cfg: RunConfig, root: Path, device: str) -> dict[str, Any]:
    t = time.time()
    path = run(cfg, root, device=device, progress=False)
    s = pd.read_parquet(path / "summary.parquet").iloc[0].to_dict()
    keep = ("best_test_err", "epochs_run", "train_seconds", "measure_seconds", "wall_seconds")
    return {"task": cfg.task, "net": cfg.net, "key": cfg.key, "fast": cfg.fast, "seconds": round(time.time() - t, 2),
            **{k: s.get(k) for k in keep}, **{k: s[k] for k in s if str(k).startswith("mode_")}}


def _parity(device: str) -> dict[str, Any]:
    """float64 ``measure`` of LeNet and VGG11bn (width 1/4, batch statistics) on ``device`` vs the CPU."""
    te = TwoPoints(ptr=64, train=False, testsize=64)
    probes = Probes(*twopoints_probes(te.positions, te.d, 16, torch.Generator().manual_seed(0)))
    out = {}
    for name, width, bs in (("LeNet", 1.0, False), ("VGG11bn", 0.25, True)):
        torch.manual_seed(0)
        model = nets.build(name, in_channels=1, num_classes=1, width_factor=width, input_size=28)
        ref = measure(model, probes, dtype=torch.float64, device="cpu", batch_stats=bs)
        got = measure(model, probes, dtype=torch.float64, device=device, batch_stats=bs)
        worst = 0.0
        for q in ("D_f", "G_f", "R_f"):
            a, b = got[q].to_numpy(np.float64), ref[q].to_numpy(np.float64)
            worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))))
        out[name] = {"max_rel_diff": worst, "ok": bool(worst <= PARITY_TOL), "layers": int(len(ref))}
    return out


def smoke(device: str, scale: str, root: Path, until: float, log: Callable[[str], None],
          warmup: CifarWarmup | None = None) -> dict[str, Any]:
    """First part of the smoke test (before the plan): versions, TF32 flags, whether CIFAR-10 is here
    (:func:`cifar_presence`: decided before any budget check), one tiny run per task (without the fast
    mode), float64 parity; never past ``until``. ``root``: where the tiny runs go (the runs root: at
    ``scale="tiny"`` they are runs of the plan). ``warmup``: a started :class:`CifarWarmup`; the tiny
    CIFAR-10 run waits for it (within the budget)."""
    report: dict[str, Any] = {"device": device, "scale": scale, "started": time.time()}
    report["versions"] = versions(device)
    report["tf32"] = tf32_state()
    log(f"smoke: {json.dumps(report['versions'])}; TF32 {report['tf32']}")
    presence = cifar_presence()
    report["cifar10_presence"] = presence
    report["cifar10_available"] = presence["available"]
    log(f"smoke: CIFAR-10 {'found: ' + str(presence['path']) if presence['available'] else 'not found'}")
    runs = []
    for sweep in smoke_sweeps():
        cfg = load_sweep(sweep, "tiny").configs[0]
        task = cfg.task
        if task == "cifar10":
            if not presence["available"]:
                continue
            if warmup is not None:
                warmup.join(max(0.0, until - time.time()))
                report["cifar10"] = warmup.result or {"error": warmup.error, "decoding": warmup.is_alive()}
                if warmup.is_alive():  # the budget is spent: the task stays in the plan, its runs read the cache
                    log("smoke: CIFAR-10 still decoding when the budget ran out: the CIFAR-10 runs stay planned")
        validate(cfg)
        r = _part(report, f"tiny run {task}", until, log, lambda cfg=cfg: _tiny_run(cfg, root, device))
        if r is not None:
            runs.append(r)
    report["tiny_runs"] = runs
    if device.startswith("cpu"):
        report["parity"] = "device is the CPU: nothing to compare"
    else:
        report["parity"] = _part(report, "float64 measure device vs cpu", until, log, lambda: _parity(device))
    return report


def fast_runs(report: dict[str, Any], device: str, root: Path, until: float, log: Callable[[str], None]) -> None:
    """The tiny runs again with the fast mode (bf16 autocast + channels_last), on CUDA only."""
    if not device.startswith("cuda"):
        report["fast_runs"] = "not on CUDA: the fast mode has no effect on the CPU"
        return
    out = []
    for sweep in smoke_sweeps():
        cfg = load_sweep(sweep, "tiny").configs[0]
        task = cfg.task
        if task == "cifar10" and not report.get("cifar10_available"):
            continue
        cfg = cfg.replace(fast=True)
        r = _part(report, f"tiny run {task} fast", until, log, lambda cfg=cfg: _tiny_run(cfg, root, device))
        if r is not None:
            out.append(r)
    report["fast_runs"] = out


# ------------------------------------------------------------------------------------- step probes
def build_model(cfg: RunConfig, device: str):
    """``cfg``'s network at its width and input, on ``device``, and a synthetic batch ``(x, y)`` of
    ``cfg.batch_size`` samples there."""
    shape = input_shape(cfg)
    opts = dict(cfg.net_options)
    if len(shape) == 3:
        opts.setdefault("input_size", shape[-1])
    torch.manual_seed(cfg.seed)
    model = nets.build(cfg.net, in_channels=shape[0], num_classes=1 if cfg.hinge else 10,
                       width_factor=cfg.width_factor, **opts).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((cfg.batch_size, *shape), generator=g).to(device)
    y = torch.randint(0, 2 if cfg.hinge else 10, (cfg.batch_size,), generator=g).to(device)
    return model, x, y


def _stepper(cfg: RunConfig, device: str):
    model, x, y = build_model(cfg, device)
    fast = cfg.fast and device.startswith("cuda")
    if fast:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
    opt = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    loss_fn = make_loss(cfg.loss)
    model.train()

    flags = float32_mode(torch.device(device).type, cfg.fast, cfg.precision)

    def step():
        ctx = (torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
               if fast or cfg.precision == "bf16" else contextlib.nullcontext())
        # the training's own float32 arithmetic (strict float32 or TF32), so that the probe times it
        with strict_float32(flags == "strict") if flags != "tf32" else tf32_float32():
            with ctx:
                out = model(x)
            l, _ = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            l.backward()
            opt.step()
    return step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def step_time(cfg: RunConfig, device: str, steps: int = 6, warmup: int = 2) -> float:
    """Median seconds of one training step of ``cfg`` (synthetic batch of ``cfg.batch_size``) on ``device``."""
    step = _stepper(cfg, device)
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def measure_time(cfg: RunConfig, device: str, P: int = 16) -> float:
    """Seconds per probe of ``measure`` (all layers, ``cfg.measure_dtype``, one state, one shuffle) of
    ``cfg``'s network on ``device`` with ``P`` random probes."""
    model, x, _ = build_model(cfg, device)
    g = torch.Generator().manual_seed(1)
    shape = x.shape[1:]
    x0 = torch.randn((P, *shape), generator=g, dtype=torch.float64)
    probes = Probes(x0, x0 + 0.1 * torch.randn(x0.shape, generator=g, dtype=torch.float64),
                    x0 + 0.1 * torch.randn(x0.shape, generator=g, dtype=torch.float64))
    dtype = torch.float64 if cfg.measure_dtype == "float64" else torch.float32
    measure(model, Probes(*(t[:2] for t in probes)), dtype=dtype, device=device)  # warm-up
    _sync(device)
    t = time.perf_counter()
    measure(model, probes, dtype=dtype, device=device)
    _sync(device)
    return (time.perf_counter() - t) / P


def probe_families(cfgs: Sequence[RunConfig], device: str, model: TimeModel, until: float,
                   log: Callable[[str], None]) -> list[dict[str, Any]]:
    """A step and a ``measure`` probe for the first configuration of each network family among ``cfgs``
    (priority order); fits the time model. Families left when the budget is spent keep the assumptions."""
    firsts: dict[str, RunConfig] = {}
    for c in cfgs:
        firsts.setdefault(net_features(c)["family"], c)
    out = []
    for fam, c in firsts.items():
        row: dict[str, Any] = {"family": fam, "net": c.net, "width_factor": c.width_factor, "batch": c.batch_size,
                               "fast": c.fast}
        if time.time() >= until:
            row["skipped"] = "budget spent: assumptions kept"
            log(f"smoke: step probe {fam} skipped (budget spent): the time model keeps its assumptions")
            out.append(row)
            continue
        try:
            finished, got = _bounded(lambda c=c: (step_time(c, device),
                                                  measure_time(c, device, P=32 if device.startswith("cuda") else 8)),
                                     until)
            if not finished:
                row["skipped"] = "still running when the budget ran out: assumptions kept"
                log(f"smoke: step probe {fam} still running when the budget ran out: assumptions kept")
                out.append(row)
                continue
            row["step_s"], row["measure_probe_s"] = got
            before = model.parts(c)["total"]
            model.fit_family(fam, c, row["step_s"], row["measure_probe_s"])
            row["estimate_before_s"], row["estimate_after_s"] = round(before, 2), round(model.parts(c)["total"], 2)
            log(f"smoke: step probe {fam} ({c.net} x{c.width_factor}, batch {c.batch_size}): "
                f"{row['step_s'] * 1e3:.2f} ms/step, measure {row['measure_probe_s'] * 1e3:.2f} ms/probe; "
                f"run estimate {before:.1f} -> {row['estimate_after_s']:.1f} s")
        except Exception as exc:  # noqa: BLE001 - recorded; the family keeps the assumptions
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(f"smoke: step probe {fam} FAILED: {row['error']}")
        out.append(row)
    return out


def concurrent_rate(cfg: RunConfig, device: str, barrier: str, k: int, seconds: float) -> float:
    """Samples per second of training steps of ``cfg`` in this process while ``k`` processes do the same
    (they meet at a file barrier in folder ``barrier`` first)."""
    step = _stepper(cfg, device)
    for _ in range(3):
        step()
    _sync(device)
    Path(barrier, f"ready-{os.getpid()}").touch()
    give_up = time.time() + 60
    while len(list(Path(barrier).glob("ready-*"))) < k and time.time() < give_up:
        time.sleep(0.01)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        for _ in range(5):
            step()
        _sync(device)
        n += 5
    return n * cfg.batch_size / (time.perf_counter() - t)


def choose_slots(pool, cfgs: Sequence[RunConfig], device: str, jobs: int, model: TimeModel,
                 log: Callable[[str], None], seconds: float = 1.5) -> tuple[int, dict[str, Any]]:
    """Aggregate throughput of 1, 2 and 4 concurrent workers (at most ``jobs``) training the first
    configuration of the plan; the number of slots is the smallest count within 10 % of the best
    throughput. Sets ``model.speedup``."""
    cfg = cfgs[0]
    alive = [w for w in range(len(pool.procs)) if pool.alive(w)]  # a worker dead at start takes no part
    ks = [k for k in (1, 2, 4) if k <= min(jobs, len(alive))]
    rates: dict[int, float] = {}
    errors = []
    for k in ks:
        with tempfile.TemporaryDirectory() as barrier:
            for w in alive[:k]:
                pool.tasks[w].put(("throughput", cfg.to_dict(), barrier, k, seconds))
            got, until = [], time.time() + 90
            while len(got) < k and time.time() < until:
                dead = [w for w in alive[:k] if not pool.alive(w)]
                if dead:  # no use waiting out the 90 s for a dead worker's answer
                    errors.append(f"worker(s) {dead} died during the throughput test of {k}")
                    log(f"smoke: {errors[-1]}")
                    break
                msg = pool.get(min(1.0, until - time.time()))
                if msg is None:
                    continue
                if msg[0] == "ready":
                    pool.ready.add(msg[1])
                elif msg[0] == "throughput":
                    got.append(msg[2])
                    if msg[3]:
                        errors.append(msg[3])
        rates[k] = sum(got) if len(got) == k and all(r > 0 for r in got) else 0.0
        log(f"smoke: {k} concurrent {cfg.net}: {rates[k]:,.0f} samples/s in all")
    base = rates.get(1) or 0.0
    if base > 0:
        model.speedup = {k: r / base for k, r in rates.items() if r > 0}
    best = max(rates.values(), default=0.0)
    slots = next((k for k in ks if best > 0 and rates[k] >= 0.9 * best), 1)
    return slots, {"net": cfg.net, "rates": {str(k): v for k, v in rates.items()}, "slots": slots,
                   "errors": errors}
