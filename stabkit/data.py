"""Data: CIFAR-10 (any common layout), an on-device loader, and the scale-detection tasks.

CIFAR-10 (methods section 4)
    :func:`cifar10_tensors` returns the whole split as ``uint8 [N, 3, 32, 32]`` images and ``int64 [N]``
    labels from any of these layouts, found under ``root``:

    - torchvision's pickles ``cifar-10-batches-py/{data_batch_1..5, test_batch}`` (``root`` may be that
      folder or its parent); ``download=True`` fetches them through torchvision when nothing is found;
    - class folders ``<root>/{train,test}/<class>/*.png|jpg`` or nested one level deeper
      (``<root>/cifar10-jpeg/train/...``);
    - a ``.tar.gz`` / ``.tgz`` / ``.tar`` archive of either (``root`` may be the archive or a folder holding
      it). Archives are read once, streaming, and the decoded split is cached as ``.npz`` under
      :func:`cache_dir` (written to a temporary file and renamed: atomic, safe with concurrent runs);
      decoded class folders are cached the same way. Pickles are read directly (fast).

    ``root=None`` searches ``$STABKIT_DATA`` (a folder or an archive), then ``~/.cache/stabkit/data``
    (``$STABKIT_CACHE/data`` when set). Labels follow CIFAR-10's canonical class order :data:`CLASSES`.
    :func:`cifar10` wraps a split as a ``Dataset`` with the paper's augmentation, normalisation and noise.

:class:`DeviceLoader`
    Keeps a whole data set as tensors on the device and does crop (pad 4) + flip, normalisation and the
    Fig. 1 noise corruption there, vectorised, deterministic given ``seed`` (and the epoch).

Scale detection (methods section 4)
    :func:`twopoints_pairs`, :class:`TwoPoints`, :func:`twopoints_probes` (2-D, d x d images with two active
    pixels) and :class:`ScaleDetection1D`, :func:`scale1d_probes` (1-D, appendix).
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import re
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "DataNotFoundError", "PairTask", "cache_dir", "data_roots",
    "shared_data_dir",
    "cifar10", "cifar10_tensors", "CIFAR10", "DeviceLoader", "crop_flip",
    "twopoints_pairs", "twopoints_images", "TwoPoints", "twopoints_probes",
    "scale1d_pairs", "scale1d_images", "ScaleDetection1D", "scale1d_probes",
]

CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                            "dog", "frog", "horse", "ship", "truck")
"""CIFAR-10 class names in canonical label order (0..9)."""
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
"""Per-channel mean used for normalisation (images scaled to [0, 1])."""
CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
"""Per-channel std used for normalisation (the values of the paper's code)."""

SHUFFLE_SEED = 123456789
"""Seed of the generator shuffling each class of the scale-detection tasks (fixed, as in the paper)."""

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
_PICKLE_FOLDER = "cifar-10-batches-py"
_PICKLE_FILES = {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]}
_CACHE_VERSION = "1"


class DataNotFoundError(FileNotFoundError, ValueError):
    """No data set was found; the message says where it looked and how to get the data."""


# ----------------------------------------------------------------------------------------------------
# Locations
# ----------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Cache folder of stabkit: ``$STABKIT_CACHE`` if set, else ``~/.cache/stabkit``."""
    env = os.environ.get("STABKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stabkit"


def shared_data_dir() -> Path | None:
    """``shared/data`` beside a source checkout of stabkit (this project's offline workplace keeps a JPEG copy
    of CIFAR-10 there), or None when stabkit is not run from a checkout or the folder does not exist."""
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "pyproject.toml").is_file():
        return None
    shared = checkout.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def data_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """Where :func:`cifar10_tensors` looks: ``[root]`` if given, else ``$STABKIT_DATA`` (if set), then
    ``cache_dir()/data``, then :func:`shared_data_dir` (if it exists)."""
    if root is not None:
        return [Path(root).expanduser()]
    roots = []
    env = os.environ.get("STABKIT_DATA")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(cache_dir() / "data")
    shared = shared_data_dir()
    if shared is not None:
        roots.append(shared)
    return roots


