"""Naive baselines, written the straightforward way from METHODS.md (not from stabkit's code).

- :func:`diffeo_loop`: one image at a time, the displacement field summed mode by mode and bilinear
  interpolation written out with explicit index arithmetic (what the original code did, in a loop).
- :func:`measure_float64`: three separate float64 forwards (clean, diffeo, noise) through a torchvision FX
  feature extractor returning every node, activations stored, ``deno`` from ``torch.cdist`` over all
  ordered pairs.
- :class:`PILCifar` + :func:`train_epoch`: a torchvision-style dataset of PIL images with torchvision
  transforms, a ``torch.utils.data.DataLoader`` and a hand-written SGD loop.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn


# ------------------------------------------------------------------------------------ diffeomorphisms
def diffeo_loop(images: torch.Tensor, delta: float = 1.0, cut: int = 3,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random diffeomorphism (bilinear, clamped pull-back) of ``images [B, C, n, n]``.

    The coefficients are drawn as one ``randn(B, 2, cut, cut)`` float64 tensor, the draw layout documented
    by ``stabkit.transforms.diffeo``, so the same generator state gives the same fields.
    """
    B, C, n, _ = images.shape
    T = 4 * delta ** 2 / (math.pi * n ** 2 * math.log(cut))
    coef = torch.randn(B, 2, cut, cut, generator=generator, dtype=torch.float64)
    coords = torch.arange(n, dtype=torch.float64) / (n - 1)
    out = torch.empty_like(images)
    for b in range(B):
        u = torch.zeros(n, n, dtype=torch.float64)
        v = torch.zeros(n, n, dtype=torch.float64)
        for i in range(1, cut + 1):
            for j in range(1, cut + 1):
                r = math.sqrt(i * i + j * j)
                if r < cut + 0.5:
                    mode = torch.outer(torch.sin(math.pi * j * coords), torch.sin(math.pi * i * coords))
                    u += coef[b, 0, i - 1, j - 1] / r * mode   # [y, x]
                    v += coef[b, 1, i - 1, j - 1] / r * mode
        dx = math.sqrt(T) * n * u
        dy = math.sqrt(T) * n * v
        ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64),
                                indexing="ij")
        sx = (xs - dx).clamp(0, n - 1)
        sy = (ys - dy).clamp(0, n - 1)
        x0 = sx.floor().clamp(max=n - 2).long()
        y0 = sy.floor().clamp(max=n - 2).long()
        wx = sx - x0
        wy = sy - y0
        img = images[b].to(torch.float64)
        val = (img[:, y0, x0] * (1 - wx) * (1 - wy) + img[:, y0, x0 + 1] * wx * (1 - wy)
               + img[:, y0 + 1, x0] * (1 - wx) * wy + img[:, y0 + 1, x0 + 1] * wx * wy)
        out[b] = val.to(images.dtype)
    return out


# ------------------------------------------------------------------------------------ stabilities
def measure_float64(model: nn.Module, x: torch.Tensor, x_tau: torch.Tensor, x_eta: torch.Tensor,
                    nodes: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Layer stabilities the naive way: ``{node: {D, G, deno, D_f, G_f, R_f}}``, float64 throughout.

    ``nodes`` default: every node of the eval-mode FX graph (torchvision's names) whose output is a
    tensor with the batch as first axis, the input placeholder included.
    """
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    m = copy.deepcopy(model).double().eval()
    if nodes is None:
        nodes = get_graph_node_names(m)[1]
    fx = create_feature_extractor(m, return_nodes=list(nodes))
    acts = []
    with torch.no_grad():
        for inp in (x, x_tau, x_eta):          # three separate forwards, everything stored
            out = fx(inp.to(torch.float64))
            acts.append({k: v.reshape(v.shape[0], -1) for k, v in out.items()
                         if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == x.shape[0]})
    res = {}
    with torch.no_grad():
        for name in acts[0]:
            o, ot, oe = acts[0][name], acts[1][name], acts[2][name]
            D = ((ot - o) ** 2).sum(1).mean().item()
            G = ((oe - o) ** 2).sum(1).mean().item()
            deno = torch.cdist(o, o).pow(2).mean().item() + 1e-10
            res[name] = {"D": D, "G": G, "deno": deno, "D_f": D / deno, "G_f": G / deno,
                         "R_f": D / G if G > 0 else float("nan")}
    return res


# ------------------------------------------------------------------------------------ training
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


class PILCifar(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10 style: uint8 HWC array, ``Image.fromarray`` + transform per item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def pil_transform(augment: bool):
    from torchvision import transforms as T
    steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
    return T.Compose(steps + [T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])


def pil_loader(images: np.ndarray, labels: np.ndarray, batch_size: int = 128, augment: bool = True,
               shuffle: bool = True, num_workers: int = 0, seed: int = 0, pin_memory: bool = False):
    """``images`` uint8 ``[N, 32, 32, 3]`` (HWC)."""
    ds = PILCifar(images, labels, pil_transform(augment))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                                       generator=torch.Generator().manual_seed(seed), pin_memory=pin_memory,
                                       persistent_workers=num_workers > 0)


def train_epoch(model: nn.Module, loader, lr: float = 0.1, device="cpu", fast: bool = False) -> float:
    """One epoch of plain SGD (momentum 0.9, weight decay 5e-4 on weights) + cross-entropy; mean loss.

    ``fast``: bf16 autocast and channels_last (the usual GPU recipe)."""
    device = torch.device(device)
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
                          lr=lr, momentum=0.9)
    if fast:
        model.to(memory_format=torch.channels_last)
    model.train()
    total = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach().double() * len(y)
        count += len(y)
    return float(total) / max(count, 1)


def evaluate(model: nn.Module, loader, device="cpu", fast: bool = False) -> float:
    """Error rate over ``loader`` (eval mode, no gradients)."""
    device = torch.device(device)
    model.eval()
    wrong = torch.zeros((), device=device)
    n = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            wrong += (model(x).argmax(1) != y).sum()
            n += len(y)
    return float(wrong) / max(n, 1)
