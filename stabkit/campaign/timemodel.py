"""How long a run takes: the campaign's time model (assumptions, replaced by measured step times).

A run's wall time is estimated as ::

    setup + epochs_expected * (steps_per_epoch * step + eval) + measure

- ``step`` (one training step at the run's batch size) = ``per_leaf * leaves + per_mac * macs * batch``:
  a launch floor that grows with the number of leaf modules (fast GPUs are launch-bound on small nets) plus
  a term proportional to the forward multiply-accumulates (``stabkit.nets.complexity``) of one batch.
  ``per_leaf`` and ``per_mac`` start as assumptions per device kind (:data:`PRIORS`) and are replaced per
  network family by ``TimeModel.fit_family()`` from a measured step time (the campaign's smoke test).
- ``eval``: a forward pass over the test set (and the corrupted test set of Fig. 1) each epoch, about a
  third of a training step per sample.
- ``epochs_expected``: ``epochs``, or for runs that stop at the first epoch of zero training loss (2-D
  scale detection) an assumption per network (``zero_loss_epochs``: the sweep files' ``campaign.zero_loss_epochs``,
  from the cpu-scale runs), replaced by the epochs the campaign's own finished runs of the same task and network
  took.
- ``measure``: ``states * shuffles * P`` float64 probe forwards (clean, deformed, noisy) per probe, from a
  measured ``measure`` call per family, else an assumption; registered measurements of the probe pages
  (accuracy, invariance, resolution) add their forwards, and the batch-norm control (``recalibrated``) its
  second ``layers`` measurement and its re-estimation forwards.

Finished runs calibrate the model (``TimeModel.observe()``): the ratio of measured to estimated wall
time, per task, scales later estimates (clamped to [0.5, 4]). It imports torch (each network is built once to count its operations).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .. import nets
from ..runs.config import RunConfig
from ..runs.measurements import RECALIBRATION_IMAGES

__all__ = ["PRIORS", "DEFAULT_ZERO_LOSS_EPOCHS", "input_shape", "net_features", "TimeModel"]

#: Assumptions per device kind until the smoke test measures them: seconds per leaf module and step
#: (forward + backward + optimiser launches), seconds per multiply-accumulate and sample of a float32
#: training step (forward + backward = 3 forwards), the same for bf16 (``fast``), seconds per float64
#: multiply-accumulate of ``measure``, and the fixed cost of a run (data, network, probes, files).
#: cuda: an H200 at ~40 TFLOP/s effective float32/TF32 on small convolutions, ~100 in bf16, ~2 in float64
#: (cuDNN's float64 convolutions do not use the tensor cores), ~30 us of launches per leaf module and step.
#: cpu: the 2-core development machine, ~50 GFLOP/s in float32 (fitted to the cpu-scale AlexNet run: 16.7 s
#: per epoch of 1024 training samples plus 4096 evaluated), ~6 in float64.
PRIORS: dict[str, dict[str, float]] = {
    "cuda": {"per_leaf": 30e-6, "per_mac": 3 * 2 / 40e12, "per_mac_fast": 3 * 2 / 100e12,
             "per_mac_f64": 2 / 2e12, "per_leaf_f64": 20e-6, "setup": 4.0},
    "cpu": {"per_leaf": 20e-6, "per_mac": 3 * 2 / 50e9, "per_mac_fast": 3 * 2 / 50e9,
            "per_mac_f64": 2 / 6e9, "per_leaf_f64": 20e-6, "setup": 1.5},
}

#: Epochs assumed until zero training loss for a network that ``zero_loss_epochs`` does not list.
DEFAULT_ZERO_LOSS_EPOCHS = 60

_FEATURES: dict[tuple, dict[str, Any]] = {}


def input_shape(cfg: RunConfig) -> tuple[int, ...]:
    """Per-sample input shape of a run: ``(3, 32, 32)`` CIFAR-10, ``(1, d, d)`` 2-D, ``(1, L)`` 1-D."""
    if cfg.task == "cifar10":
        return (3, 32, 32)
    if cfg.task == "twopoints":
        d = int(cfg.task_options.get("d", 28))
        return (1, d, d)
    return (1, int(cfg.task_options.get("L", 128)))


def net_features(cfg: RunConfig) -> dict[str, Any]:
    """``{"family", "macs", "leaves", "params"}`` of ``cfg``'s network at its width and input (built once
    per distinct network on the CPU and cached; imports torch)."""
    shape = input_shape(cfg)
    ident = (cfg.net, cfg.width_factor, repr(sorted(cfg.net_options.items())), shape, cfg.hinge)
    if ident not in _FEATURES:
        opts = dict(cfg.net_options)
        if len(shape) == 3:
            opts.setdefault("input_size", shape[-1])
        with torch.random.fork_rng():
            model = nets.build(cfg.net, in_channels=shape[0], num_classes=1 if cfg.hinge else 10,
                               width_factor=cfg.width_factor, **opts)
        cx = nets.complexity(model, in_channels=shape[0], input_size=shape[-1])
        leaves = sum(1 for m in model.modules() if not list(m.children()))
        _FEATURES[ident] = {"family": nets.model_info(cfg.net)["family"], "macs": int(cx["macs"]),
                            "leaves": int(leaves), "params": int(cx["params"])}
    return dict(_FEATURES[ident])


def _sizes(cfg: RunConfig) -> tuple[int, int]:
    """(training samples, test samples) of a run."""
    if cfg.task == "cifar10":
        return (cfg.ptr or 50000), (cfg.test_size or 10000)
    return int(cfg.ptr), int(cfg.test_size or 4 * cfg.ptr)


def _extra_forwards(cfg: RunConfig, n_train: int, n_test: int) -> int:
    """Sample forwards of the registered measurements of the probe pages (a coarse count)."""
    total = 0
    opts = cfg.options
    if "accuracy" in cfg.measure:
        acc = opts.get("accuracy", {})
        n = int(acc.get("n", n_test))
        fams = acc.get("families", {}) or {"rotate": {}}
        mags = sum(len(f.get("magnitudes", [0] * 8)) if isinstance(f, Mapping) else 8 for f in fams.values())
        total += n * len(acc.get("seeds", [0])) * max(1, mags)
    if "invariance" in cfg.measure:
        inv = opts.get("invariance", {})
        total += int(inv.get("n", 1000)) * int(inv.get("n_angles", 16)) * (1 + len(inv.get("stratify", [False])))
    if "resolution" in cfg.measure:
        total += n_test * len(opts.get("resolution", {}).get("targets", [8, 16, 24, 32]))
    if "recalibrated" in cfg.measure:  # per shuffle: the batch norms' statistics re-estimated, the test error
        images = int(opts.get("recalibrated", {}).get("images", RECALIBRATION_IMAGES))
        total += (min(images, n_train) + n_test) * len(cfg.shuffles)
    return total


class TimeModel:
    """Estimated wall seconds of runs on one device kind (``"cuda"`` or ``"cpu"``); see the module text.

    ``zero_loss_epochs``: network -> epochs a run that stops at zero training loss is assumed to take
    (the sweep files' ``campaign.zero_loss_epochs``, :func:`stabkit.campaign.plan.zero_loss_epochs`), else
    ``DEFAULT_ZERO_LOSS_EPOCHS``. ``slots`` concurrent runs share the device: :meth:`estimate` returns the wall time of one run while
    ``slots`` run together, ``seconds * slots / speedup[slots]`` (``speedup`` measured by the smoke test
    as aggregate throughput relative to one run; assumed 1 per slot on the CPU, where the runs split the
    cores, and ``min(slots, 1 + 0.6 (slots - 1))`` on CUDA until measured).
    """

    def __init__(self, device: str = "cpu", zero_loss_epochs: Mapping[str, int] | None = None):
        self.zero_loss_epochs = dict(zero_loss_epochs or {})
        self.kind = "cuda" if str(device).startswith("cuda") else "cpu"
        self.prior = dict(PRIORS[self.kind])
        self.family: dict[str, dict[str, float]] = {}     # fitted per_leaf/per_mac/... by family
        self.measured: dict[str, dict[str, Any]] = {}     # what the smoke test measured, by family
        self.epochs_seen: dict[tuple, list[int]] = {}     # (task, net, ptr) -> epochs of finished runs
        self.ratios: dict[str, list[float]] = {}          # task -> measured / estimated wall
        self.speedup: dict[int, float] = {}

    # ------------------------------------------------------------------------------------ parameters
    def _params(self, family: str) -> dict[str, float]:
        return {**self.prior, **self.family.get(family, {})}

    def fit_family(self, family: str, cfg: RunConfig, step_s: float | None = None,
                   measure_probe_s: float | None = None) -> None:
        """Replace the assumptions of ``family`` by a measured training-step time of ``cfg`` (seconds per
        step at ``cfg.batch_size``) and/or a measured ``measure`` time per probe (float64 or the run's
        ``measure_dtype``, one state, one shuffle)."""
        f = net_features(cfg)
        p = self._params(family)
        fit = dict(self.family.get(family, {}))
        if step_s is not None and step_s > 0:
            per_leaf = p["per_leaf"]
            floor = per_leaf * f["leaves"]
            if step_s <= floor:  # faster than the assumed launch floor: the floor was too pessimistic
                per_leaf, rest = step_s / f["leaves"], 0.0
            else:
                rest = step_s - floor
            key = "per_mac_fast" if cfg.fast and self.kind == "cuda" else "per_mac"
            fit.update(per_leaf=per_leaf, **{key: rest / max(1, f["macs"] * cfg.batch_size)})
        if measure_probe_s is not None and measure_probe_s > 0:
            floor = p["per_leaf_f64"] * f["leaves"] / 16  # probes go through in chunks of up to 64
            fit.update(per_mac_f64=max(measure_probe_s - floor, 0.2 * measure_probe_s) / (3 * max(1, f["macs"])))
        self.family[family] = fit
        self.measured[family] = {"net": cfg.net, "width_factor": cfg.width_factor, "batch_size": cfg.batch_size,
                                 "fast": cfg.fast, "step_s": step_s, "measure_probe_s": measure_probe_s,
                                 "macs": f["macs"], "leaves": f["leaves"]}

    def step_seconds(self, cfg: RunConfig) -> float:
        """Estimated seconds of one training step of ``cfg`` alone on the device."""
        f = net_features(cfg)
        p = self._params(f["family"])
        per_mac = p["per_mac_fast"] if cfg.fast and self.kind == "cuda" else p["per_mac"]
        return p["per_leaf"] * f["leaves"] + per_mac * f["macs"] * cfg.batch_size

    def expected_epochs(self, cfg: RunConfig) -> int:
        """``cfg.epochs``, or for zero-loss stopping the epochs seen (max of the finished runs of the same
        task/net/ptr) else the assumption ``zero_loss_epochs``."""
        if not cfg.stop_at_zero_loss:
            return cfg.epochs
        seen = self.epochs_seen.get((cfg.task, cfg.net, cfg.ptr))
        guess = max(seen) if seen else self.zero_loss_epochs.get(cfg.net, DEFAULT_ZERO_LOSS_EPOCHS)
        return int(min(cfg.epochs, guess))

    def parts(self, cfg: RunConfig, trained: bool = False) -> dict[str, float]:
        """The estimate's parts in seconds (one run alone): setup, train, eval, measure, total.
        ``trained``: the run reuses a finished run's network (``runs.find_trained``), so only measures."""
        f = net_features(cfg)
        p = self._params(f["family"])
        n_train, n_test = _sizes(cfg)
        step = self.step_seconds(cfg)
        steps = math.ceil(n_train / cfg.batch_size)
        epochs = self.expected_epochs(cfg)
        n_eval = n_test * (2 if cfg.noise_std > 0 else 1)
        fwd_sample = max(step - p["per_leaf"] * f["leaves"], 0.0) / cfg.batch_size / 3
        eval_s = n_eval * fwd_sample + math.ceil(n_eval / 512) * p["per_leaf"] * f["leaves"] / 3
        f64 = cfg.measure_dtype == "float64"
        per_mac_m = p["per_mac_f64"] if f64 else p["per_mac"] / 3
        probe_s = 3 * f["macs"] * per_mac_m + p["per_leaf_f64"] * f["leaves"] / 16
        stab = [m for m in cfg.measure if m in ("output", "layers")]
        kinds = (1.5 if len(stab) == 2 else len(stab)) + ("recalibrated" in cfg.measure)  # it measures layers again
        n_measure = len(cfg.states) * len(cfg.shuffles) * cfg.P * kinds
        measure_s = n_measure * probe_s + _extra_forwards(cfg, n_train, n_test) * len(cfg.states) * fwd_sample * 2
        train_s = 0.0 if trained else epochs * steps * step
        eval_all = 0.0 if trained else epochs * eval_s
        total = p["setup"] + train_s + eval_all + measure_s
        return {"setup": p["setup"], "train": train_s, "eval": eval_all, "measure": measure_s,
                "epochs": float(epochs), "step": step, "total": total}

    def calibration(self, task: str) -> float:
        """Median measured/estimated wall ratio of the finished runs of ``task`` (1 without any), in
        [0.5, 4]."""
        r = sorted(self.ratios.get(task, []))
        if not r:
            return 1.0
        return min(4.0, max(0.5, r[len(r) // 2]))

    def speedup_of(self, slots: int) -> float:
        if slots <= 1:
            return 1.0
        if slots in self.speedup:
            return self.speedup[slots]
        return float(slots) if self.kind == "cpu" else min(float(slots), 1.0 + 0.6 * (slots - 1))

    def estimate(self, cfg: RunConfig, slots: int = 1, trained: bool = False) -> float:
        """Estimated wall seconds of ``cfg`` while ``slots`` runs share the device (calibrated);
        ``trained``: it reuses a finished run's network and only measures."""
        alone = self.parts(cfg, trained)["total"] * self.calibration(cfg.task)
        return alone * max(1, slots) / self.speedup_of(slots)

    def observe(self, cfg: RunConfig, wall_s: float, epochs_run: int | None, slots: int = 1,
                trained: bool = False) -> None:
        """Learn from a finished run: its epochs (zero-loss stopping) and its measured/estimated ratio
        (``trained``: it reused another run's network, so its wall time is a measurement's)."""
        if epochs_run is not None and cfg.stop_at_zero_loss:
            self.epochs_seen.setdefault((cfg.task, cfg.net, cfg.ptr), []).append(int(epochs_run))
        # the estimate with the epochs it really ran, so that the ratio measures the per-epoch model
        alone = self.parts(cfg, trained)["total"] * max(1, slots) / self.speedup_of(slots)
        if alone > 0 and wall_s > 0:
            self.ratios.setdefault(cfg.task, []).append(wall_s / alone)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (assumptions, fitted parameters, measurements, calibration)."""
        return {"device_kind": self.kind, "priors": self.prior, "fitted": self.family, "measured": self.measured,
                "speedup": {str(k): v for k, v in self.speedup.items()},
                "calibration": {t: self.calibration(t) for t in self.ratios},
                "epochs_seen": {"/".join(map(str, k)): v for k, v in self.epochs_seen.items()}}
