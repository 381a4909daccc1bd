"""Does bf16 training cost accuracy? LeNet on a CIFAR-10 subset trained to the end in float32 and in bf16.

Same seeds, same data order, same augmentation (``stabkit.data.DeviceLoader`` + ``stabkit.train.train`` with
``precision`` the only difference), cosine_to_zero schedule so that the last epoch is the converged one.
Reported per precision: best and last test error over seeds (mean and per seed), and the seed-to-seed spread
of float32, which the bf16-float32 gap is compared with. On a CPU without native bf16 the bf16 runs are
emulated (slow) but compute the same bf16 arithmetic, so the accuracy answer holds; the speed answer is the
``step`` case. LeNet keeps this affordable on two cores; a network of the cpu grid would take hours.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from . import naive
from .common import Result, cifar_sample


def run(quick: bool = False, repeats: int = 3) -> list[Result]:
    from stabkit.data import DeviceLoader
    from stabkit.nets import build
    from stabkit.train import TrainSpec, train

    n_train, n_test, epochs = (256, 128, 2) if quick else (10_000, 2_000, 15)
    seeds = range(1 if quick else repeats)
    xtr, ytr, source = cifar_sample(n_train, train=True, seed=0)
    xte, yte, _ = cifar_sample(n_test, train=False, seed=1)
    chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    errs: dict[str, list[tuple[float, float]]] = {"float32": [], "bf16": []}
    secs: dict[str, list[float]] = {"float32": [], "bf16": []}
    for seed in seeds:
        for prec in errs:
            tr = DeviceLoader(chw(xtr), torch.from_numpy(ytr), 128, shuffle=True, augment=True,
                              mean=naive.CIFAR_MEAN, std=naive.CIFAR_STD, device="cpu", seed=seed)
            te = DeviceLoader(chw(xte), torch.from_numpy(yte), 500, shuffle=False, augment=False,
                              mean=naive.CIFAR_MEAN, std=naive.CIFAR_STD, device="cpu", seed=seed)
            torch.manual_seed(seed)
            model = build("LeNet")
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the no-native-bf16 warning: speed is not what this case measures
                spec = TrainSpec(epochs=epochs, lr=0.05, schedule="cosine_to_zero", precision=prec, seed=seed)
                res = train(model, {"train": tr, "test": te}, spec, progress=False)
            secs[prec].append(time.perf_counter() - t)
            errs[prec].append((res.best_test_err, res.last_test_err))
    f32_last = np.array([e[1] for e in errs["float32"]])
    spread = float(f32_last.max() - f32_last.min()) if len(f32_last) > 1 else float("nan")
    gap = float(np.mean([e[1] for e in errs["bf16"]]) - f32_last.mean())
    ok = bool(len(f32_last) < 2 or abs(gap) <= max(spread, 0.01))
    case = f"LeNet on {n_train} CIFAR-10 images, {epochs} epochs, seeds 0-{len(seeds) - 1}: test error (best / last)"
    out = []
    for prec, rows in errs.items():
        per_seed = ", ".join(f"{100 * b:.1f} / {100 * last:.1f}" for b, last in rows)
        note = (f"{source}; per seed (best / last, %): {per_seed}; mean last {100 * np.mean([r[1] for r in rows]):.2f} %")
        if prec == "bf16":
            note += (f"; bf16 - float32 (mean last error): {100 * gap:+.2f} points, float32 seed spread "
                     f"{100 * spread:.2f} points -> {'within' if ok else 'OUTSIDE'} the spread")
        out.append(Result(case, prec, secs[prec], n_train * epochs, baseline=prec == "float32",
                          extra={"ok": ok}, notes=note))
    return out
