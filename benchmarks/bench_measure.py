"""``stabkit.stability.measure`` on VGG11 (CIFAR size, every node, output included) vs a naive pipeline.

Naive baseline (:func:`benchmarks.naive.measure_float64`): three separate float64 forwards through a
torchvision feature extractor returning every node, all activations stored, ``deno`` from ``torch.cdist``.
stabkit: :func:`stabkit.stability.measure` with the same probes, once with ``dtype=torch.float64`` (the
reference path, default) and once with ``dtype=torch.float32`` (forward in float32, sums in float64).
Both are checked against the naive numbers (max relative difference of ``D_f, G_f, R_f`` over all nodes).
stabkit runs with ``relu_convention="inplace"`` here: torchvision's VGG uses ``ReLU(inplace=True)``, so the
naive pipeline's stored conv outputs are overwritten by the ReLU that follows them (what the original code
measured); stabkit's default (``"true"``) measures each conv's own output, a different number at those nodes
(``book/methods.md``, "Parity with the original code").
"""
from __future__ import annotations

import numpy as np
import torch

from . import naive
from .common import Result, cifar_sample, interleaved, peak_memory_mb

CASE = "measure"
TOL = 1e-6


def prepare(P: int, seed: int = 0):
    """VGG11 at initialisation (seeded) and the probe set ``(x, x_tau, x_eta)`` of ``P`` CIFAR images."""
    from stabkit.nets import build
    from stabkit.probes import draw_probes

    imgs, _, source = cifar_sample(P, seed=seed)
    mean = torch.tensor(naive.CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(naive.CIFAR_STD).view(1, 3, 1, 1)
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.manual_seed(seed)
    model = build("vgg11").eval()
    return model, draw_probes(x, seed=seed), source


def _stabkit(dtype):
    def fn(model, probes):
        from stabkit.stability import measure
        return measure(model, probes, layers="all", dtype=dtype, relu_convention="inplace")
    return fn


VARIANTS = {
    "naive": lambda model, probes: naive.measure_float64(model, *probes),
    "stabkit-float64": _stabkit(torch.float64),
    "stabkit-float32": _stabkit(torch.float32),
}


def max_rel_diff(table, ref: dict, where: bool = False):
    """Max relative difference of D_f, G_f, R_f between a ``measure`` table and the naive dict (and, with
    ``where``, the ``"quantity@layer"`` where it occurs)."""
    worst, at = 0.0, ""
    missing = [layer for layer in table.layer if layer not in ref]
    if missing:
        raise AssertionError(f"layers absent from the naive pipeline: {missing}")
    for q in ("D_f", "G_f", "R_f"):
        a = table[q].to_numpy(dtype=np.float64)
        b = np.array([ref[layer][q] for layer in table.layer], dtype=np.float64)
        rel = np.abs(a - b) / np.abs(b)
        i = int(np.argmax(rel))
        if rel[i] > worst:
            worst, at = float(rel[i]), f"{q}@{table.layer.iloc[i]}"
    return (worst, at) if where else worst


def run(quick: bool = False, repeats: int = 3, memory: bool = True, profile: bool = True) -> list[Result]:
    """Time the three variants round-robin; the output of each timed call is checked (no extra runs)."""
    P = 20 if quick else 500
    model, probes, source = prepare(P)
    outputs = {}

    def call(name):
        def fn():
            outputs[name] = VARIANTS[name](model, probes)
        return fn

    cpu: dict = {}
    secs = interleaved({name: call(name) for name in VARIANTS}, repeats, warmup=0, cpu=cpu)
    ref = outputs["naive"]
    n_rows = len(outputs["stabkit-float64"])
    case = f"measure VGG11 P={P} ({n_rows} nodes), CPU"
    out = []
    for name in ("stabkit-float64", "stabkit-float32"):
        err, at = max_rel_diff(outputs[name], ref, where=True)
        ok = err < TOL
        dtype = name.split("-")[1]
        out.append(Result(case, f"stabkit measure, {dtype} forward, one pass, float64 sums", secs[name], P,
                          unit="probes", notes=f"{source}; max rel diff D_f/G_f/R_f vs naive {err:.1e} ({at}) "
                          f"({'within' if ok else 'above'} {TOL:g})",
                          extra={"ok": ok, "err": err, "variant_key": name}, cpu_seconds=cpu[name]))
    out.append(Result(case, "naive: 3 float64 forwards, stored activations, cdist", secs["naive"], P,
                      unit="probes", notes=source, baseline=True, extra={"ok": True, "variant_key": "naive"},
                      cpu_seconds=cpu["naive"]))
    if memory:
        for r in out:
            r.memory = peak_memory_mb(CASE, r.extra["variant_key"], {"P": P})
    if profile:
        out[0].extra["breakdown"] = breakdown(16 if quick else 128)
    return out


GROUPS = {
    "convolution": ("conv",),
    "per-node sums (sub, dot, sum, copy, fill, cat)": ("sub", "dot", "sum", "copy_", "fill_", "cat", "add_",
                                                      "mul", "div", "mean", "pow", "abs", "to", "zero_"),
    "pooling + activations": ("pool", "clamp", "relu", "threshold"),
}


def _grouped(prof) -> dict[str, float]:
    groups = {g: 0.0 for g in GROUPS}
    groups["other"] = 0.0
    for ev in prof.key_averages():
        name = ev.key.removeprefix("aten::")
        t = ev.self_cpu_time_total / 1e6
        for g, keys in GROUPS.items():
            if any(k in name for k in keys):
                groups[g] += t
                break
        else:
            groups["other"] += t
    groups["total"] = sum(groups.values())
    return groups


def breakdown(P: int = 128) -> dict:
    """Where ``measure``'s time goes: torch-profiler self time (s) grouped by kind of op, for the float64
    and float32 paths, next to a plain forward of the same ``3P`` images in chunks of 384 (what any
    pipeline must pay)."""
    import copy

    from stabkit.stability import measure

    model, probes, _ = prepare(P)
    out = {"P": P}
    acts = [torch.profiler.ProfilerActivity.CPU]
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        measure(model, probes, dtype=dtype)
        with torch.profiler.profile(activities=acts) as prof:
            measure(model, probes, dtype=dtype)
        out[f"measure, {name}"] = _grouped(prof)
        m = copy.deepcopy(model).to(dtype)
        batch = torch.cat(probes).to(dtype)
        with torch.no_grad():
            m(batch[:8])
            with torch.profiler.profile(activities=acts) as prof:
                for chunk in batch.split(3 * 128):
                    m(chunk)
        out[f"plain forward, {name}"] = _grouped(prof)
    return out


def memprobe(variant: str, args: dict):
    """Prepare the inputs; return the zero-argument call whose peak memory is wanted."""
    model, probes, _ = prepare(int(args["P"]))
    return lambda: VARIANTS[variant](model, probes)
