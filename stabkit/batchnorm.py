"""Batch-norm recalibration: re-estimate a network's running statistics on a set of images.

Why it exists (``book/methods.md``, "Channel shuffling"): shuffling the filters of a trained network changes the
distribution of every later layer's input, while its batch-norm layers still normalise with the running
statistics of the *unshuffled* network. Part of the shuffle's damage is then a mismatch of scale and offset,
not a loss of spatial pooling. Re-estimating the running statistics on training images after shuffling
separates the two. The same function gives the "initialisation with running statistics" reference, where an
untrained network is otherwise measured with batch statistics.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .checks import check_device, check_int


def batchnorm_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """``(name, module)`` of every batch-norm layer (``nn.BatchNorm1d/2d/3d``, ``SyncBatchNorm``) of ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, *, batch_size: int = 500,
                          device: str | torch.device | None = None) -> nn.Module:
    """A deep copy of ``model`` whose batch-norm running statistics are those of ``images``.

    Args:
        model: any network; it is not modified. Layers without batch norm are copied unchanged.
        images: ``[N, ...]`` inputs as the network takes them (normalised, no augmentation), ``N >= 2``;
            the training images for the shuffle control.
        batch_size: images per forward pass (``>= 2``): batch norm normalises each batch with its own
            statistics during the pass, as in training.
        device: where to compute (default: the model's device).

    Returns:
        The copy, in eval mode, on ``device``. For every batch-norm layer, ``running_mean`` and
        ``running_var`` are the per-channel mean and unbiased variance of that layer's input over all ``N``
        images (and all positions), accumulated in float64, with the network in training mode, so that each
        layer sees its inputs as training did (upstream layers normalised by batch statistics). This is what
        the running averages of a converged training run estimate, without their exponential forgetting.
        ``num_batches_tracked`` is left as it was.
    """
    batchnorm_layers(model)  # checks the type
    if not isinstance(images, torch.Tensor) or images.ndim < 2 or images.shape[0] < 2:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor [N, ...] with N >= 2; got {shape}")
    batch_size = check_int("batch_size", batch_size, minimum=2)
    check_device("device", device)
    new = copy.deepcopy(model)
    if device is None:
        first = next(iter(new.parameters()), None)
        device = first.device if first is not None else images.device
    new.to(device)
    dtype = next((p.dtype for p in new.parameters() if p.is_floating_point()), torch.float32)
    sums: dict[str, list] = {}

    def hook(name: str):
        def accumulate(module, inputs):
            x = inputs[0].detach().to(torch.float64)
            dims = [0] + list(range(2, x.ndim))  # every axis but the channel axis
            s = sums.setdefault(name, [0, 0.0, 0.0])
            s[0] += x.numel() // x.shape[1]
            s[1] = s[1] + x.sum(dim=dims)
            s[2] = s[2] + (x * x).sum(dim=dims)
        return accumulate

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in batchnorm_layers(new)]
    momenta = {name: m.momentum for name, m in batchnorm_layers(new)}
    tracked = {name: m.num_batches_tracked.clone() for name, m in batchnorm_layers(new)
               if m.num_batches_tracked is not None}
    try:
        new.train()
        for name, m in batchnorm_layers(new):
            m.momentum = 0.0  # the forward pass must not touch the running statistics it is estimating
        # A shift by the first batch's channel means would reduce cancellation in x^2 - mean^2; float64 sums of
        # float32 activations keep the relative error near 1e-12 for the N of a training set, enough here.
        for start in range(0, images.shape[0], batch_size):
            new(images[start:start + batch_size].to(device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for name, m in batchnorm_layers(new):
            m.momentum = momenta[name]
            if name in tracked:
                m.num_batches_tracked.copy_(tracked[name])
        new.eval()
    for name, m in batchnorm_layers(new):
        if name not in sums or not m.track_running_stats or m.running_mean is None:
            continue  # a layer the forward pass never reached, or one without running statistics
        n, s1, s2 = sums[name]
        mean = s1 / n
        var = (s2 - n * mean * mean) / max(n - 1, 1)
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.clamp_min(0).to(m.running_var.dtype))
    return new


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a batch-norm layer (the recalibrated control changes nothing otherwise)."""
    return bool(batchnorm_layers(model))


__all__ = ["batchnorm_layers", "has_batchnorm", "recalibrate_batchnorm"]