def _is_archive(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _is_pickle_folder(p: Path) -> bool:
    return p.is_dir() and ((p / "test_batch").is_file() or (p / "data_batch_1").is_file())


def _is_class_folders(p: Path) -> bool:
    for split in ("train", "test"):
        s = p / split
        if s.is_dir() and any((s / c).is_dir() for c in CLASSES):
            return True
    return False


def _folder_layout(p: Path) -> tuple[str, Path] | None:
    """The layout held by folder ``p`` itself: pickles (also in its ``cifar-10-batches-py``) or class folders."""
    for candidate in (p, p / _PICKLE_FOLDER):
        if _is_pickle_folder(candidate):
            return "pickle", candidate
    return ("folders", p) if _is_class_folders(p) else None


def _locate(root: Path) -> tuple[str, Path] | None:
    """``(kind, path)`` with kind in {"pickle", "folders", "archive"} for the first layout under root."""
    if root.is_file():
        return ("archive", root) if _is_archive(root) else None
    if not root.is_dir():
        return None
    children = sorted(c for c in root.iterdir() if c.is_dir() and not c.name.startswith("."))
    for folder in [root] + children:  # the root, then one level deeper
        found = _folder_layout(folder)
        if found is not None:
            return found
    archives = sorted((a for a in root.iterdir() if _is_archive(a)),
                      key=lambda a: ("cifar" not in a.name.lower(), a.name))
    if archives:
        return "archive", archives[0]
    return None


def _not_found(roots: Sequence[Path], train: bool, detail: str = "") -> DataNotFoundError:
    looked = "\n".join(f"  - {r} ({'exists' if r.exists() else 'does not exist'})" for r in roots)
    target = roots[0] if roots else cache_dir() / "data"
    return DataNotFoundError(
        f"CIFAR-10 ({'train' if train else 'test'} split) not found{': ' + detail if detail else ''}.\n"
        f"Looked in:\n{looked}\n"
        "for torchvision's 'cifar-10-batches-py/' pickles, class folders '{train,test}/<class>/*.png|jpg' "
        "(also one level deeper), or a .tar.gz/.tgz/.tar archive of either.\n"
        "To get the data: set the environment variable STABKIT_DATA (or pass root=...) to such a folder "
        "or archive, e.g. STABKIT_DATA=/path/to/cifar10-jpeg.tar.gz; or download the original through "
        f"torchvision with cifar10(..., download=True) / cifar10_tensors(..., download=True) "
        f"(needs internet; saved under {target}).")


# ----------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------
def _tv_decode() -> Callable | None:
    """torchvision's image decoder (libjpeg-turbo/libpng: about 3x faster than PIL, identical pixels), or
    None where torchvision no longer ships it (deprecated since 0.29 in favour of TorchCodec)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchvision.io import ImageReadMode, decode_image
    except Exception:
        return None

    def decode(raw: bytes) -> np.ndarray:
        return decode_image(torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy()),
                            mode=ImageReadMode.RGB).numpy()
    return decode


def _decode_image(raw: bytes, name: str, tv_decode: Callable | None = None) -> np.ndarray:
    """``uint8 [3, 32, 32]`` RGB from encoded bytes: ``tv_decode`` (see :func:`_tv_decode`) for JPEG and PNG
    when given, PIL otherwise and as a fallback."""
    arr = None
    if tv_decode is not None and name.lower().endswith((".jpg", ".jpeg", ".png")):
        try:
            arr = tv_decode(raw)
        except Exception:  # unusual file: fall back to PIL
            arr = None
    if arr is None:
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    if arr.shape != (3, 32, 32):
        raise ValueError(f"{name}: expected a 32x32 image, got {arr.shape[2]}x{arr.shape[1]}")
    return arr


def _unpickle_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    entry = pickle.loads(raw, encoding="latin1")  # torchvision's format (trusted local file)
    labels = entry.get("labels", entry.get("fine_labels"))
    if "data" not in entry or labels is None:
        raise ValueError(f"{name}: not a CIFAR-10 batch (keys {sorted(entry)})")
    x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(labels, dtype=np.int64)


def _label_of(class_name: str, where: str) -> int:
    try:
        return CLASSES.index(class_name)
    except ValueError:
        raise ValueError(f"{where}: unknown class folder {class_name!r}; expected CIFAR-10 class names "
                         f"{list(CLASSES)}") from None


def _stack(images: list, labels: list, names: list, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not images:
        raise ValueError(f"{what}: no images found")
    order = sorted(range(len(names)), key=lambda i: (labels[i], names[i]))
    x = np.stack([images[i] for i in order])
    y = np.asarray([labels[i] for i in order], dtype=np.int64)
    return x, y


def _read_pickles(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for f in _PICKLE_FILES[train]:
        p = folder / f
        if not p.is_file():
            raise DataNotFoundError(f"{p} is missing (torchvision's CIFAR-10 layout needs "
                                    f"{_PICKLE_FILES[train]} in {folder})")
        x, y = _unpickle_batch(p.read_bytes(), str(p))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _read_folders(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    split = folder / ("train" if train else "test")
    if not split.is_dir():
        raise DataNotFoundError(f"{split} does not exist (class-folder layout {folder}/{{train,test}}/<class>/)")
    images, labels, names = [], [], []
    tv_decode = _tv_decode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for cdir in sorted(p for p in split.iterdir() if p.is_dir()):
            label = _label_of(cdir.name, str(split))
            for f in sorted(cdir.iterdir()):
                if f.suffix.lower() in _IMAGE_SUFFIXES:
                    images.append(_decode_image(f.read_bytes(), str(f), tv_decode))
                    labels.append(label)
                    names.append(f.name)
    return _stack(images, labels, names, str(split))


_MEMBER_IMAGE = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+)$")
_MEMBER_PICKLE = re.compile(r"(?:^|/)(data_batch_[1-5]|test_batch)$")


def _read_archive(path: Path) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
    """Stream once through a tar archive, decoding both splits (class folders or pickles).

    Returns ``{True: (x, y) of the training split, False: (x, y) of the test split}`` (a split absent from
    the archive is absent from the dict).
    """
    images: dict[bool, list] = {True: [], False: []}
    labels: dict[bool, list] = {True: [], False: []}
    names: dict[bool, list] = {True: [], False: []}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    tv_decode = _tv_decode()
    with tarfile.open(path, "r:*") as tf, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for m in tf:
            if not m.isfile():
                continue
            name = m.name.replace("\\", "/")
            if name.rsplit("/", 1)[-1].startswith("."):
                continue
            mi = _MEMBER_IMAGE.search(name)
            if mi and mi.group(3).lower().endswith(_IMAGE_SUFFIXES):
                train = mi.group(1) == "train"
                images[train].append(_decode_image(tf.extractfile(m).read(), f"{path}:{name}", tv_decode))
                labels[train].append(_label_of(mi.group(2), f"{path}:{name}"))
                names[train].append(mi.group(3))
                continue
            mp = _MEMBER_PICKLE.search(name)
            if mp:
                batches[mp.group(1)] = _unpickle_batch(tf.extractfile(m).read(), f"{path}:{name}")
    out: dict[bool, tuple[np.ndarray, np.ndarray]] = {}
    for train in (True, False):
        files = _PICKLE_FILES[train]
        if any(f in batches for f in files):
            missing = [f for f in files if f not in batches]
            if missing:
                raise ValueError(f"{path}: CIFAR-10 pickles {missing} missing from the archive")
            xs, ys = zip(*(batches[f] for f in files))
            out[train] = np.concatenate(xs), np.concatenate(ys)
        elif images[train]:
            out[train] = _stack(images[train], labels[train], names[train],
                                f"{path} ({'train' if train else 'test'})")
    return out


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


def _download(roots: Sequence[Path], train: bool) -> Path:
    import torchvision

    target = roots[0]
    if target.suffix or target.is_file():  # an archive path: download next to it
        target = target.parent
    target.mkdir(parents=True, exist_ok=True)
    torchvision.datasets.CIFAR10(root=str(target), train=train, download=True)
    return target


def cifar10_tensors(root: str | os.PathLike | None = None, train: bool = True, *,
                    download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole CIFAR-10 split as tensors.

    Args:
        root: folder or archive holding one of the supported layouts (see the module docstring);
            None: ``$STABKIT_DATA``, then ``~/.cache/stabkit/data``.
        train: training split (50,000 images) or test split (10,000).
        download: fetch torchvision's original into the first searched folder if nothing is found.

    Returns:
        ``(images, labels)``: ``uint8 [N, 3, 32, 32]`` (RGB, 0..255) and ``int64 [N]`` in ``0..9``
        (:data:`CLASSES` order). Class folders are ordered by class then file name; pickles keep their
        order. Archives and class folders are decoded once and cached (``cache_dir()/cifar10/*.npz``).

    Raises:
        DataNotFoundError: nothing found (it is both a ``FileNotFoundError`` and a ``ValueError``); the
            message says where it looked and how to get the data.
    """
    if not isinstance(train, bool):
        raise ValueError(f"train must be True or False, got {train!r}")
    roots = data_roots(root)
    found = None
    for r in roots:
        found = _locate(r)
        if found is not None:
            break
    if found is None:
        if not download:
            raise _not_found(roots, train)
        found = _locate(_download(roots, train))
        if found is None:
            raise _not_found(roots, train, "the torchvision download left no readable data")
    kind, path = found
    if kind == "pickle":
        x, y = _read_pickles(path, train)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))
    key = _cache_key(kind, path)

    def cache_file(split_train: bool) -> Path:
        return cache_dir() / "cifar10" / f"{path.name}-{key}-{'train' if split_train else 'test'}.npz"

    x = y = None
    if cache_file(train).is_file():
        try:
            with np.load(cache_file(train)) as z:
                x, y = z["x"], z["y"]
        except Exception:  # a damaged cache is rebuilt
            x = y = None
    if x is None:
        if kind == "archive":  # one pass decodes (and caches) both splits
            splits = _read_archive(path)
            if train not in splits:
                raise _not_found(roots, train, f"{path} holds no {'train' if train else 'test'} split (expected "
                                 f"members '.../{'train' if train else 'test'}/<class>/*.png|jpg' or "
                                 f"'.../{_PICKLE_FOLDER}/{_PICKLE_FILES[train][0]}')")
        else:
            splits = {train: _read_folders(path, train)}
        for split_train, (xs, ys) in splits.items():
            try:
                _save_npz_atomic(cache_file(split_train), x=xs, y=ys)
            except OSError:  # read-only cache: still return the data
                pass
        x, y = splits[train]
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))


