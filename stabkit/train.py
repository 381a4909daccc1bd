"""Training as data plus a loop: a frozen :class:`TrainSpec` (the paper's defaults per task) and
:func:`train`, one screen of loop (``book/methods.md``, "Training"). Checkpoint files: ``stabkit.checkpoints``.

**Public API**
``TrainSpec.for_task(task, net="", **overrides) -> TrainSpec``  the paper's hyper-parameters, some replaced
``train(model, {"train": ..., "test": ..., **extra}, spec, *, augment_fn, checkpoints, resume, ...) -> TrainResult``
``defaults(task, net="") -> dict``                       paper's training hyper-parameters for a task/net
``evaluate(model, loader, loss="ce") -> (mean loss, error rate)``
``cpu_state(model) -> state dict``                       a CPU copy of the weights
``hinge_loss(out, y)``, ``make_loss(name)``, ``make_optimizer(...)``, ``make_schedule(...)``

Defaults (:func:`stabkit.protocol.training_defaults`, which this module's :func:`defaults` returns):

- CIFAR-10 CNNs: SGD lr 0.1, momentum 0.9, weight decay 5e-4 on weights only (parameters with
  ``ndim > 1``: not biases, not batch-norm), batch 128, 250 epochs, cosine schedule with
  ``T_max = 0.8 * epochs`` stepped once per epoch (the rate rises again over the last 20 %: kept from the
  original), cross-entropy, random crop + flip.
- Fully-connected nets (``DenseNetL*``): Adam lr 0.1, constant, no weight decay.
- Scale detection (``twopoints``): SGD lr 0.05 (momentum 0.9, weight decay 5e-4, cosine as above), 300
  epochs, hinge loss ``mean(relu(1 - y f))`` on one output with ``y = +1`` for label 1 ("close") and
  ``y = -1`` for label 0 ("far"), no augmentation, training stops after the first epoch whose mean
  training loss is exactly zero.
- 1-D scale detection (``scale1d``): plain SGD (no momentum, no weight decay), constant rate, hinge loss.

The checkpoint analysed in the paper is the one with the best test error (model selection on the test
set, as the original did); the last one is returned too.

GPU speed: the loop never waits for the device inside an epoch (no ``.item()``/``float()`` per batch: loss
and error sums stay on the device and are read once per epoch, in one transfer), and the best weights are
kept as a copy on the device, moved to the CPU once at the end.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import pandas as pd
import torch
from torch import nn

from .checkpoints import CheckpointFolder
from .checks import check_choice
from .precision import autocast, cpu_supports_bf16, deterministic_mode, float32_flags, float32_mode, tf32_state
from .protocol import LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULES, TASKS, training_defaults

__all__ = [
    "TASKS", "TrainSpec", "TrainResult", "defaults", "hinge_loss", "make_loss", "make_optimizer", "make_schedule",
    "evaluate", "train", "cpu_state",
]


def defaults(task: str, net: str = "") -> dict[str, Any]:
    """The paper's training hyper-parameters for ``task`` (and ``net``: FCNs ``DenseNetL*`` use Adam).

    Returns a new dict with keys ``epochs, optimizer, lr, momentum, weight_decay, schedule, loss,
    batch_size, augment (tuple of names), stop_at_zero_loss`` (:func:`stabkit.protocol.training_defaults`).
    """
    return training_defaults(task, net)


@dataclass(frozen=True)
class TrainSpec:
    """How a network is trained, as data (no torch objects): the defaults are the paper's for CIFAR-10
    CNNs; :meth:`for_task` gives another task's or net's.

    ``epochs`` (>= 1); ``optimizer`` in ``OPTIMIZERS``; ``lr``, ``momentum``,
    ``weight_decay`` (SGD: on weights only); ``schedule`` in ``SCHEDULES`` (stepped per
    epoch, :func:`make_schedule`); ``loss`` in ``LOSSES``; ``batch_size``: the
    training loaders' (whoever builds them reads it; the loop takes batches as they come);
    ``stop_at_zero_loss``: stop after the first epoch whose mean training loss is exactly zero;
    ``select_on``: the evaluated loader ("test" or an extra one) whose lowest error picks the best
    checkpoint; ``seed``: the augmentation generator's.

    Arithmetic: ``precision`` in :data:`~stabkit.protocol.PRECISIONS` (``"float32"``: on CUDA strict, TF32
    off, ``float32_mode()``; ``"tf32"``: TF32 on, CUDA; ``"bf16"``: ``torch.autocast`` with bfloat16 on
    the model's device for training and the per-epoch evaluation, weights, optimizer and loss float32);
    ``fast`` (CUDA only): bf16 autocast and channels_last; ``channels_last``: batches and weights in
    channels-last memory order (same arithmetic, another summation order), ``None``: on with ``fast`` and
    on the CPU, where it measured 1.4-1.6x faster per step (VGG11bn, ResNet18, one thread);
    ``deterministic``: train inside ``deterministic_mode()`` (GPU runs are not bit-reproducible otherwise;
    no change on the CPU); ``compile`` (CUDA only): the training forward through ``torch.compile``
    (evaluation and checkpoints use the model itself; not measured on a GPU yet).
    """
    epochs: int = 250
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    loss: str = "ce"
    batch_size: int = 128
    stop_at_zero_loss: bool = False
    select_on: str = "test"
    seed: int = 0
    precision: str = "float32"
    fast: bool = False
    channels_last: bool | None = None
    deterministic: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("loss", self.loss, LOSSES)
        check_choice("precision", self.precision, PRECISIONS)
        for name in ("stop_at_zero_loss", "fast", "deterministic", "compile"):
            check_choice(name, getattr(self, name), (False, True))
        check_choice("channels_last", self.channels_last, (None, False, True))
        if not isinstance(self.select_on, str):
            raise TypeError(f"select_on must be a loader name (str), got {type(self.select_on).__name__}")

    @classmethod
    def for_task(cls, task: str = "cifar10", net: str = "", **overrides: Any) -> TrainSpec:
        """The paper's spec for ``task`` (in ``TASKS``) and ``net`` (FCNs
        ``DenseNetL*`` use Adam), with ``overrides`` (field -> value; ``None`` keeps the default)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown TrainSpec field(s) {unknown}; fields: {sorted(known)}")
        base = {k: v for k, v in training_defaults(task, net).items() if k in known}
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def hinge_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean(relu(1 - y f))`` for one output ``f`` (``[B]`` or ``[B, 1]``), labels ``y`` in {0, 1}
    (mapped to -1, +1) or already in {-1, +1}."""
    f = out.float().reshape(len(out), -1)
    if f.shape[1] != 1:
        raise ValueError(f"hinge loss needs a network with one output, got outputs of shape {tuple(out.shape)}")
    y = torch.where(y > 0, 1.0, -1.0).to(f.dtype)
    return torch.relu(1.0 - y * f[:, 0]).mean()


def make_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``name`` in {"ce", "hinge"} -> ``fn(out, y) -> (mean loss, number of errors)`` (tensors)."""
    check_choice("loss", name, LOSSES)
    if name == "ce":
        def ce(out, y):
            return nn.functional.cross_entropy(out.float(), y), (out.argmax(1) != y).sum()
        return ce

    def hinge(out, y):
        pred = (out.reshape(len(out), -1)[:, 0] > 0).long()
        return hinge_loss(out, y), (pred != (y > 0).long()).sum()
    return hinge


