"""The on-device loader: a whole data set as tensors on the device, batches made there.

:class:`DeviceLoader` does crop (pad 4) + flip (:func:`~stabkit.data.crop_flip`, one gather), normalisation
(:func:`stabkit.transforms.normalize`) and the Fig. 1 noise corruption
(:class:`stabkit.transforms.GaussianNoiseCorruption`) on the device, vectorised, deterministic given
``seed`` and the epoch (``book/methods.md``, "Tasks").

No host-device synchronisation per batch: the order, crop offsets and flips of an epoch are drawn once,
on the CPU generator (so CPU and GPU runs see the same crops), and moved to the device in one copy per
epoch (through pinned memory on CUDA, without blocking the host); the noise and ``extra_augment`` draw on a generator that lives on the device.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from ..checks import check_int
from ..graph import resolve_device
from ..transforms import GaussianNoiseCorruption, normalize

__all__ = ["DeviceLoader", "crop_flip", "default_eval_batch_size"]


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(1, np.uint64)[0]
               & 0x7FFFFFFFFFFFFFFF)


def default_eval_batch_size(batch_size: int, device: str | torch.device) -> int:
    """Batch size for evaluation loaders: ``max(batch_size, 512)`` on the CPU (the value the runs have
    always used), ``max(batch_size, 2048)`` on CUDA (fewer launches; eval-mode results do not depend on
    the batch size, except the noise draws of a corrupted test set)."""
    batch_size = check_int("batch_size", batch_size, minimum=1)
    return max(batch_size, 2048 if torch.device(device).type == "cuda" else 512)


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Random-crop-with-padding and horizontal flip of a batch in one gather, no per-image Python work.

    Args:
        x: ``[B, C, H, W]`` (any dtype; padding value 0).
        offsets: ``int64 [B, 2]`` top-left corner (row, col) of each crop in the padded image, ``0..2p``
            (pass it on ``x``'s device: a tensor elsewhere is copied, a blocking transfer).
        flips: ``bool [B]``: flip that image left-right after cropping (same remark).
        padding: zero padding on each side.

    Returns:
        ``[B, C, H, W]``: ``out[b] = flip_b(pad(x[b])[:, r:r+H, c:c+W])``.
    """
    B, C, H, W = x.shape
    if padding:
        x = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dev, Wp = x.device, W + 2 * padding
    offsets = offsets.to(dev)
    ar_h = torch.arange(H, device=dev)
    ar_w = torch.arange(W, device=dev)
    rows = offsets[:, 0:1] + ar_h                                                     # [B, H]
    cols = offsets[:, 1:2] + torch.where(flips.to(dev)[:, None], W - 1 - ar_w, ar_w)  # [B, W]
    flat = (rows[:, :, None] * Wp + cols[:, None, :]).reshape(B, 1, H * W).expand(B, C, H * W)
    return x.flatten(2).gather(2, flat).view(B, C, H, W)


