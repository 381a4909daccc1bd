"""Training: the paper's defaults per task, one screen of loop, checkpoints (``book/methods.md``, "Training").

**Public API**
``defaults(task, net="") -> dict``                       paper's training hyper-parameters for a task/net
``train(model, train_loader, test_loader, **options) -> TrainResult``
``evaluate(model, loader, loss="ce") -> (mean loss, error rate)``
``deterministic_mode(enabled)``                          context: deterministic algorithms and cuDNN flags
``cpu_state(model) -> state dict``                       a CPU copy of the weights
``tf32_state() -> {"matmul", "cudnn_conv"}``              whether float32 may use TF32 (never raises)
``hinge_loss(out, y)``, ``make_loss(name)``, ``make_optimizer(...)``, ``make_schedule(...)``
``save_checkpoint(path, state_dict, *, net, config_hash, **extra)``
``load_checkpoint(path, *, net=None, config_hash=None) -> (state_dict, meta)``  (``weights_only=True``)

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

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .checks import check_choice
from .protocol import LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULES, TASKS, training_defaults

__all__ = [
    "TASKS", "CHECKPOINT_FORMAT", "CheckpointError", "TrainResult", "defaults", "hinge_loss", "make_loss",
    "make_optimizer", "make_schedule", "evaluate", "train", "save_checkpoint", "load_checkpoint", "cpu_state",
    "deterministic_mode", "tf32_state", "float32_mode", "cpu_supports_bf16", "RESUME_FILE", "RESUME_FORMAT", "resume_epoch",
]

#: Format tag stored in every checkpoint; checkpoints without it (or with another) are refused.
CHECKPOINT_FORMAT = "stabkit-checkpoint/1"
#: The training state :func:`train` writes into its ``checkpoint_dir`` while it trains (and removes when
#: it ends), and its format tag.
RESUME_FILE, RESUME_FORMAT = "resume.pt", "stabkit-resume/1"


def defaults(task: str, net: str = "") -> dict[str, Any]:
    """The paper's training hyper-parameters for ``task`` (and ``net``: FCNs ``DenseNetL*`` use Adam).

    Returns a new dict with keys ``epochs, optimizer, lr, momentum, weight_decay, schedule, loss,
    batch_size, augment (tuple of names), stop_at_zero_loss`` (:func:`stabkit.protocol.training_defaults`).
    """
    return training_defaults(task, net)


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


def float32_mode(device_type: str, fast: bool, precision: str) -> str | None:
    """How float32 matmuls and convolutions run in training: ``"strict"`` (TF32 off: ``precision="float32"``
    on CUDA without ``fast``; torch's default would round cuDNN convolutions' inputs to TF32), ``"tf32"``
    (``precision="tf32"`` on CUDA: TF32 on for both), or None (torch's flags untouched: the CPU, where
    TF32 does not exist, and the bf16 modes)."""
    if device_type != "cuda" or fast or precision == "bf16":
        return None
    return "tf32" if precision == "tf32" else "strict"


@contextlib.contextmanager
def _float32_flags(mode: str | None) -> Iterator[None]:
    from .graph import strict_float32, tf32_float32
    with (strict_float32(mode == "strict") if mode != "tf32" else tf32_float32()):
        yield


def _autocast(device: torch.device, fast: bool, precision: str = "float32"):
    """bf16 autocast for ``precision="bf16"`` (CPU or CUDA) and for ``fast`` on CUDA; else nothing."""
    if precision == "bf16" or (fast and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (avx512_bf16 or AMX), where ``precision="bf16"``
    measured 1.7-1.9x faster per training step; elsewhere bf16 autocast is emulated and may be slower."""
    try:
        from torch.backends import cpu as _cpu
        caps = str(_cpu.get_cpu_capability()).lower()
    except Exception:  # noqa: BLE001 - old torch: read the flags directly
        caps = ""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    return "amx" in caps or "avx512_bf16" in flags or "amx_bf16" in flags


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
        with _autocast(x.device, fast, precision):
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


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[list[str]]:
    """Within the block: ``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN deterministic
    and not benchmarking, and (for cuBLAS) ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set; every flag is
    restored afterwards. ``enabled=False`` changes nothing.

    Yields a list that collects the names of the operations that have no deterministic implementation
    and ran in the block (torch warns instead of failing: e.g. the CUDA backward of adaptive average
    pooling), so that a run can record how deterministic it really was. On the CPU the kernels used by
    stabkit's networks are deterministic already: results are the same with and without this mode.
    """
    ops: list[str] = []
    if not enabled:
        yield ops
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    # read by cuBLAS when its handle is created: effective if nothing ran on CUDA before in this process
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    show = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if category is UserWarning and "does not have a deterministic implementation" in text:
            name = text.split(" does not have")[0].strip()
            if name not in ops:
                ops.append(name)
            return
        show(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            # every such op is seen in every block (not once per process); other warnings keep their filters
            warnings.filterwarnings("always", message=".*does not have a deterministic implementation",
                                    category=UserWarning)
            warnings.showwarning = record
            yield ops
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


@dataclass
class TrainResult:
    """Outcome of :func:`train`: per-epoch ``metrics`` (epoch, train_loss, train_err, test_loss, test_err,
    lr, seconds [+ extra test sets' ``<name>_err``]), CPU state dicts of the best-test and last epochs.

    ``mode`` records how the run was computed: ``deterministic`` (the :func:`deterministic_mode` switch),
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


def tf32_state() -> dict[str, bool | None]:
    """Whether float32 matrix products (``matmul``) and cuDNN convolutions (``cudnn_conv``) may use TF32.

    Read through the per-backend ``fp32_precision`` flags where torch has them (2.9 and later), else the
    legacy ``allow_tf32`` flags, and never raises: on torch 2.9-2.11 reading a legacy flag after a write
    through the new API (as ``stabkit.graph.strict_float32`` does) raises a "mix of the legacy and new
    APIs" ``RuntimeError``. ``None`` where neither can be read."""
    b = torch.backends

    def read(new_obj, legacy_obj, legacy_attr):
        prec = getattr(new_obj, "fp32_precision", None) if new_obj is not None else None
        if prec == "tf32":
            return True
        if prec == "ieee":
            return False
        try:  # "none" (never set through the new API) or no new API: the legacy flag decides
            return bool(getattr(legacy_obj, legacy_attr))
        except (RuntimeError, AttributeError):
            return None
    return {"matmul": read(b.cuda.matmul, b.cuda.matmul, "allow_tf32"),
            "cudnn_conv": read(getattr(b.cudnn, "conv", None), b.cudnn, "allow_tf32")}


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model.state_dict()`` (contiguous tensors, detached)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def _device_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the state on the model's own device (no host transfer, no synchronisation)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train(model: nn.Module, train_loader: Iterable, test_loader: Iterable, *, task: str = "cifar10",
          net: str = "", epochs: int | None = None, optimizer: str | None = None, lr: float | None = None,
          momentum: float | None = None, weight_decay: float | None = None, schedule: str | None = None,
          loss: str | None = None, stop_at_zero_loss: bool | None = None,
          augment_fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
          extra_test_loaders: Mapping[str, Iterable] | None = None, select_on: str = "test",
          fast: bool = False, precision: str = "float32", deterministic: bool = False, compile: bool = False,
          channels_last: bool | None = None, seed: int = 0,
          checkpoint_dir: str | Path | None = None, meta: Mapping[str, Any] | None = None, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None, resume: bool = False,
          resume_every_s: float | None = 300.0) -> TrainResult:
    """Train ``model`` in place (it must already sit on the loaders' device).

    ``train_loader`` / ``test_loader`` yield ``(x, y)`` batches on the device (e.g. ``data.DeviceLoader``;
    the training loader reshuffles itself each epoch; the evaluation batch size is the test loader's, see
    ``data.default_eval_batch_size``). Hyper-parameters left ``None`` take the paper's values from
    :func:`defaults` for ``task`` / ``net``. ``augment_fn(x, generator)`` is applied to every training
    batch (``generator`` seeded with ``seed``). ``extra_test_loaders`` (name -> loader) are also evaluated
    each epoch (column ``<name>_err``); ``select_on`` names the error ("test" or one of them) whose minimum
    picks the best checkpoint. ``fast`` (CUDA only): bf16 autocast and channels_last. ``precision``:
    ``"float32"`` (on CUDA strict float32: TF32 off for matmuls and cuDNN convolutions during training,
    :func:`float32_mode`), ``"tf32"`` (TF32 on for both, CUDA) or ``"bf16"`` (``torch.autocast`` with
    bfloat16 on the model's device, CPU or CUDA, for training and the per-epoch evaluation; weights,
    optimizer and loss stay float32). ``channels_last``:
    image batches and weights in channels-last memory order (same arithmetic, another summation order, so
    results agree to rounding); ``None`` turns it on with ``fast`` and on the CPU, where it measured 1.4-1.6x
    faster per training step (VGG11bn, ResNet18, one thread). ``deterministic``:
    train inside :func:`deterministic_mode` (GPU runs are not bit-reproducible otherwise; no change on the
    CPU); ``TrainResult.mode`` records the mode. ``compile`` (CUDA only, off by default): the training
    forward goes through ``torch.compile(model)`` (same parameters; evaluation and checkpoints use
    ``model``); not measured on a GPU yet, so it is not known to pay. ``checkpoint_dir``: write ``best.pt`` and ``last.pt``
    there (atomically; ``meta`` must then hold ``net`` and ``config_hash``; the checkpoints also record
    ``deterministic``). ``on_epoch(row)`` is called after every epoch (e.g. a heartbeat).

    Resuming: with a ``checkpoint_dir``, the training state is written to ``<checkpoint_dir>/resume.pt``
    (atomically) after an epoch once ``resume_every_s`` seconds have passed since the last write
    (``None``: never), and removed when training ends. ``resume=True`` continues from that file when it
    exists: weights and batch-norm statistics, optimizer and schedule, the epochs' metrics and best
    checkpoint so far, the random generators (the global one, which dropout draws from, and the
    augmentation generator) and the loaders' epoch counters (``set_epoch``: a loader whose random choices
    derive from its epoch, as ``data.DeviceLoader``'s, then yields the batches it would have yielded). On
    the same device and thread count the result is the one of an uninterrupted run (tested on the CPU).
    ``TrainResult.extra["resumed_epoch"]`` is the number of epochs read from the file (0 when it started
    afresh), ``extra["resumed_seconds"]`` the training time they took; ``seconds`` includes it. A resume
    file of another net or run (``meta``) raises :class:`CheckpointError`.
    """
    cfg = defaults(task, net)
    epochs = int(cfg["epochs"] if epochs is None else epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    loss = check_choice("loss", cfg["loss"] if loss is None else loss, LOSSES)
    stop0 = cfg["stop_at_zero_loss"] if stop_at_zero_loss is None else stop_at_zero_loss
    extra = dict(extra_test_loaders or {})
    check_choice("select_on", select_on, ("test", *extra))
    check_choice("deterministic", deterministic, (False, True))
    check_choice("precision", precision, PRECISIONS)
    opt = make_optimizer(model, cfg["optimizer"] if optimizer is None else optimizer,
                         cfg["lr"] if lr is None else lr, cfg["momentum"] if momentum is None else momentum,
                         cfg["weight_decay"] if weight_decay is None else weight_decay)
    sched = make_schedule(opt, cfg["schedule"] if schedule is None else schedule, epochs)
    device = next(iter(model.parameters())).device
    if fast and device.type != "cuda":
        warnings.warn("fast=True only has an effect on CUDA (bf16 autocast, channels_last); ignored", stacklevel=2)
    fast = fast and device.type == "cuda"
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        warnings.warn("precision='bf16' on a CPU without native bfloat16 (no avx512_bf16 / AMX): autocast is "
                      "emulated there, measured 14x slower per step than float32 on an AVX2 CPU; use "
                      "precision='float32' on this machine", stacklevel=2)
    check_choice("channels_last", channels_last, (None, False, True))
    cl = (fast or device.type == "cpu") if channels_last is None else bool(channels_last)
    check_choice("resume", resume, (False, True))
    if resume_every_s is not None and not (isinstance(resume_every_s, (int, float)) and resume_every_s >= 0):
        raise ValueError(f"resume_every_s must be a number of seconds >= 0 or None, got {resume_every_s!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir (where resume.pt is)")
    resume_path = Path(checkpoint_dir) / RESUME_FILE if checkpoint_dir is not None else None
    loaders = (train_loader, test_loader, *extra.values())
    state = _read_resume(resume_path, meta) if resume and resume_path.is_file() else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        for ld, ep in zip(loaders, state["loader_epochs"]):
            if ep is not None and hasattr(ld, "set_epoch"):
                ld.set_epoch(ep)
    benchmark, t_start = torch.backends.cudnn.benchmark, time.perf_counter()
    before = float(state["seconds"]) if state is not None else 0.0
    last_write = [t_start]

    def snapshot(rows: list[dict], best: tuple, gen: torch.Generator) -> None:
        """Write resume.pt when ``resume_every_s`` has passed since the last write."""
        now = time.perf_counter()
        if resume_path is None or resume_every_s is None or now - last_write[0] < resume_every_s:
            return
        _atomic_save({
            "meta": {"format": RESUME_FORMAT, "net": str((meta or {}).get("net", net)),
                     "config_hash": str((meta or {}).get("config_hash", ""))},
            "seconds": before + now - t_start, "rows": rows, "model": cpu_state(model),
            "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
            "best": {"score": best[0], "epoch": best[1], "state": {k: v.cpu() for k, v in best[2].items()}},
            "gen": gen.get_state(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "loader_epochs": [_loader_epoch(ld) for ld in loaders]}, resume_path)
        last_write[0] = time.perf_counter()
    with _float32_flags(float32_mode(device.type, fast, precision)), \
            deterministic_mode(bool(deterministic)) as nondeterministic_ops:
        if cl:
            model.to(memory_format=torch.channels_last)
        if fast:
            torch.backends.cudnn.benchmark = not deterministic
        tf32 = tf32_state()
        mode = dict(deterministic=bool(deterministic), fast=fast, channels_last=cl, device=str(device),
                    precision="bf16" if fast or precision == "bf16" else precision,
                    cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
                    tf32_matmul=tf32["matmul"], tf32_cudnn=tf32["cudnn_conv"],
                    compile=bool(compile and device.type == "cuda"))
        try:
            forward = torch.compile(model) if compile and device.type == "cuda" else model
            rows, best, stopped = _loop(model, train_loader, test_loader, extra, opt, sched, make_loss(loss),
                                        epochs, select_on, stop0, augment_fn, fast, device, seed, progress,
                                        str(meta.get("net", net) if meta else net) or "train", on_epoch,
                                        forward, cl, resumed=state, snapshot=snapshot, precision=precision)
        finally:
            torch.backends.cudnn.benchmark = benchmark
            if cl:
                model.to(memory_format=torch.contiguous_format)
    mode["nondeterministic_ops"] = list(nondeterministic_ops)
    res = TrainResult(pd.DataFrame(rows), {k: v.to("cpu", copy=True).contiguous() for k, v in best[2].items()},
                      cpu_state(model), best[1], rows[best[1] - 1]["test_err"], rows[-1]["test_err"], stopped,
                      before + time.perf_counter() - t_start,
                      extra={"resumed_epoch": len(state["rows"]) if state is not None else 0,
                             "resumed_seconds": before}, mode=mode)
    if checkpoint_dir is not None:
        meta = dict(meta or {})
        for kind, sd, ep in (("best", res.best_state, res.best_epoch), ("last", res.last_state, len(rows))):
            save_checkpoint(Path(checkpoint_dir) / f"{kind}.pt", sd, **{**meta, "kind": kind, "epoch": ep,
                            "test_err": rows[ep - 1]["test_err"], "deterministic": bool(deterministic)})
        resume_path.unlink(missing_ok=True)  # after the checkpoints: a kill in between resumes again
    return res


def _loader_epoch(loader: Any) -> int | None:
    ep = getattr(loader, "epoch", None)
    return int(ep) if isinstance(ep, int) and not isinstance(ep, bool) else None


def _load_tagged(path: Path, fmt: str, what: str, kind: str, map_location: Any = "cpu",
                 mmap: bool = False) -> tuple[dict, dict]:
    """``(content, meta)`` of a file :func:`_atomic_save` wrote with ``{"meta": {"format": fmt, ...}}``;
    :class:`CheckpointError` naming the file when it is unreadable or of another format. ``what``/``kind``:
    the file's name in the messages ("checkpoint", "torch checkpoint" / "resume file", "torch file")."""
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip failure means an unusable file
        raise CheckpointError(f"{what} {path} is corrupted or not a {kind} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path} is not a stabkit {what} (expected format tag {fmt!r}, found {found!r})")
    return obj, meta


def _read_resume(path: Path, meta: Mapping[str, Any] | None, mmap: bool = False) -> dict:
    """The training state in ``path`` (:data:`RESUME_FILE`), checked against ``meta``'s net and run
    (``mmap``: tensors mapped from the file, not read, for a caller that only looks at the metadata)."""
    obj, info = _load_tagged(path, RESUME_FORMAT, "resume file", "torch file", mmap=mmap)
    for k in ("net", "config_hash"):
        if meta and k in meta and str(meta[k]) != info.get(k):
            raise CheckpointError(f"resume file {path} holds {k} {info.get(k)!r}, expected {str(meta[k])!r}")
    return obj


def resume_epoch(path: str | Path, *, net: str | None = None, config_hash: str | None = None) -> int | None:
    """Epochs done in the resume file ``path`` (written by :func:`train`), or ``None`` when there is none,
    it cannot be read, or it belongs to another net or run: a state :func:`train` can continue from."""
    path = Path(path)
    if not path.is_file():
        return None
    meta = {k: v for k, v in (("net", net), ("config_hash", config_hash)) if v is not None}
    try:
        return len(_read_resume(path, meta, mmap=True)["rows"])
    except (CheckpointError, KeyError, TypeError):
        return None


def _loop(model, train_loader, test_loader, extra, opt, sched, loss_fn, epochs, select_on, stop0, augment_fn,
          fast, device, seed, progress, desc, on_epoch, forward, channels_last, resumed=None, snapshot=None,
          precision="float32"):
    """The epochs of :func:`train`: ``(rows, (score, epoch, state dict on the device), stopped)``.
    ``resumed``: a resume file's content (rows, best, augmentation generator) to continue from;
    ``snapshot(rows, best, gen)``: called after every epoch but the last."""
    from tqdm.auto import tqdm

    gen = torch.Generator(device=device).manual_seed(int(seed))
    forward = model if forward is None else forward
    rows, best, stopped = [], None, False
    if resumed is not None:
        rows = [dict(r) for r in resumed["rows"]]
        b = resumed["best"]
        best = (b["score"], b["epoch"], {k: v.to(device) for k, v in b["state"].items()})
        gen.set_state(resumed["gen"])
    bar = tqdm(range(len(rows), epochs), desc=desc, leave=False, disable=not progress, unit="ep",
               initial=len(rows), total=epochs)
    for epoch in bar:  # ------------------------------------------------------------------ the loop
        model.train()
        t0, lr_now = time.perf_counter(), opt.param_groups[0]["lr"]
        tot_loss = torch.zeros((), device=device, dtype=torch.float64)
        tot_err = torch.zeros((), device=device, dtype=torch.int64)
        n = 0
        for x, y in train_loader:  # nothing here waits for the device
            x = augment_fn(x, gen) if augment_fn is not None else x
            with _autocast(device, fast, precision):
                out = forward(x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x)
            l, e = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            l.backward()
            opt.step()
            tot_loss, tot_err, n = tot_loss + l.detach().double() * len(y), tot_err + e.detach(), n + len(y)
        sched.step()
        sums = [torch.stack([tot_loss, tot_err.to(torch.float64)])]
        counts = [n]
        for ld in (test_loader, *extra.values()):
            s, m = _eval_sums(model, ld, loss_fn, fast, channels_last, precision)
            sums.append(s.to(device))
            counts.append(m)
        values = torch.cat(sums).tolist()  # the one host synchronisation of the epoch
        row = dict(epoch=epoch + 1, train_loss=values[0] / n, train_err=values[1] / n,
                   test_loss=values[2] / counts[1], test_err=values[3] / counts[1])
        for k, name in enumerate(extra, start=2):
            row[f"{name}_err"] = values[2 * k + 1] / counts[k]
        row.update(lr=lr_now, seconds=time.perf_counter() - t0)
        rows.append(row)
        score = row["test_err" if select_on == "test" else f"{select_on}_err"]
        if best is None or score < best[0]:
            best = (score, epoch + 1, _device_state(model))  # a copy on the device, to the CPU at the end
        bar.set_postfix(loss=f"{row['train_loss']:.3g}", test_err=f"{row['test_err']:.3f}")
        if on_epoch is not None:
            on_epoch(row)
        if not math.isfinite(row["train_loss"]):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1} (train loss {row['train_loss']})")
        if stop0 and row["train_loss"] == 0.0:
            stopped = True
            break
        if snapshot is not None and epoch + 1 < epochs:
            snapshot(rows, best, gen)
    bar.close()  # ---------------------------------------------------------------------------------
    return rows, best, stopped


# ------------------------------------------------------------------------------------------ checkpoints
class CheckpointError(ValueError):
    """A checkpoint file is corrupted, is not a stabkit checkpoint, or belongs to another run/net."""


def save_checkpoint(path: str | Path, state_dict: Mapping[str, torch.Tensor], *, net: str, config_hash: str,
                    **extra: Any) -> Path:
    """Write ``{"meta": {format, net, config_hash, **extra}, "state_dict": ...}`` atomically (tmp + replace).

    ``extra`` values must be plain Python scalars/strings so that the file loads with ``weights_only=True``.
    """
    path = Path(path)
    meta = {"format": CHECKPOINT_FORMAT, "net": str(net), "config_hash": str(config_hash)}
    for k, v in extra.items():
        if not (v is None or isinstance(v, (str, int, float, bool))):
            raise ValueError(f"checkpoint metadata {k!r} must be a str/int/float/bool/None, got {type(v).__name__}")
        meta[k] = v
    sd = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state_dict.items()}
    return _atomic_save({"meta": meta, "state_dict": sd}, path)


def _atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``: a kill leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, *, net: str | None = None, config_hash: str | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(..., weights_only=True)``.

    Raises :class:`CheckpointError` (a ``ValueError``) naming the file when it is missing, truncated or
    corrupted, not a stabkit checkpoint (no/other format tag), or when ``net`` / ``config_hash`` are given
    and differ from the ones it records.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    obj, meta = _load_tagged(path, CHECKPOINT_FORMAT, "checkpoint", "torch checkpoint", map_location)
    if not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a stabkit checkpoint (expected format tag {CHECKPOINT_FORMAT!r}, "
                              f"found {meta.get('format')!r})")
    if net is not None and meta.get("net") != net:
        raise CheckpointError(f"checkpoint {path} holds net {meta.get('net')!r}, expected {net!r}")
    if config_hash is not None and meta.get("config_hash") != config_hash:
        raise CheckpointError(f"checkpoint {path} belongs to run {meta.get('config_hash')!r}, "
                              f"expected {config_hash!r}")
    return obj["state_dict"], meta
