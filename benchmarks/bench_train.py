"""Training throughput on CPU: device-resident data vs a DataLoader over PIL images.

stabkit path: ``stabkit.data.DeviceLoader`` (uint8 tensor kept in memory, crop + flip + normalisation on
whole batches) + ``stabkit.train.train(..., TrainSpec(epochs=1))``. Baseline: a torchvision-CIFAR10-style dataset of PIL
images with ``RandomCrop(32, 4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` in a
``torch.utils.data.DataLoader`` (``num_workers=0``: the 2-core machine has no spare core for workers) +
a hand-written SGD epoch. Both include one evaluation pass over the same 128 test images (``train``
evaluates every epoch). Same nets, same initialisation, batch 128.
Check: without augmentation both input pipelines yield the same normalised batch (max |diff|).
"""
from __future__ import annotations

import numpy as np
import torch

from . import naive
from .common import Result, cifar_sample, interleaved

NETS = (("lenet", 1.0), ("vgg11", 0.25))


def _data(n_train: int, n_test: int = 128):
    xtr, ytr, source = cifar_sample(n_train, train=True, seed=0)
    xte, yte, _ = cifar_sample(n_test, train=False, seed=1)
    return (xtr, ytr), (xte, yte), source


def _device_loaders(train, test, batch_size: int = 128):
    from stabkit.data import DeviceLoader
    chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    tr = DeviceLoader(chw(train[0]), torch.from_numpy(train[1]), batch_size, shuffle=True, augment=True,
                      mean=naive.CIFAR_MEAN, std=naive.CIFAR_STD, device="cpu", seed=0)
    te = DeviceLoader(chw(test[0]), torch.from_numpy(test[1]), batch_size, shuffle=False, augment=False,
                      mean=naive.CIFAR_MEAN, std=naive.CIFAR_STD, device="cpu", seed=0)
    return tr, te


def _pil_loaders(train, test, batch_size: int = 128, num_workers: int = 0):
    tr = naive.pil_loader(*train, batch_size=batch_size, augment=True, shuffle=True, num_workers=num_workers)
    te = naive.pil_loader(*test, batch_size=batch_size, augment=False, shuffle=False, num_workers=num_workers)
    return tr, te


def check_pipelines(train) -> float:
    """Max |difference| between the first un-augmented, unshuffled batch of both pipelines."""
    from stabkit.data import DeviceLoader
    imgs, labels = train
    dl = DeviceLoader(torch.from_numpy(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))),
                      torch.from_numpy(labels), 64, shuffle=False, augment=False, mean=naive.CIFAR_MEAN,
                      std=naive.CIFAR_STD, device="cpu")
    pl = naive.pil_loader(imgs, labels, batch_size=64, augment=False, shuffle=False)
    (a, ya), (b, yb) = next(iter(dl)), next(iter(pl))
    if not torch.equal(ya.long(), yb.long()):
        return float("inf")
    return (a - b).abs().max().item()


def _model(name: str, width: float):
    from stabkit.nets import build
    torch.manual_seed(0)
    return build(name, width_factor=width)


def run(quick: bool = False, repeats: int = 3) -> list[Result]:
    from stabkit.train import TrainSpec, train

    n_train = 256 if quick else 1536
    train_data, test_data, source = _data(n_train)
    err = check_pipelines(train_data)
    ok = err < 1e-5
    out = []
    nets = NETS[:1] if quick else NETS
    for name, width in nets:
        dev_tr, dev_te = _device_loaders(train_data, test_data)
        pil_tr, pil_te = _pil_loaders(train_data, test_data)
        losses = {}

        def device_path():
            model = _model(name, width)
            res = train(model, {"train": dev_tr, "test": dev_te}, TrainSpec(epochs=1), progress=False)
            losses["stabkit"] = float(res.metrics["train_loss"].iloc[-1])

        def baseline():
            model = _model(name, width)
            losses["baseline"] = naive.train_epoch(model, pil_tr)
            naive.evaluate(model, pil_te)

        def loader_only_device():
            for _ in dev_tr:
                pass

        def loader_only_pil():
            for _ in pil_tr:
                pass

        cpu: dict = {}
        secs = interleaved({"dev": device_path, "pil": baseline}, repeats, warmup=0, cpu=cpu)
        label = f"{name}" + (f" width {width:g}" if width != 1 else "")
        case = f"train 1 epoch {label}, {n_train} images, CPU"
        note = f"{source}; pipelines agree to {err:.1e} ({'ok' if ok else 'MISMATCH'})"
        out.append(Result(case, "stabkit DeviceLoader + train", secs["dev"], n_train,
                          notes=note + (f"; loss {losses['stabkit']:.3f}" if losses.get("stabkit") else ""),
                          extra={"ok": ok}, cpu_seconds=cpu["dev"]))
        out.append(Result(case, "DataLoader(PIL + torchvision transforms) + SGD loop", secs["pil"], n_train,
                          notes=f"num_workers=0; loss {losses['baseline']:.3f}", baseline=True, extra={"ok": ok},
                          cpu_seconds=cpu["pil"]))
        if name == nets[0][0]:
            cpu = {}
            secs = interleaved({"dev": loader_only_device, "pil": loader_only_pil}, repeats, warmup=1, cpu=cpu)
            case = f"input pipeline only, {n_train} images, crop+flip+normalise"
            out.append(Result(case, "stabkit DeviceLoader", secs["dev"], n_train, notes=source, extra={"ok": ok},
                              cpu_seconds=cpu["dev"]))
            out.append(Result(case, "DataLoader(PIL + torchvision transforms)", secs["pil"], n_train,
                              notes="num_workers=0", baseline=True, extra={"ok": ok}, cpu_seconds=cpu["pil"]))
    return out