def _gaussian_corruption(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``x + std * z / sqrt(numel per sample)``, ``z ~ N(0, I)`` (Fig. 1 corruption); ``x`` is ``[B, ...]``."""
    if std == 0:
        return x
    d = x[0].numel()
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + (std / math.sqrt(d)) * z


class CIFAR10(torch.utils.data.Dataset):
    """CIFAR-10 split as a map-style ``Dataset`` yielding ``(x, label)``.

    Default pipeline (``transform=None``): training split ``RandomCrop(32, padding=4)`` + horizontal flip,
    then ``ToTensor`` and normalisation with :data:`CIFAR10_MEAN` / :data:`CIFAR10_STD`; test split only
    ``ToTensor`` + normalisation (``augment`` overrides the split's choice). A user ``transform`` receives
    a PIL image (torchvision convention) and replaces that pipeline. When ``noise_std > 0`` every load adds
    fresh noise ``noise_std * z / sqrt(C*H*W)`` to the (tensor) output, after normalisation.

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
            x = _gaussian_corruption(x[None], self.noise_std)[0]
        return x, int(self.labels[i])


def cifar10(root: str | os.PathLike | None = None, train: bool = True, transform: Callable | None = None,
            download: bool = False, noise_std: float = 0.0, augment: bool | None = None) -> CIFAR10:
    """CIFAR-10 split as a ``Dataset`` (see :class:`CIFAR10`), from any layout :func:`cifar10_tensors` reads.

    ``noise_std`` is the Fig. 1 corruption (paper values 0, 0.01, 0.1, 1, 10, 30, 100), drawn afresh at
    every load, on training and test images alike. For fast training prefer :class:`DeviceLoader` on
    :func:`cifar10_tensors`.
    """
    x, y = cifar10_tensors(root, train, download=download)
    return CIFAR10(x, y, train=train, transform=transform, noise_std=noise_std, augment=augment)


# ----------------------------------------------------------------------------------------------------
# DeviceLoader
# ----------------------------------------------------------------------------------------------------
def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(1, np.uint64)[0]
               & 0x7FFFFFFFFFFFFFFF)


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Random-crop-with-padding and horizontal flip of a batch in one gather, no per-image Python work.

    Args:
        x: ``[B, C, H, W]`` (any dtype; padding value 0).
        offsets: ``int64 [B, 2]`` top-left corner (row, col) of each crop in the padded image, ``0..2p``.
        flips: ``bool [B]``: flip that image left-right after cropping.
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
        device: where the data live and batches are made.
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
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if augment and images.ndim != 4:
            raise ValueError(f"augment=True needs images [N, C, H, W], got shape {tuple(images.shape)}")
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be an int >= 0, got {padding!r}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together (or both None)")
        if extra_augment is not None and not callable(extra_augment):
            raise ValueError(f"extra_augment must be a callable fn(x, generator) -> x, got {extra_augment!r}")
        if not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.augment = batch_size, bool(shuffle), bool(augment)
        self.noise_std, self.seed, self.drop_last = float(noise_std), int(seed), bool(drop_last)
        self.extra_augment, self.padding = extra_augment, padding
        shape = (1, -1) + (1,) * (images.ndim - 2)
        C = images.shape[1]
        self.mean = self.std = None
        if mean is not None:
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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        g_cpu, g_dev = self._generators(epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=g_cpu) if self.shuffle else torch.arange(n)
        if self.augment:
            offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=g_cpu)
            flips = torch.rand(n, generator=g_cpu) < 0.5
        order = order.to(self.device)
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
                x = (x - self.mean) / self.std
            if self.noise_std > 0:
                x = _gaussian_corruption(x, self.noise_std, g_dev)
            yield x, self.labels[idx]


