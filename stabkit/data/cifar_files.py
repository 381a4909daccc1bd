"""CIFAR-10 on disk (``book/methods.md``, "Tasks"): where the files are searched, the layouts they come in, how
each layout decodes, and the download through torchvision.

Two layouts, found under a root:

- torchvision's pickles ``cifar-10-batches-py/{data_batch_1..5, test_batch}`` (the root may be that folder or
  its parent; also the archive torchvision downloads, ``cifar-10-python.tar.gz``); :func:`download_cifar10`
  fetches them through torchvision. The pickles are read with a restricted unpickler that builds only dicts,
  lists, strings, bytes and numpy arrays: a pickle found on a data root cannot run code.
- class folders ``<root>/{train,test}/<class>/*.png|jpg`` (or one level deeper, ``<root>/cifar10-jpeg/train/...``),
  unpacked or as a ``.tar`` / ``.tar.gz`` / ``.tgz`` archive, read once, streaming.

``root=None`` searches ``$STABKIT_DATA`` (a folder or an archive), then ``~/.cache/stabkit/data``
(``$STABKIT_CACHE/data`` when set), then :func:`~stabkit.data.shared_data_dir` (:func:`~stabkit.data.data_roots`).
Labels follow CIFAR-10's canonical class order :data:`CLASSES`. Unreadable data raise a ``ValueError`` naming the
file. The split as tensors (decoded once, cached) and as a ``Dataset``: :mod:`stabkit.data.cifar`.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
import re
import tarfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CLASSES", "PICKLE_FOLDER", "PICKLE_FILES", "DataNotFoundError", "cache_dir", "shared_data_dir",
           "data_roots", "locate", "cifar10_location", "not_found_error", "read_pickles", "read_folders",
           "read_archive", "download_cifar10"]

CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                            "dog", "frog", "horse", "ship", "truck")
"""CIFAR-10 class names in canonical label order (0..9)."""

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
#: torchvision's folder of pickled batches, and the batch files of each split (``True``: training).
PICKLE_FOLDER = "cifar-10-batches-py"
PICKLE_FILES = {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]}
_PIXELS = 3 * 32 * 32


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
    checkout = Path(__file__).resolve().parents[2]  # stabkit/data/cifar_files.py -> the checkout
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
    for candidate in (p, p / PICKLE_FOLDER):
        if _is_pickle_folder(candidate):
            return "pickle", candidate
    return ("folders", p) if _is_class_folders(p) else None


def locate(root: Path) -> tuple[str, Path] | None:
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


def cifar10_location(root: str | os.PathLike | None = None) -> tuple[str, Path] | None:
    """Where :func:`cifar10_tensors` would read CIFAR-10 from, without reading it: ``(kind, path)`` with kind
    in {"pickle", "folders", "archive"}, or None when no searched root (:func:`data_roots`) holds a layout.
    Only names and folders are looked at (milliseconds): the data may still turn out damaged."""
    for r in data_roots(root):
        found = locate(r)
        if found is not None:
            return found
    return None


def not_found_error(roots: Sequence[Path], train: bool, detail: str = "") -> DataNotFoundError:
    """The error for a split found nowhere: where it looked (``roots``), what it looked for and how to get the data."""
    looked = "\n".join(f"  - {r} ({'exists' if r.exists() else 'does not exist'})" for r in roots)
    target = roots[0] if roots else cache_dir() / "data"
    return DataNotFoundError(
        f"CIFAR-10 ({'train' if train else 'test'} split) not found{': ' + detail if detail else ''}.\n"
        f"Looked in:\n{looked}\n"
        "for torchvision's 'cifar-10-batches-py/' pickles (or its cifar-10-python.tar.gz), or class folders "
        "'{train,test}/<class>/*.png|jpg' (also one level deeper) unpacked or as a .tar/.tar.gz/.tgz archive.\n"
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
    when given, PIL otherwise and as a fallback. ``ValueError`` naming ``name`` when it does not decode."""
    arr = None
    if tv_decode is not None:
        try:
            arr = tv_decode(raw)
        except Exception:  # unusual file: fall back to PIL
            arr = None
    if arr is None:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(raw)) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a damaged file
            raise ValueError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None
    if arr.shape != (3, 32, 32):
        raise ValueError(f"{name}: expected a 32x32 image, got {arr.shape[2]}x{arr.shape[1]}")
    return arr


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR-10 pickle needs: numpy's array and dtype reconstruction (under the module
    names of numpy 1 and 2), numpy scalars, and ``_codecs.encode`` (bytes in protocol-2 pickles)."""
    reconstruct = np.ndarray(0).__reduce__()[0]
    frombuffer = np.arange(1).__reduce_ex__(5)[0]
    scalar = np.int64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Refuses every global but :func:`_allowed_globals`: a pickle can then only build plain containers,
    strings, numbers and numpy arrays, never call arbitrary code."""

    allowed: dict[tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        obj = self.allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 pickle "
                                         f"(only dicts, lists, strings, bytes and numpy arrays)")
        return obj


