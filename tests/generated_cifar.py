"""A generated stand-in for CIFAR-10, written in the two on-disk layouts stabkit.data reads (book/methods.md,
"Tasks"): torchvision's pickle batches (``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``)
and the JPEG class-folder archive of this project (``cifar10-jpeg.tar.gz`` holding
``cifar10-jpeg/{train,test}/<class>/NNNN.jpg``).

The images are not CIFAR-10: each class is a colour and a shape (disc, square, stripes...) at a jittered
place on a smooth background, so that a net learns something in one epoch and a JPEG of it stays close to
the pixels. Tests that need what real photographs have (class means, natural-image statistics) must not run
on them (tests/conftest.py tells them apart: ``real_cifar10``).
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: Files the generator leaves in its folder; a copy of this name marks the data as generated.
MARKER = "GENERATED-NOT-CIFAR10.txt"


def generated_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 [10 * n_per_class, 3, 32, 32], int64 [10 * n_per_class])``, class-major order.

    Class ``c`` has its own colour, shape and position; each image jitters them and adds smooth noise."""
    if not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}")
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64) / 31.0
    hues = np.array([[0.9, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.3, 0.9], [0.9, 0.8, 0.1], [0.8, 0.2, 0.8],
                     [0.1, 0.8, 0.8], [0.95, 0.5, 0.1], [0.5, 0.5, 0.5], [0.1, 0.1, 0.4], [0.6, 0.3, 0.1]])
    xs, ys = [], []
    for c in range(10):
        for _ in range(n_per_class):
            cx, cy = 0.3 + 0.4 * ((c % 3) / 2) + g.normal(0, 0.06), 0.3 + 0.4 * ((c // 3 % 3) / 2) + g.normal(0, 0.06)
            r = 0.18 + g.normal(0, 0.02)
            if c % 4 == 0:    # disc
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
            elif c % 4 == 1:  # square
                mask = (abs(xx - cx) < r) & (abs(yy - cy) < r)
            elif c % 4 == 2:  # stripes, orientation by class
                mask = np.sin((xx * np.cos(c) + yy * np.sin(c)) * 25 + g.uniform(0, 6)) > 0.3
            else:             # ring
                d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
                mask = (d < r) & (d > r / 2)
            bg = 0.35 + 0.15 * np.sin(3 * xx * g.uniform(0.5, 2) + 3 * yy * g.uniform(0.5, 2) + g.uniform(0, 6))
            img = np.repeat(bg[None], 3, axis=0)
            img = np.where(mask[None], hues[c][:, None, None] + g.normal(0, 0.05, (3, 1, 1)), img)
            img = img + g.normal(0, 0.03, img.shape)
            xs.append(np.clip(img * 255, 0, 255).round().astype(np.uint8))
            ys.append(c)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def write_pickles(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> Path:
    """torchvision's ``cifar-10-batches-py`` in ``folder`` (created): the training split dealt over 5 batches
    (shuffled, as the original), the test split in ``test_batch``. Returns the ``cifar-10-batches-py`` path."""
    out = Path(folder) / "cifar-10-batches-py"
    out.mkdir(parents=True)
    x, y = train
    order = np.random.default_rng(0).permutation(len(y))
    for i, part in enumerate(np.array_split(order, 5), start=1):
        _dump(out / f"data_batch_{i}", f"training batch {i} of 5", x[part], y[part])
    _dump(out / "test_batch", "testing batch 1 of 1", *test)
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CLASSES), "num_cases_per_batch": len(order) // 5, "num_vis": 3072}, f,
                    protocol=2)
    return out


def _dump(path: Path, label: str, x: np.ndarray, y: np.ndarray) -> None:
    with open(path, "wb") as f:  # protocol 2 and these keys: what the original (Python 2) batches hold
        pickle.dump({"batch_label": label, "labels": [int(v) for v in y], "data": x.reshape(len(x), -1),
                     "filenames": [f"generated_{k:05d}.png" for k in range(len(x))]}, f, protocol=2)


def write_jpeg_tar(path: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                   quality: int = 90) -> Path:
    """A ``.tar.gz`` of ``cifar10-jpeg/{train,test}/<class>/NNNN.jpg`` (the layout of the shared JPEG copy)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for split, (x, y) in (("train", train), ("test", test)):
            counts = [0] * 10
            for img, label in zip(x, y):
                buf = io.BytesIO()
                Image.fromarray(img.transpose(1, 2, 0)).save(buf, format="JPEG", quality=quality)
                info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{CLASSES[label]}/{counts[label]:04d}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tf.addfile(info, buf)
                counts[label] += 1
    return path


def write_generated_cifar10(folder: Path, *, n_train_per_class: int = 100, n_test_per_class: int = 30,
                            seed: int = 0) -> dict[str, Path]:
    """Both layouts of one generated data set in ``folder``: ``{"jpeg": .../cifar10-jpeg.tar.gz,
    "pickle": .../pickles/cifar-10-batches-py}``, plus a :data:`MARKER` file saying what they are.

    The defaults cover the tiny scale of every sweep (``ptr`` up to 256, ``test_size`` up to 100) with room."""
    folder = Path(folder)
    train = generated_images(n_train_per_class, seed)
    test = generated_images(n_test_per_class, seed + 1)
    jpeg = write_jpeg_tar(folder / "jpeg" / "cifar10-jpeg.tar.gz", train, test)
    pickles = write_pickles(folder / "pickles", train, test)
    (folder / MARKER).write_text("Generated images in CIFAR-10's on-disk layouts for stabkit's tests; not CIFAR-10.\n")
    return {"jpeg": jpeg, "pickle": pickles}
