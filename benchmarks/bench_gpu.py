"""GPU cases (run by ``python -m benchmarks`` only when ``torch.cuda.is_available()``).

1. Epoch time on CIFAR-10 (50,000 training images, evaluation on the 10,000 test images) for ResNet18,
   VGG11bn and LeNet at batch 128: stabkit's device path (``DeviceLoader`` on the GPU + ``train``) vs a
   ``DataLoader`` over PIL images with torchvision transforms (``num_workers`` = min(8, usable cores),
   ``pin_memory``) + a hand-written SGD loop; each with and without bf16 autocast + channels_last.
2. ``measure`` on the GPU: VGG11, P = 500, float64 and float32 paths vs the naive float64 pipeline.
3. Concurrency: 1, 2 and 4 simultaneous processes each training one ResNet18 epoch on the device path;
   aggregate images/s.

``run(..., device="cpu")`` executes the same code at toy size on the CPU (used by the smoke test, since the
development machine has no GPU).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

from . import naive
from .common import CIFAR_TAR, ROOT, Result, interleaved

NETS = ("resnet18", "vgg11bn", "lenet")
#: Targets of issue 14 on an H200: seconds per CIFAR-10 epoch (50,000 images, batch 128, crop + flip,
#: plus the test-set evaluation) on the device path.
EPOCH_TARGETS = {"resnet18": 1.0, "lenet": 0.3}


def cifar_full(quick: bool, random: bool = False) -> tuple[tuple, tuple, str]:
    """(train, test) as uint8 HWC numpy arrays + labels; the whole split unless ``quick``; random images
    of the same size if ``random`` or if no CIFAR-10 is found."""
    try:
        if random:
            raise LookupError("random images requested")
        from stabkit.data import cifar10_tensors
        root = CIFAR_TAR if CIFAR_TAR.exists() else None
        xtr, ytr = cifar10_tensors(root, train=True)
        xte, yte = cifar10_tensors(root, train=False)
        source = "cifar10"
    except Exception:  # no data anywhere: random images of the same size
        g = torch.Generator().manual_seed(0)
        xtr = torch.randint(0, 256, (50000, 3, 32, 32), generator=g, dtype=torch.uint8)
        ytr = torch.randint(0, 10, (50000,), generator=g)
        xte = torch.randint(0, 256, (10000, 3, 32, 32), generator=g, dtype=torch.uint8)
        yte = torch.randint(0, 10, (10000,), generator=g)
        source = "random"
    if quick:
        xtr, ytr, xte, yte = xtr[:512], ytr[:512], xte[:256], yte[:256]
    hwc = lambda t: np.ascontiguousarray(torch.as_tensor(t).permute(0, 2, 3, 1).numpy())  # noqa: E731
    return (hwc(xtr), torch.as_tensor(ytr).numpy()), (hwc(xte), torch.as_tensor(yte).numpy()), source


def _device_epoch(name: str, train_data, test_data, device, fast: bool, seed: int = 0) -> float:
    """One epoch (train + test evaluation) on the device path; returns the final train loss."""
    from stabkit.data import DeviceLoader, default_eval_batch_size
    from stabkit.nets import build
    from stabkit.train import TrainSpec, train

    chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    tr = DeviceLoader(chw(train_data[0]), torch.from_numpy(train_data[1]), 128, shuffle=True, augment=True,
                      mean=naive.CIFAR_MEAN, std=naive.CIFAR_STD, device=device, seed=seed)
    te = DeviceLoader(chw(test_data[0]), torch.from_numpy(test_data[1]), default_eval_batch_size(128, device),
                      shuffle=False, augment=False, mean=naive.CIFAR_MEAN, std=naive.CIFAR_STD, device=device,
                      seed=seed)
    torch.manual_seed(seed)
    model = build(name).to(device)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fast=True on CPU (smoke test) only warns
        res = train(model, {"train": tr, "test": te}, TrainSpec(epochs=1, fast=fast), progress=False)
    return float(res.metrics["train_loss"].iloc[-1])


def _loader_epoch(name: str, loaders, device, fast: bool, seed: int = 0) -> float:
    from stabkit.nets import build
    torch.manual_seed(seed)
    model = build(name).to(device)
    loss = naive.train_epoch(model, loaders[0], device=device, fast=fast and torch.device(device).type == "cuda")
    naive.evaluate(model, loaders[1], device=device, fast=fast and torch.device(device).type == "cuda")
    return loss


def _concurrent(k: int, net: str, quick: bool, device: str, random: bool) -> list[float]:
    """Per-process epoch seconds of ``k`` simultaneous processes each training one epoch (device path).

    Workers load their data and build their net, then wait at a file barrier until all ``k`` are ready,
    so that the timed epochs overlap (start-up is not timed)."""
    import tempfile
    with tempfile.TemporaryDirectory() as barrier:
        cmd = [sys.executable, "-m", "benchmarks.bench_gpu", "worker", net, str(int(quick)), device,
               str(int(random)), barrier, str(k)]
        procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(k)]
        times = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"concurrent worker failed: {err[-1000:]}")
            times.append(json.loads(out.strip().splitlines()[-1])["seconds"])
    return times


def run(quick: bool = False, repeats: int = 2, device: str = "cuda", concurrency=(1, 2, 4),
        random: bool = False) -> list[Result]:
    """All GPU cases; ``device="cpu"`` and ``random=True`` only for the smoke test of this code."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("GPU cases need torch.cuda.is_available()")
    train_data, test_data, source = cifar_full(quick, random)
    n = len(train_data[0])
    workers = 0 if device == "cpu" else min(8, len(os.sched_getaffinity(0)))
    pin = device != "cpu"
    out = []
    nets = NETS[-1:] if quick else NETS
    for name in nets:
        for fast in (False, True):
            loaders = (naive.pil_loader(*train_data, augment=True, shuffle=True, num_workers=workers, pin_memory=pin),
                       naive.pil_loader(*test_data, batch_size=512, augment=False, shuffle=False,
                                        num_workers=workers, pin_memory=pin))
            losses = {}
            secs = interleaved({
                "dev": lambda: losses.__setitem__("dev", _device_epoch(name, train_data, test_data, device, fast)),
                "pil": lambda: losses.__setitem__("pil", _loader_epoch(name, loaders, device, fast)),
            }, repeats, warmup=1, device=device)
            mode = "bf16 autocast + channels_last" if fast else "float32"
            case = f"GPU epoch {name} batch 128, {mode} ({n} images + test)"
            ok = all(np.isfinite(v) for v in losses.values())
            target = EPOCH_TARGETS.get(name) if not quick and n == 50000 else None
            met = "" if target is None else (f"; target <= {target:g} s/epoch "
                                             f"{'met' if np.median(secs['dev']) <= target else 'NOT met'}")
            out.append(Result(case, "stabkit DeviceLoader + train", secs["dev"], n,
                              notes=f"{source}; loss {losses['dev']:.3f}{met}", extra={"ok": ok, "target": target}))
            out.append(Result(case, f"DataLoader(PIL, {workers} workers, pin_memory) + SGD loop", secs["pil"], n,
                              notes=f"loss {losses['pil']:.3f}", baseline=True, extra={"ok": ok}))
    # measure on the GPU
    from . import bench_measure
    P = 20 if quick else 500
    model, probes, src = bench_measure.prepare(P)
    model = model.to(device)
    probes = tuple(t.to(device) for t in probes)
    ref = bench_measure.VARIANTS["naive"](model, probes)
    fns = {k: (lambda k=k: bench_measure.VARIANTS[k](model, probes)) for k in bench_measure.VARIANTS}
    errs = {k: bench_measure.max_rel_diff(fns[k](), ref) for k in fns if k != "naive"}
    secs = interleaved(fns, repeats, warmup=1, device=device)
    case = f"GPU measure VGG11 P={P}"
    for k in ("stabkit-float64", "stabkit-float32"):
        out.append(Result(case, f"stabkit measure, {k.split('-')[1]} forward", secs[k], P, unit="probes",
                          notes=f"{src}; max rel diff {errs[k]:.1e}", extra={"ok": errs[k] < 1e-6, "err": errs[k]}))
    out.append(Result(case, "naive: 3 float64 forwards, stored activations, cdist", secs["naive"], P,
                      unit="probes", baseline=True, extra={"ok": True}))
    # concurrency
    net = "lenet" if quick else "resnet18"
    for k in concurrency:
        secs = _concurrent(k, net, quick, device, random)
        out.append(Result(f"GPU concurrent {net} epochs", f"{k} processes, device path", secs, n,
                          notes=f"seconds = one epoch per process (median/min/max over the {k}); aggregate "
                          f"{k * n / max(secs):,.0f} images/s", extra={"ok": True}))
    return out


def _worker(net: str, quick: bool, device: str, random: bool, barrier: str, k: int) -> None:
    from pathlib import Path
    train_data, test_data, _ = cifar_full(quick, random)
    if device == "cuda":
        torch.zeros(1, device=device)  # CUDA context before the barrier
    Path(barrier, f"ready-{os.getpid()}").touch()
    deadline = time.time() + 600
    while len(list(Path(barrier).glob("ready-*"))) < k and time.time() < deadline:
        time.sleep(0.05)
    t = time.perf_counter()
    loss = _device_epoch(net, train_data, test_data, device, fast=False)
    if device == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"loss": loss, "seconds": time.perf_counter() - t}))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "worker":
        _worker(sys.argv[2], sys.argv[3] == "1", sys.argv[4], sys.argv[5] == "1", sys.argv[6], int(sys.argv[7]))