def _unpickle_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 [n, 3, 32, 32], int64 [n])`` from one pickled batch of torchvision's format."""
    if not _CifarUnpickler.allowed:
        _CifarUnpickler.allowed = _allowed_globals()
    try:
        entry = _CifarUnpickler(io.BytesIO(raw), encoding="latin1").load()  # latin1: the Python 2 pickles
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ValueError(f"{name}: not a readable CIFAR-10 pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        keys = sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"{name}: not a CIFAR-10 batch (expected a dict with 'data' and 'labels', got {keys})")
    data, labels = entry["data"], entry["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.size % _PIXELS:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{name}: 'data' must be a uint8 array of n x {_PIXELS} pixels, got {what}")
    x = data.reshape(-1, 3, 32, 32)
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        y = np.zeros(0, dtype=object)
    if y.dtype != np.int64 or y.shape != (len(x),) or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise ValueError(f"{name}: 'labels' must be {len(x)} integers in 0..9 (one per image)")
    return x, y


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


def read_pickles(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 [N, 3, 32, 32], int64 [N])`` of a split from torchvision's pickle folder, in the files' order."""
    xs, ys = [], []
    for f in PICKLE_FILES[train]:
        p = folder / f
        if not p.is_file():
            raise DataNotFoundError(f"{p} is missing (torchvision's CIFAR-10 layout needs "
                                    f"{PICKLE_FILES[train]} in {folder})")
        x, y = _unpickle_batch(p.read_bytes(), str(p))
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _decode_many(items: Sequence[tuple[bytes, str]], tv_decode: Callable | None) -> list[np.ndarray]:
    """:func:`_decode_image` of every ``(raw, name)``, in order, in chunks on a thread pool (the decoders
    release the GIL in their C code; 60,000 JPEGs take ~11 s on one busy core)."""
    from concurrent.futures import ThreadPoolExecutor

    def chunk(part: Sequence[tuple[bytes, str]]) -> list[np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return [_decode_image(raw, name, tv_decode) for raw, name in part]
    workers = max(1, min(16, os.cpu_count() or 1))
    size = max(256, len(items) // (4 * workers) + 1)
    parts = [items[i:i + size] for i in range(0, len(items), size)]
    if workers == 1 or len(parts) == 1:
        return [a for part in parts for a in chunk(part)]
    with ThreadPoolExecutor(workers, thread_name_prefix="cifar-decode") as ex:
        return [a for done in ex.map(chunk, parts) for a in done]


def read_folders(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 [N, 3, 32, 32], int64 [N])`` of a split from unpacked class folders, ordered by class then file name."""
    split = folder / ("train" if train else "test")
    if not split.is_dir():
        raise DataNotFoundError(f"{split} does not exist (class-folder layout {folder}/{{train,test}}/<class>/)")
    raw, labels, names = [], [], []
    for cdir in sorted(p for p in split.iterdir() if p.is_dir()):
        label = _label_of(cdir.name, str(split))
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() in _IMAGE_SUFFIXES:
                raw.append((f.read_bytes(), str(f)))
                labels.append(label)
                names.append(f.name)
    return _stack(_decode_many(raw, _tv_decode()), labels, names, str(split))


_MEMBER_IMAGE = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+)$")
_MEMBER_PICKLE = re.compile(r"(?:^|/)(data_batch_[1-5]|test_batch)$")


def _scan_archive(path: Path, images: dict, labels: dict, names: dict, batches: dict) -> None:
    raw: dict[bool, list[tuple[bytes, str]]] = {True: [], False: []}  # decoded together, in parallel, below
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            name = m.name.replace("\\", "/")
            if name.rsplit("/", 1)[-1].startswith("."):
                continue
            mi = _MEMBER_IMAGE.search(name)
            if mi and mi.group(3).lower().endswith(_IMAGE_SUFFIXES):
                train = mi.group(1) == "train"
                raw[train].append((tf.extractfile(m).read(), f"{path}:{name}"))
                labels[train].append(_label_of(mi.group(2), f"{path}:{name}"))
                names[train].append(mi.group(3))
                continue
            mp = _MEMBER_PICKLE.search(name)
            if mp:
                batches[mp.group(1)] = _unpickle_batch(tf.extractfile(m).read(), f"{path}:{name}")
    tv_decode = _tv_decode()
    for train in (True, False):
        images[train].extend(_decode_many(raw[train], tv_decode))


def read_archive(path: Path) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
    """Stream once through a tar archive, decoding both splits (class folders, or torchvision's pickles).

    Returns ``{True: (x, y) of the training split, False: (x, y) of the test split}`` (a split absent from
    the archive is absent from the dict). ``ValueError`` naming the archive when it is damaged.
    """
    images: dict[bool, list] = {True: [], False: []}
    labels: dict[bool, list] = {True: [], False: []}
    names: dict[bool, list] = {True: [], False: []}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        _scan_archive(path, images, labels, names, batches)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:  # random bytes, truncated, bad gzip
        raise ValueError(f"{path}: not a readable tar archive, damaged or truncated "
                         f"({type(exc).__name__}: {exc})") from None
    out: dict[bool, tuple[np.ndarray, np.ndarray]] = {}
    for train in (True, False):
        files = PICKLE_FILES[train]
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


def download_cifar10(roots: Sequence[Path], train: bool) -> Path:
    """Fetch torchvision's original (its pickles) into the first of ``roots`` (beside it when it names an
    archive); returns the folder it went to. Needs internet."""
    import torchvision

    target = roots[0]
    if target.suffix or target.is_file():  # an archive path: download next to it
        target = target.parent
    target.mkdir(parents=True, exist_ok=True)
    torchvision.datasets.CIFAR10(root=str(target), train=train, download=True)
    return target