class DeviceLoader:
    """Whole data set on ``device``, batches made there with no per-image Python work.

    Args:
        images: ``[N, C, H, W]`` (or ``[N, C, L]`` without augmentation), uint8 (scaled by 1/255) or float
            (used as is).
        labels: ``[N]`` (any dtype; yielded as stored).
        batch_size: samples per batch.
        shuffle: new random order every epoch.
        augment: random crop (zero padding ``padding`` = 4, as ``RandomCrop(32, padding=4)``) + horizontal
            flip with probability 1/2, per image.
        mean, std: per-channel normalisation ``(x - mean) / std`` after augmentation (None: none).
        noise_std: Fig. 1 corruption ``noise_std * z / sqrt(C*H*W)`` added after normalisation, fresh for
            every batch (use it on training and test loaders alike).
        device: where the data live and batches are made: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"`` or a ``torch.device``.
        seed: every random choice (order, crops, flips, noise, ``extra_augment``) derives from ``seed`` and
            the epoch number, so two loaders with the same seed yield the same batches.
        drop_last: drop the last incomplete batch.
        extra_augment: optional ``fn(x, generator) -> x`` applied to each batch after crop/flip, before
            normalisation (images in [0, 1] for uint8 input); ``generator`` lives on ``device``.
        padding: crop padding (default 4).

    Iterating yields ``(x float32 [B, C, H, W] on device, y)``; each iteration is one epoch (the epoch
    counter advances; :meth:`set_epoch` sets it). ``len()`` is the number of batches.
    """

    def __init__(self, images, labels, batch_size: int, *, shuffle: bool = True, augment: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, noise_std: float = 0.0,
                 device: str | torch.device = "cpu", seed: int = 0, drop_last: bool = False,
                 extra_augment: Callable | None = None, padding: int = 4):
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels)
        if images.ndim < 2:
            raise ValueError(f"images must be [N, C, ...], got shape {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
        if len(images) == 0:
            raise ValueError("images is empty")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if augment and images.ndim != 4:
            raise ValueError(f"augment=True needs images [N, C, H, W], got shape {tuple(images.shape)}")
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"padding must be an int >= 0, got {padding!r}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together (or both None)")
        if extra_augment is not None and not callable(extra_augment):
            raise ValueError(f"extra_augment must be a callable fn(x, generator) -> x, got {extra_augment!r}")
        if not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
        self.device = resolve_device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.augment = int(batch_size), bool(shuffle), bool(augment)
        self.noise_std, self.seed, self.drop_last = float(noise_std), int(seed), bool(drop_last)
        self.extra_augment, self.padding = extra_augment, int(padding)
        shape = (1, -1) + (1,) * (images.ndim - 2)
        C = images.shape[1]
        self.mean = self.std = None
        if mean is not None:  # on the device once: normalize() then makes no copy per batch
            self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).reshape(shape)
            self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).reshape(shape)
            if self.mean.shape[1] not in (1, C) or self.std.shape[1] not in (1, C):
                raise ValueError(f"mean/std must have 1 or {C} (channels) values")
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch number used (with ``seed``) by the next iteration."""
        self.epoch = int(epoch)

    def _generators(self, epoch: int) -> tuple[torch.Generator, torch.Generator]:
        s = _epoch_seed(self.seed, epoch)
        g_cpu = torch.Generator().manual_seed(s)
        g_dev = g_cpu if self.device.type == "cpu" else torch.Generator(device=self.device).manual_seed(s + 1)
        return g_cpu, g_dev

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _arange(self) -> torch.Tensor:
        """``arange(n)`` on the device, made once (evaluation loaders do not shuffle)."""
        if getattr(self, "_order", None) is None:
            self._order = torch.arange(len(self.labels), device=self.device)
        return self._order

    def _corrupt(self, x: torch.Tensor, noise: GaussianNoiseCorruption) -> torch.Tensor:
        if x.ndim == 4:
            return noise(x)
        # the corruption reads a 4-D batch; [B, C, L] as [B, C*L, 1, 1] draws the same numbers in the same order
        return noise(x.reshape(len(x), -1, 1, 1)).reshape(x.shape)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        g_cpu, g_dev = self._generators(epoch)
        n = len(self.labels)
        # one epoch's random choices, drawn on the CPU generator and copied once (no transfer per batch);
        # on CUDA through pinned memory without blocking: a copy from pageable memory would make the host
        # wait for every kernel queued before it (the end of the training epoch, before evaluation starts)
        order = torch.randperm(n, generator=g_cpu) if self.shuffle else None
        if self.augment:
            offsets = self._to_device(torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g_cpu))
            flips = self._to_device(torch.rand(n, generator=g_cpu) < 0.5)
        order = self._to_device(order) if order is not None else self._arange()
        noise = GaussianNoiseCorruption(self.noise_std, g_dev) if self.noise_std > 0 else None
        scale = 1.0 / 255.0 if self.images.dtype == torch.uint8 else 1.0
        for k in range(len(self)):
            sl = slice(k * self.batch_size, (k + 1) * self.batch_size)
            idx = order[sl]
            x = self.images[idx]
            if self.augment:
                x = crop_flip(x, offsets[sl], flips[sl], self.padding)
            x = x.to(torch.float32)
            if scale != 1.0:
                x = x * scale
            if self.extra_augment is not None:
                x = self.extra_augment(x, g_dev)
            if self.mean is not None:
                x = normalize(x, self.mean, self.std)
            if noise is not None:
                x = self._corrupt(x, noise)
            yield x, self.labels[idx]