def make_optimizer(model: nn.Module, name: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
                   weight_decay: float = 5e-4) -> torch.optim.Optimizer:
    """SGD (weight decay only on parameters with ``ndim > 1``: weights, not biases/batch-norm) or Adam."""
    check_choice("optimizer", name, OPTIMIZERS)
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=momentum)


def make_schedule(opt: torch.optim.Optimizer, name: str = "cosine", epochs: int = 250):
    """Per-epoch schedule: ``cosine`` = ``lr * (1 + cos(pi e / T)) / 2`` with ``T = 0.8 * epochs`` (keeps
    rising after ``T``, as the original's CosineAnnealingLR did); ``cosine_to_zero``: the same with
    ``T = epochs`` (the rate falls to zero at the last epoch and stays there: the last checkpoint is the
    converged one); or ``constant``."""
    check_choice("schedule", name, SCHEDULES)
    t_max = (0.8 if name == "cosine" else 1.0) * epochs
    fn = (lambda e: 0.5 * (1.0 + math.cos(math.pi * e / t_max))) if name.startswith("cosine") else (lambda e: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(opt, fn)


@torch.no_grad()
def _eval_sums(model: nn.Module, loader: Iterable, loss_fn: Callable, fast: bool,
               channels_last: bool | None = None, precision: str = "float32") -> tuple[torch.Tensor, int]:
    """``(tensor [loss sum, error count] float64 on the device, samples)`` of ``model`` in eval mode; the
    sums stay on the device (no synchronisation per batch)."""
    cl = fast if channels_last is None else channels_last
    was_training = model.training
    model.eval()
    tot_loss = tot_err = 0.0
    n = 0
    for x, y in loader:
        with autocast(x.device, fast, precision):
            out = model(x.contiguous(memory_format=torch.channels_last) if cl and x.ndim == 4 else x)
        l, e = loss_fn(out, y)
        tot_loss, tot_err, n = tot_loss + l.double() * len(y), tot_err + e, n + len(y)
    model.train(was_training)
    if n == 0:
        raise ValueError("loader must yield at least one batch")
    return torch.stack([torch.as_tensor(tot_loss, dtype=torch.float64),
                        torch.as_tensor(tot_err).to(torch.float64)]), n


def evaluate(model: nn.Module, loader: Iterable, loss: str = "ce", fast: bool = False) -> tuple[float, float]:
    """Mean loss and error rate (fraction in [0, 1]) of ``model`` in eval mode over ``loader``."""
    sums, n = _eval_sums(model, loader, make_loss(loss), fast)
    tot_loss, tot_err = sums.tolist()
    return tot_loss / n, tot_err / n


@dataclass
class TrainResult:
    """Outcome of :func:`train`: per-epoch ``metrics`` (epoch, train_loss, train_err, test_loss, test_err,
    lr, seconds (wall), cpu_seconds (the process's CPU time, all threads) [+ extra test sets' ``<name>_err``]),
    CPU state dicts of the best-test and last epochs.

    ``mode`` records how the run was computed: ``deterministic`` (the ``deterministic_mode()`` switch),
    ``nondeterministic_ops`` (operations without a deterministic implementation that ran anyway),
    ``fast`` (bf16 autocast + channels_last, CUDA only), ``device``, ``cudnn_benchmark``, ``tf32_matmul``
    and ``tf32_cudnn`` (the flags in force during training).
    """
    metrics: pd.DataFrame
    best_state: dict[str, torch.Tensor]
    last_state: dict[str, torch.Tensor]
    best_epoch: int
    best_test_err: float
    last_test_err: float
    stopped_early: bool
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    mode: dict[str, Any] = field(default_factory=dict)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model.state_dict()`` (contiguous tensors, detached)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _device_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the state on the model's own device (no host transfer, no synchronisation)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train(model: nn.Module, loaders: Mapping[str, Iterable], spec: TrainSpec, *,
          augment_fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
          checkpoints: CheckpointFolder | None = None, resume: bool = False, resume_every_s: float | None = 300.0,
          on_epoch: Callable[[dict], None] | None = None, progress: bool = True) -> TrainResult:
    """Train ``model`` in place (it must already sit on the loaders' device) as ``spec`` says.

    ``loaders``: ``{"train": ..., "test": ..., **extra}``, each yielding ``(x, y)`` batches on the device
    (e.g. ``data.DeviceLoader``; the training loader reshuffles itself each epoch; the evaluation batch
    size is the test loader's, see ``data.default_eval_batch_size``). Every loader but ``"train"`` is
    evaluated after each epoch (an extra one as column ``<name>_err``); ``spec.select_on`` names the one
    whose minimum error picks the best checkpoint. ``augment_fn(x, generator)`` is applied to every
    training batch (``generator`` seeded with ``spec.seed``). ``on_epoch(row)`` is called after every
    epoch (e.g. a heartbeat).

    ``checkpoints``: write ``best.pt`` and ``last.pt`` there when training ends (atomically; they also
    record ``kind``, ``epoch``, ``test_err`` and ``deterministic``), and the training state ``resume.pt``
    after an epoch once ``resume_every_s`` seconds have passed since the last write (``None``: never),
    removed when training ends. ``resume=True`` continues from that file when it exists: weights and
    batch-norm statistics, optimizer and schedule, the epochs' metrics and best checkpoint so far, the
    random generators (the global one, which dropout draws from, and the augmentation generator) and the
    loaders' epoch counters (``set_epoch``: a loader whose random choices derive from its epoch, as
    ``data.DeviceLoader``'s, then yields the batches it would have yielded). On the same device and
    thread count the result is the one of an uninterrupted run (tested on the CPU).
    ``TrainResult.extra["resumed_epoch"]`` is the number of epochs read from the file (0 when it started
    afresh), ``extra["resumed_seconds"]`` the training time they took; ``seconds`` includes it. A resume
    file of another net or run raises :class:`~stabkit.checkpoints.CheckpointError`.
    """
    if not isinstance(spec, TrainSpec):
        raise TypeError(f"spec must be a TrainSpec (TrainSpec.for_task(task, net, ...)), got {type(spec).__name__}")
    if not isinstance(loaders, Mapping) or "train" not in loaders or "test" not in loaders:
        raise ValueError("loaders must be a mapping with the keys 'train' and 'test' (and extra test sets), got "
                         + (repr(sorted(loaders)) if isinstance(loaders, Mapping) else type(loaders).__name__))
    extra = [k for k in loaders if k not in ("train", "test")]
    check_choice("select_on", spec.select_on, ("test", *extra))
    ordered = [loaders[k] for k in ("train", "test", *extra)]  # the order of a resume file's loader_epochs
    opt = make_optimizer(model, spec.optimizer, spec.lr, spec.momentum, spec.weight_decay)
    sched = make_schedule(opt, spec.schedule, spec.epochs)
    device = next(iter(model.parameters())).device
    if spec.fast and device.type != "cuda":
        warnings.warn("fast=True only has an effect on CUDA (bf16 autocast, channels_last); ignored", stacklevel=2)
    if spec.precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        warnings.warn("precision='bf16' on a CPU without native bfloat16 (no avx512_bf16 / AMX): autocast is "
                      "emulated there, measured 14x slower per step than float32 on an AVX2 CPU; use "
                      "precision='float32' on this machine", stacklevel=2)
    fast = spec.fast and device.type == "cuda"
    cl = (fast or device.type == "cpu") if spec.channels_last is None else spec.channels_last
    spec = replace(spec, fast=fast, channels_last=cl)  # what takes effect on this device
    check_choice("resume", resume, (False, True))
    if resume_every_s is not None and not (isinstance(resume_every_s, (int, float)) and resume_every_s >= 0):
        raise ValueError(f"resume_every_s must be a number of seconds >= 0 or None, got {resume_every_s!r}")
    if resume and checkpoints is None:
        raise ValueError("resume=True needs checkpoints (the CheckpointFolder where resume.pt is)")
    state = checkpoints.read_resume() if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        for ld, ep in zip(ordered, state["loader_epochs"]):
            if ep is not None and hasattr(ld, "set_epoch"):
                ld.set_epoch(ep)
    benchmark, t_start = torch.backends.cudnn.benchmark, time.perf_counter()
    before = float(state["seconds"]) if state is not None else 0.0
    last_write = [t_start]

    def snapshot(rows: list[dict], best: tuple, gen: torch.Generator) -> None:
        """Write resume.pt when ``resume_every_s`` has passed since the last write."""
        now = time.perf_counter()
        if checkpoints is None or resume_every_s is None or now - last_write[0] < resume_every_s:
            return
        checkpoints.write_resume({
            "seconds": before + now - t_start, "rows": rows, "model": cpu_state(model),
            "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
            "best": {"score": best[0], "epoch": best[1], "state": {k: v.cpu() for k, v in best[2].items()}},
            "gen": gen.get_state(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "loader_epochs": [_loader_epoch(ld) for ld in ordered]})
        last_write[0] = time.perf_counter()
    with float32_flags(float32_mode(device.type, fast, spec.precision)), \
            deterministic_mode(spec.deterministic) as nondeterministic_ops:
        if cl:
            model.to(memory_format=torch.channels_last)
        if fast:
            torch.backends.cudnn.benchmark = not spec.deterministic
        tf32 = tf32_state()
        compiled = spec.compile and device.type == "cuda"
        mode = dict(deterministic=spec.deterministic, fast=fast, channels_last=cl, device=str(device),
                    precision="bf16" if fast or spec.precision == "bf16" else spec.precision,
                    cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
                    tf32_matmul=tf32["matmul"], tf32_cudnn=tf32["cudnn_conv"], compile=compiled)
        try:
            rows, best, stopped = _loop(
                model, torch.compile(model) if compiled else model, loaders, spec, opt, sched,
                augment_fn=augment_fn, device=device, resumed=state, snapshot=snapshot, on_epoch=on_epoch,
                progress=progress, desc=checkpoints.net if checkpoints is not None and checkpoints.net else "train")
        finally:
            torch.backends.cudnn.benchmark = benchmark
            if cl:
                model.to(memory_format=torch.contiguous_format)
    mode["nondeterministic_ops"] = list(nondeterministic_ops)
    res = TrainResult(pd.DataFrame(rows), {k: v.to("cpu", copy=True).contiguous() for k, v in best[2].items()},
                      cpu_state(model), best[1], rows[best[1] - 1]["test_err"], rows[-1]["test_err"], stopped,
                      before + time.perf_counter() - t_start,
                      extra={"resumed_epoch": len(state["rows"]) if state is not None else 0,
                             "resumed_seconds": before, "cpu_seconds": _cpu_seconds(rows)}, mode=mode)
    if checkpoints is not None:
        for kind, sd, ep in (("best", res.best_state, res.best_epoch), ("last", res.last_state, len(rows))):
            checkpoints.save(kind, sd, epoch=ep, test_err=rows[ep - 1]["test_err"],
                             deterministic=spec.deterministic)
        checkpoints.drop_resume()  # after the checkpoints: a kill in between resumes again
    return res


def _cpu_seconds(rows: list[dict]) -> float:
    """The CPU time of all epochs, NaN when some epoch lacks it (resumed from a file written before
    ``cpu_seconds`` was recorded): a partial sum would pass for the whole."""
    vals = [r.get("cpu_seconds") for r in rows]
    return float(sum(vals)) if vals and all(isinstance(v, (int, float)) for v in vals) else float("nan")


def _loader_epoch(loader: Any) -> int | None:
    ep = getattr(loader, "epoch", None)
    return int(ep) if isinstance(ep, int) and not isinstance(ep, bool) else None


def _loop(model: nn.Module, forward: Callable, loaders: Mapping[str, Iterable], spec: TrainSpec,
          opt: torch.optim.Optimizer, sched: Any, *, augment_fn: Callable | None, device: torch.device,
          resumed: Mapping[str, Any] | None, snapshot: Callable, on_epoch: Callable | None, progress: bool,
          desc: str) -> tuple[list[dict], tuple, bool]:
    """The epochs of :func:`train`: ``(rows, (score, epoch, state dict on the device), stopped)``.
    ``forward``: the model's training forward (``model`` or its compiled twin); ``spec``: with the
    ``fast`` and ``channels_last`` that take effect; ``resumed``: a resume file's content (rows, best,
    augmentation generator) to continue from; ``snapshot(rows, best, gen)``: called after every epoch
    but the last."""
    from tqdm.auto import tqdm  # not at import: tqdm.auto probes for notebook widgets

    loss_fn = make_loss(spec.loss)
    train_loader, cl = loaders["train"], spec.channels_last
    extra = [name for name in loaders if name not in ("train", "test")]
    evaluated = [loaders["test"], *(loaders[name] for name in extra)]
    gen = torch.Generator(device=device).manual_seed(int(spec.seed))
    rows, best, stopped = [], None, False
    if resumed is not None:
        rows = [dict(r) for r in resumed["rows"]]
        b = resumed["best"]
        best = (b["score"], b["epoch"], {k: v.to(device) for k, v in b["state"].items()})
        gen.set_state(resumed["gen"])
    bar = tqdm(range(len(rows), spec.epochs), desc=desc, leave=False, disable=not progress, unit="ep",
               initial=len(rows), total=spec.epochs)
    for epoch in bar:  # ------------------------------------------------------------------ the loop
        model.train()
        # CPU time of the process (all its threads): the core-seconds the epoch used, which wall time
        # overstates when the process is paused or shares its cores with others
        t0, c0, lr_now = time.perf_counter(), time.process_time(), opt.param_groups[0]["lr"]
        tot_loss = torch.zeros((), device=device, dtype=torch.float64)
        tot_err = torch.zeros((), device=device, dtype=torch.int64)
        n = 0
        for x, y in train_loader:  # nothing here waits for the device
            x = augment_fn(x, gen) if augment_fn is not None else x
            with autocast(device, spec.fast, spec.precision):
                out = forward(x.contiguous(memory_format=torch.channels_last) if cl and x.ndim == 4 else x)
            l, e = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            l.backward()
            opt.step()
            tot_loss, tot_err, n = tot_loss + l.detach().double() * len(y), tot_err + e.detach(), n + len(y)
        sched.step()
        sums = [torch.stack([tot_loss, tot_err.to(torch.float64)])]
        counts = [n]
        for ld in evaluated:
            s, m = _eval_sums(model, ld, loss_fn, spec.fast, cl, spec.precision)
            sums.append(s.to(device))
            counts.append(m)
        values = torch.cat(sums).tolist()  # the one host synchronisation of the epoch
        row = dict(epoch=epoch + 1, train_loss=values[0] / n, train_err=values[1] / n,
                   test_loss=values[2] / counts[1], test_err=values[3] / counts[1])
        for k, name in enumerate(extra, start=2):
            row[f"{name}_err"] = values[2 * k + 1] / counts[k]
        row.update(lr=lr_now, seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
        rows.append(row)
        score = row["test_err" if spec.select_on == "test" else f"{spec.select_on}_err"]
        if best is None or score < best[0]:
            best = (score, epoch + 1, _device_state(model))  # a copy on the device, to the CPU at the end
        bar.set_postfix(loss=f"{row['train_loss']:.3g}", test_err=f"{row['test_err']:.3f}")
        if on_epoch is not None:
            on_epoch(row)
        if not math.isfinite(row["train_loss"]):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1} (train loss {row['train_loss']})")
        if spec.stop_at_zero_loss and row["train_loss"] == 0.0:
            stopped = True
            break
        if epoch + 1 < spec.epochs:
            snapshot(rows, best, gen)
    bar.close()  # ---------------------------------------------------------------------------------
    return rows, best, stopped