# ----------------------------------------------------------------------------------------------------
# Scale detection: shared split protocol
# ----------------------------------------------------------------------------------------------------
def _check_int(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return int(value)


def _split(neg: torch.Tensor, pos: torch.Tensor, ptr: int, train: bool, seed: int, testsize: int | None,
           task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Section-4 protocol. Each class is shuffled by one generator seeded :data:`SHUFFLE_SEED` (class 0
    first, then class 1); the test set is the last ``testsize/2`` samples of each class (class 0 first);
    the training pool is the rest of each class truncated to the smaller of the two; the training set is
    ``ptr`` samples of the pool drawn without replacement by a generator seeded ``seed``.

    Returns ``(items, labels)`` with labels 0 for ``neg`` and 1 for ``pos``.
    """
    g = torch.Generator().manual_seed(SHUFFLE_SEED)
    neg = neg[torch.randperm(len(neg), generator=g)]
    pos = pos[torch.randperm(len(pos), generator=g)]
    half = testsize // 2
    n_min = min(len(neg), len(pos))
    if half < 1 or half > n_min:
        raise ValueError(f"{task}: testsize must be between 2 and {2 * n_min} (the smaller class has {n_min} "
                         f"samples), got {testsize} (default 4*ptr; lower ptr or pass testsize)")
    if not train:
        items = torch.cat([neg[len(neg) - half:], pos[len(pos) - half:]])
        labels = torch.cat([torch.zeros(half, dtype=torch.long), torch.ones(half, dtype=torch.long)])
        return items, labels
    n_pool = min(len(neg), len(pos)) - half
    if ptr > 2 * n_pool:
        raise ValueError(f"{task}: ptr={ptr} is larger than the balanced training pool ({2 * n_pool} samples "
                         f"after setting {2 * half} aside for the test set); lower ptr or testsize")
    pool = torch.cat([neg[:n_pool], pos[:n_pool]])
    labels = torch.cat([torch.zeros(n_pool, dtype=torch.long), torch.ones(n_pool, dtype=torch.long)])
    idx = torch.randperm(2 * n_pool, generator=torch.Generator().manual_seed(seed))[:ptr]
    return pool[idx], labels[idx]


def _subset_probes(positions: torch.Tensor, P: int, generator: torch.Generator) -> torch.Tensor:
    P = _check_int("P", P)
    if P >= len(positions):
        return positions
    return positions[torch.randperm(len(positions), generator=generator)[:P]]


def _matched_noise(x: torch.Tensor, x_tau: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    from .transforms import noisy_batch  # lazy: stabkit.transforms may import heavier modules

    return noisy_batch(x, x_tau, generator=generator)


# ----------------------------------------------------------------------------------------------------
# 2-D scale detection ("twopoints")
# ----------------------------------------------------------------------------------------------------
_NORMS = ("L2", "Linf")


def _norm_name(norm: str) -> str:
    key = str(norm).lower()
    for n in _NORMS:
        if key == n.lower():
            return n
    if key in ("inf", "max", "chebyshev"):
        return "Linf"
    raise ValueError(f"norm must be one of {list(_NORMS)}, got {norm!r}")


def twopoints_pairs(d: int = 28, xi: float = 14.0, gap: float = 2.0, norm: str = "L2",
                    pbc: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """All kept pairs of the 2-D scale-detection task, before balancing and shuffling.

    Candidate positions: every ``(row, col)`` of the ``d x d`` grid with ``row != col`` (the diagonal is
    never used, as in the original), in row-major order. Samples: every unordered pair of distinct
    candidates (``itertools.combinations`` order). Distance: componentwise absolute difference (with
    ``pbc``, ``min(delta, d - delta)``), then its L2 or Linf norm. "Far" if ``dist >= xi + gap/2``,
    "close" if ``dist < xi - gap/2``; pairs in between are dropped.

    Returns:
        ``(far, close)``: int64 ``[n_far, 2, 2]`` and ``[n_close, 2, 2]``: (row, col) of the two points.
    """
    d = _check_int("d", d, 2)
    norm = _norm_name(norm)
    if not gap >= 0:
        raise ValueError(f"gap must be >= 0, got {gap!r}")
    r, c = torch.meshgrid(torch.arange(d), torch.arange(d), indexing="ij")
    keep = r != c
    cand = torch.stack([r[keep], c[keep]], dim=1)                       # [M, 2]
    i, j = torch.triu_indices(len(cand), len(cand), offset=1)
    delta = (cand[i] - cand[j]).abs()
    if pbc:
        delta = torch.minimum(delta, d - delta)
    delta = delta.double()
    dist = delta.norm(dim=1) if norm == "L2" else delta.max(dim=1).values
    pairs = torch.stack([cand[i], cand[j]], dim=1)                      # [n, 2, 2]
    far = pairs[dist >= xi + gap / 2]
    close = pairs[dist < xi - gap / 2]
    return far, close


def twopoints_images(positions: torch.Tensor, d: int) -> torch.Tensor:
    """Images ``float32 [N, 1, d, d]``: zeros with the pixels at ``positions [N, k, 2]`` (row, col) set to
    ``d^2/2`` (two points: mean pixel value 1; coinciding points give one active pixel)."""
    positions = torch.as_tensor(positions, dtype=torch.long)
    n, k = positions.shape[:2]
    x = torch.zeros(n, 1, d, d)
    b = torch.arange(n)[:, None].expand(n, k)
    x[b, 0, positions[..., 0], positions[..., 1]] = d * d / 2
    return x


class PairTask(torch.utils.data.Dataset):
    """Common access of the two-active-pixel tasks: ``.x``, ``.y`` (labels 0/1) and ``.positions``."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def targets(self) -> torch.Tensor:
        return self.y

    @property
    def y_hinge(self) -> torch.Tensor:
        """Hinge targets ``float32``: +1 for label 1, -1 for label 0."""
        return self.y.float() * 2 - 1

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class TwoPoints(PairTask):
    """2-D scale detection: is the distance of the two active pixels of a ``d x d`` image small or large?

    Built on :func:`twopoints_pairs` with the split protocol of section 4: each class shuffled by a
    generator seeded 123456789 (far first, then close); test set = the last ``testsize/2`` pairs of each
    class (``testsize = 4*ptr`` by default); training set = ``ptr`` pairs drawn (seeded ``seed``) from the
    rest, truncated to balanced classes. The test set does not depend on ``seed``.

    Attributes:
        x: ``float32 [N, 1, d, d]``, two pixels at ``d^2/2`` (mean pixel value 1).
        y: ``int64 [N]``: 0 far (hinge target -1), 1 close (hinge target +1); ``y_hinge`` = ``2y - 1``.
        positions: ``int64 [N, 2, 2]``: (row, col) of each active pixel.
    """

    def __init__(self, d: int = 28, xi: float = 14.0, gap: float = 2.0, norm: str = "L2", pbc: bool = False,
                 ptr: int = 1024, train: bool = True, seed: int = 0, testsize: int | None = None):
        self.ptr = _check_int("ptr", ptr)
        self.d, self.xi, self.gap, self.norm, self.pbc = int(d), float(xi), float(gap), _norm_name(norm), bool(pbc)
        self.train, self.seed = bool(train), int(seed)
        self.testsize = 4 * self.ptr if testsize is None else _check_int("testsize", testsize, 2)
        far, close = twopoints_pairs(d, xi, gap, norm, pbc)
        self.positions, self.y = _split(far, close, self.ptr, self.train, self.seed, self.testsize, "TwoPoints")
        self.x = twopoints_images(self.positions, self.d)


def twopoints_probes(positions: torch.Tensor, d: int, P: int = 500, generator: torch.Generator | None = None,
                     *, return_positions: bool = False):
    """Probe set of the 2-D scale-detection task: clean images, one-pixel moves, matched noise.

    ``P`` pairs are drawn without replacement from ``positions [N, 2, 2]`` (all of them, in order, if
    ``P >= N``). Each of the two active pixels moves by one pixel in one of the 8 directions: a Gaussian
    2-vector ``v`` is normalised and rounded componentwise (``round(v/|v|)``: never zero, one of the 8
    neighbours, each 45-degree sector of directions), and the result is clipped to the image (a pixel on
    the border may then stay). ``x_eta = stabkit.transforms.noisy_batch(x, x_tau)``: Gaussian noise with
    ``||x_eta - x|| = ||x_tau - x||`` per image.

    Args:
        positions: ``int [N, 2, 2]`` (row, col) of the active pixels (e.g. ``TwoPoints(...).positions``).
        d: image side.
        P: number of probes.
        generator: CPU generator for every draw (default: seeded 0).
        return_positions: also return the positions before and after the move.

    Returns:
        ``(x, x_tau, x_eta)``, each ``float32 [P, 1, d, d]`` (``+ (pos, moved)`` ``int64 [P, 2, 2]``).
    """
    d = _check_int("d", d, 2)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.ndim != 3 or positions.shape[1:] != (2, 2):
        raise ValueError(f"positions must be [N, 2, 2] (row, col of two points), got {tuple(positions.shape)}")
    pos = _subset_probes(positions, P, g)
    v = torch.randn(pos.shape, generator=g, dtype=torch.float64)
    step = torch.round(v / v.norm(dim=-1, keepdim=True)).long()
    moved = (pos + step).clamp(0, d - 1)
    x = twopoints_images(pos, d)
    x_tau = twopoints_images(moved, d)
    x_eta = _matched_noise(x, x_tau, g)
    return (x, x_tau, x_eta, pos, moved) if return_positions else (x, x_tau, x_eta)


# ----------------------------------------------------------------------------------------------------
# 1-D scale detection (appendix)
# ----------------------------------------------------------------------------------------------------
def scale1d_pairs(L: int = 128, xi: int = 32, gap: int = 2, task: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of the 1-D scale-detection tasks (before shuffling and balancing).

    Samples: every unordered pair ``i < j`` of positions ``0..L-1``. Task 1: periodic distance
    ``min(j-i, L-(j-i))``; label 1 (+1) if ``< xi - gap``, label 0 (-1) if ``>= xi + gap``, others dropped.
    Task 2: label 1 (+1) iff both points are in the same block ``[k xi, (k+1) xi)``, else 0 (-1).

    Returns:
        ``(neg, pos)``: int64 ``[n, 2]`` positions of the label-0 and label-1 pairs.
    """
    L = _check_int("L", L, 2)
    xi = _check_int("xi", xi, 1)
    if task not in (1, 2):
        raise ValueError(f"task must be 1 (distance) or 2 (same block), got {task!r}")
    i, j = torch.triu_indices(L, L, offset=1)
    pairs = torch.stack([i, j], dim=1)
    if task == 1:
        if not gap >= 0:
            raise ValueError(f"gap must be >= 0, got {gap!r}")
        dist = torch.minimum(j - i, L - (j - i))
        return pairs[dist >= xi + gap], pairs[dist < xi - gap]
    same = (i // xi) == (j // xi)
    return pairs[~same], pairs[same]


def scale1d_images(positions: torch.Tensor, L: int) -> torch.Tensor:
    """Signals ``float32 [N, 1, L]``: zeros with the points of ``positions [N, k]`` set to ``L/2`` (two
    points: mean value 1)."""
    positions = torch.as_tensor(positions, dtype=torch.long)
    n, k = positions.shape
    x = torch.zeros(n, 1, L)
    x[torch.arange(n)[:, None].expand(n, k), 0, positions] = L / 2
    return x


class ScaleDetection1D(PairTask):
    """1-D scale detection (appendix): two active points on a line of ``L`` pixels.

    Task 1: close (periodic distance ``< xi - gap``, label 1, hinge +1) against far (``>= xi + gap``,
    label 0, hinge -1). Task 2: both points in the same block of length ``xi`` (label 1) or not (0).
    Same split protocol as :class:`TwoPoints` (classes shuffled with seed 123456789, test = last
    ``testsize/2`` of each class, training = ``ptr`` samples of the balanced rest drawn with ``seed``).
    Default ``testsize``: ``4*ptr``, lowered when needed so that the balanced training pool keeps at least
    ``ptr`` samples (task 2 has only ``(L/xi) * xi(xi-1)/2`` positive pairs: 1984 for the defaults).

    Attributes: ``x float32 [N, 1, L]`` (points at ``L/2``), ``y int64``, ``positions int64 [N, 2]``,
    ``y_hinge``.
    """

    def __init__(self, L: int = 128, xi: int = 32, gap: int = 2, task: int = 1, ptr: int = 1024,
                 train: bool = True, seed: int = 0, testsize: int | None = None):
        self.ptr = _check_int("ptr", ptr)
        self.L, self.xi, self.gap, self.task = int(L), int(xi), gap, task
        self.train, self.seed = bool(train), int(seed)
        neg, pos = scale1d_pairs(L, xi, gap, task)
        if testsize is None:
            n_min = min(len(neg), len(pos))
            testsize = min(4 * self.ptr, 2 * (n_min - (self.ptr + 1) // 2))
            if testsize < 2:
                raise ValueError(f"ScaleDetection1D: ptr={ptr} is too large for L={L}, xi={xi}, task={task} "
                                 f"(the smaller class has {n_min} pairs)")
        self.testsize = _check_int("testsize", testsize, 2)
        self.positions, self.y = _split(neg, pos, self.ptr, self.train, self.seed, self.testsize,
                                        "ScaleDetection1D")
        self.x = scale1d_images(self.positions, self.L)


def scale1d_probes(positions, L: int | None = None, P: int = 500, generator: torch.Generator | None = None, *,
                   xi: int | None = None, task: int | None = None, return_positions: bool = False):
    """Probe set of the 1-D tasks: clean signals, +-1 pixel moves, matched noise.

    ``positions`` is ``int [N, 2]`` (then ``L`` and ``task``, and ``xi`` for task 2, are required) or a
    :class:`ScaleDetection1D` (then ``L``, ``xi`` and ``task`` default to its own). ``P`` samples are drawn
    without replacement (all if ``P >= N``). Each point moves by +1 or -1 (fair coin). Task 1: positions wrap around (periodic line). Task 2: a move that would leave the
    point's block (or the line) is rejected and the other direction taken, so the label never changes.
    ``x_eta = stabkit.transforms.noisy_batch(x, x_tau)`` (norm-matched Gaussian noise).

    Returns:
        ``(x, x_tau, x_eta)``, each ``float32 [P, 1, L]`` (``+ (pos, moved)`` ``int64 [P, 2]``).
    """
    if isinstance(positions, ScaleDetection1D):
        ds = positions
        positions = ds.positions
        L = ds.L if L is None else L
        xi = ds.xi if xi is None else xi
        task = ds.task if task is None else task
    if L is None or task is None:
        raise ValueError("L (signal length) and task (1 or 2) are required when positions is a tensor; "
                         "or pass the ScaleDetection1D data set itself as positions")
    L = _check_int("L", L, 2)
    if task not in (1, 2):
        raise ValueError(f"task must be 1 or 2, got {task!r}")
    if task == 2:
        if xi is None:
            raise ValueError("xi (block length) is required for task 2")
        xi = _check_int("xi", xi, 2)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.ndim != 2:
        raise ValueError(f"positions must be [N, k], got {tuple(positions.shape)}")
    pos = _subset_probes(positions, P, g)
    step = torch.randint(0, 2, pos.shape, generator=g) * 2 - 1
    if task == 1:
        moved = (pos + step) % L
    else:
        moved = pos + step
        bad = (moved < 0) | (moved >= L) | (torch.div(moved, xi, rounding_mode="floor") != pos // xi)
        moved = torch.where(bad, pos - step, moved)
    x = scale1d_images(pos, L)
    x_tau = scale1d_images(moved, L)
    x_eta = _matched_noise(x, x_tau, g)
    return (x, x_tau, x_eta, pos, moved) if return_positions else (x, x_tau, x_eta)
