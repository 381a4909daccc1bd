"""``diffeo_batch`` alone against the per-image loop (CPU): 500 CIFAR images, 64 images of 224x224."""
from __future__ import annotations

import torch

from . import naive
from .common import Result, cifar_sample, interleaved, random_images


def _inputs(size: str, quick: bool) -> tuple[torch.Tensor, str]:
    if size == "cifar":
        n = 16 if quick else 500
        imgs, _, source = cifar_sample(n)
        return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(255).contiguous(), source
    n = 2 if quick else 64
    return random_images(n, 224, seed=1), "random smooth"


def run(quick: bool = False, repeats: int = 5) -> list[Result]:
    from stabkit.transforms import diffeo_batch

    out = []
    for size in ("cifar", "224"):
        x, source = _inputs(size, quick)
        B, C, n, _ = x.shape

        def fast():
            return diffeo_batch(x, 1.0, 3, generator=torch.Generator().manual_seed(0))

        def slow():
            return naive.diffeo_loop(x, 1.0, 3, generator=torch.Generator().manual_seed(0))

        err = (fast() - slow()).abs().max().item()
        moved = (fast() - x).abs().max().item()
        ok = err < 1e-5 and moved > 1e-2
        case = f"diffeo_batch {B}x{C}x{n}x{n}"
        check = f"max |diff| {err:.1e} ({'ok' if ok else 'MISMATCH'})"
        cpu: dict = {}
        secs = interleaved({"fast": fast, "slow": slow}, repeats, warmup=0 if quick else 1, cpu=cpu)
        t_fast, t_slow = secs["fast"], secs["slow"]
        out.append(Result(case, "stabkit diffeo_batch (float32, batched)", t_fast, B,
                          notes=f"{source}; {check}", extra={"ok": ok},
                          cpu_seconds=cpu["fast"]))
        out.append(Result(case, "naive per-image loop", t_slow, B, notes=source, baseline=True,
                          extra={"ok": ok}, cpu_seconds=cpu["slow"]))
    return out
