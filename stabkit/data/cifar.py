"""CIFAR-10 as tensors and as a ``Dataset`` (``book/methods.md``, "Tasks").

:func:`~stabkit.data.cifar10_tensors` returns a whole split as ``uint8 [N, 3, 32, 32]`` images and ``int64 [N]``
labels from any layout :mod:`stabkit.data.cifar_files` finds and reads (torchvision's pickles, or class folders
unpacked or as a tar archive; ``download=True`` fetches the pickles through torchvision when nothing is found).
Decoded class folders and archives are cached as ``.npz`` under :func:`~stabkit.data.cache_dir` (written to a
temporary file and renamed: safe with concurrent runs). :func:`~stabkit.data.cifar10` wraps a split as a
``Dataset`` with the paper's augmentation, normalisation and noise.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..protocol import CIFAR10_MEAN, CIFAR10_STD
from ..transforms import GaussianNoiseCorruption
from .cifar_files import (CLASSES, PICKLE_FILES, PICKLE_FOLDER, cache_dir, cifar10_location, data_roots,
                          download_cifar10, locate, not_found_error, read_archive, read_folders, read_pickles)

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "cifar10_tensors", "CIFAR10", "cifar10"]

_CACHE_VERSION = "1"


def _cache_key(kind: str, path: Path) -> str:
    path = path.resolve()
    parts = [_CACHE_VERSION, kind, str(path)]
    if kind == "archive":
        st = path.stat()
        parts += [str(st.st_size), str(st.st_mtime_ns)]
    else:  # class folders: the class folders' entries (adding/removing files changes their mtime)
        for split in ("train", "test"):
            s = path / split
            if s.is_dir():
                for c in sorted(s.iterdir()):
                    st = c.stat()
                    parts += [f"{split}/{c.name}", str(st.st_mtime_ns)]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _save_npz_atomic(target: Path, **arrays: np.ndarray) -> None:
    # np.savez writes to an open file: stabkit.atomic's writers take bytes or text, so write and rename here
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cifar10_tensors(root: str | os.PathLike | None = None, train: bool = True, *,
                    download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole CIFAR-10 split as tensors.

    Args:
        root: folder or archive holding one of the supported layouts (:mod:`stabkit.data.cifar_files`);
            None: ``$STABKIT_DATA``, then ``~/.cache/stabkit/data``, then :func:`~stabkit.data.shared_data_dir`.
        train: training split (50,000 images) or test split (10,000).
        download: fetch torchvision's original into the first searched folder if nothing is found.

    Returns:
        ``(images, labels)``: ``uint8 [N, 3, 32, 32]`` (RGB, 0..255) and ``int64 [N]`` in ``0..9``
        (:data:`~stabkit.data.cifar_files.CLASSES` order). Class folders are ordered by class then file name;
        pickles keep their order. Archives and class folders are decoded once and cached
        (``cache_dir()/cifar10/*.npz``).

    Raises:
        DataNotFoundError: nothing found (it is both a ``FileNotFoundError`` and a ``ValueError``); the
            message says where it looked and how to get the data.
        ValueError: a damaged file (random bytes, truncated archive, garbage pickle, wrong array size,
            undecodable image); the message names the file.
    """
    if not isinstance(train, bool):
        raise ValueError(f"train must be True or False, got {train!r}")
    roots = data_roots(root)
    found = cifar10_location(root)
    if found is None:
        if not download:
            raise not_found_error(roots, train)
        found = locate(download_cifar10(roots, train))
        if found is None:
            raise not_found_error(roots, train, "the torchvision download left no readable data")
    kind, path = found
    if kind == "pickle":
        x, y = read_pickles(path, train)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))
    key = _cache_key(kind, path)

    def cache_file(split_train: bool) -> Path:
        return cache_dir() / "cifar10" / f"{path.name}-{key}-{'train' if split_train else 'test'}.npz"

    x = y = None
    if cache_file(train).is_file():
        try:
            with np.load(cache_file(train)) as z:  # allow_pickle=False: arrays only
                x, y = z["x"], z["y"]
        except Exception:  # a damaged cache is rebuilt
            x = y = None
    if x is None:
        if kind == "archive":  # one pass decodes (and caches) both splits
            splits = read_archive(path)
            if train not in splits:
                raise not_found_error(roots, train, f"{path} holds no {'train' if train else 'test'} split (expected "
                                      f"members '.../{'train' if train else 'test'}/<class>/*.png|jpg' or "
                                      f"'.../{PICKLE_FOLDER}/{PICKLE_FILES[train][0]}')")
        else:
            splits = {train: read_folders(path, train)}
        for split_train, (xs, ys) in splits.items():
            try:
                _save_npz_atomic(cache_file(split_train), x=xs, y=ys)
            except OSError:  # read-only cache: still return the data
                pass
        x, y = splits[train]
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))


# ----------------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------------
class CIFAR10(torch.utils.data.Dataset):
    """CIFAR-10 split as a map-style ``Dataset`` yielding ``(x, label)``.

    Default pipeline (``transform=None``): training split ``RandomCrop(32, padding=4)`` + horizontal flip,
    then ``ToTensor`` and normalisation with :data:`~stabkit.protocol.CIFAR10_MEAN` /
    :data:`~stabkit.protocol.CIFAR10_STD`; test split only
    ``ToTensor`` + normalisation (``augment`` overrides the split's choice). A user ``transform`` receives
    a PIL image (torchvision convention) and replaces that pipeline. When ``noise_std > 0`` every load adds
    fresh noise ``noise_std * z / sqrt(C*H*W)`` to the (tensor) output, after normalisation
    (:class:`stabkit.transforms.GaussianNoiseCorruption`, the Fig. 1 corruption).

    Attributes: ``images`` (uint8 ``[N, 3, 32, 32]``), ``labels``/``targets`` (int64 ``[N]``), ``classes``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, train: bool = True,
                 transform: Callable | None = None, noise_std: float = 0.0, augment: bool | None = None):
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.images, self.labels = images, labels
        self.train = train
        self.classes = list(CLASSES)
        self.noise_std = float(noise_std)
        self._noise = GaussianNoiseCorruption(self.noise_std)
        if transform is None:
            import torchvision.transforms as T

            steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if (
                train if augment is None else augment) else []
            transform = T.Compose(steps + [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
        self.transform = transform

    @property
    def targets(self) -> torch.Tensor:
        return self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.images[i].permute(1, 2, 0).numpy())
        x = self.transform(img)
        if self.noise_std > 0:
            if not isinstance(x, torch.Tensor):
                raise ValueError("noise_std > 0 needs a transform that returns a tensor")
            x = self._noise(x)
        return x, int(self.labels[i])


def cifar10(root: str | os.PathLike | None = None, train: bool = True, transform: Callable | None = None,
            download: bool = False, noise_std: float = 0.0, augment: bool | None = None) -> CIFAR10:
    """CIFAR-10 split as a ``Dataset`` (see :class:`CIFAR10`), from any layout :func:`cifar10_tensors` reads.

    ``noise_std`` is the Fig. 1 corruption (paper values 0, 0.01, 0.1, 1, 10, 30, 100), drawn afresh at
    every load, on training and test images alike. For fast training prefer
    :class:`~stabkit.data.DeviceLoader` on :func:`cifar10_tensors`.
    """
    x, y = cifar10_tensors(root, train, download=download)
    return CIFAR10(x, y, train=train, transform=transform, noise_std=noise_std, augment=augment)
