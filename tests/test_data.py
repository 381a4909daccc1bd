"""Tests of stabkit.data.cifar and stabkit.data.cifar_files (book/methods.md, "Tasks") on generated data and, when
STABKIT_DATA names one, a real copy. The loader and the scale-detection tasks: test_loader.py, test_scale_detection.py."""
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from stabkit import data
from stabkit.data import cifar_files

@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own cache, no STABKIT_DATA and no shared/data folder beside the checkout."""
    monkeypatch.setenv("STABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STABKIT_DATA", raising=False)
    monkeypatch.setattr(cifar_files, "shared_data_dir", lambda: None)


# ------------------------------------------------------------------------------------ generated layouts
def _images(n, seed):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8), g.integers(0, 10, size=n).astype(np.int64)


def _write_pickles(folder: Path, protocol: int = pickle.DEFAULT_PROTOCOL):
    """torchvision's cifar-10-batches-py format: 5 training batches and a test batch."""
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _images(3, i)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", "labels": y.tolist(),
                         "data": x.reshape(len(x), -1), "filenames": [f"{k}.png" for k in range(len(x))]}, f,
                        protocol=protocol)
        xs.append(x)
        ys.append(y)
    xt, yt = _images(4, 99)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"labels": yt.tolist(), "data": xt.reshape(len(xt), -1)}, f, protocol=protocol)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.CLASSES)}, f)
    return (np.concatenate(xs), np.concatenate(ys)), (xt, yt)


def _write_folders(root: Path):
    """``root/{train,test}/<class>/*.png`` (lossless); returns the expected arrays in loader order."""
    from PIL import Image

    expected = {}
    for split, n, seed in (("train", 7, 1), ("test", 5, 2)):
        x, y = _images(n, seed)
        rows = []
        for k in range(n):
            cls = data.CLASSES[y[k]]
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            name = f"{k:04d}.png"
            Image.fromarray(x[k].transpose(1, 2, 0)).save(root / split / cls / name)
            rows.append((y[k], name, k))
        order = [k for _, _, k in sorted(rows)]  # class, then file name
        expected[split] = (x[order], y[order])
    return expected


def _check(loaded, expected):
    x, y = loaded
    ex, ey = expected
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert tuple(x.shape) == (len(ex), 3, 32, 32)
    np.testing.assert_array_equal(x.numpy(), ex)
    np.testing.assert_array_equal(y.numpy(), ey)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_torchvision_pickles(tmp_path, protocol):
    train, test = _write_pickles(tmp_path / "d" / "cifar-10-batches-py", protocol)
    _check(data.cifar10_tensors(tmp_path / "d", train=True), train)           # parent folder
    _check(data.cifar10_tensors(tmp_path / "d" / "cifar-10-batches-py", train=False), test)  # the folder


def test_pickles_in_targz_and_env_root(tmp_path, monkeypatch):
    train, test = _write_pickles(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setenv("STABKIT_DATA", str(tmp_path / "dl"))
    _check(data.cifar10_tensors(train=True), train)
    _check(data.cifar10_tensors(train=False), test)


@pytest.mark.parametrize("nested", [False, True])
def test_class_folders_unpacked(tmp_path, nested):
    root = tmp_path / "d"
    expected = _write_folders(root / "cifar10-png" if nested else root)
    _check(data.cifar10_tensors(root, train=True), expected["train"])
    _check(data.cifar10_tensors(root, train=False), expected["test"])


def test_class_folders_targz_cached(tmp_path):
    expected = _write_folders(tmp_path / "src" / "cifar10-png")
    archive = tmp_path / "d" / "cifar10-png.tar.gz"
    archive.parent.mkdir()
    files = sorted((tmp_path / "src").rglob("*.png"))[::-1]  # members in an unhelpful order
    with tarfile.open(archive, "w:gz") as tf:
        for f in files:
            tf.add(f, arcname=str(f.relative_to(tmp_path / "src")))
    _check(data.cifar10_tensors(archive, train=False), expected["test"])
    cached = sorted((tmp_path / "cache" / "cifar10").glob("*.npz"))
    assert len(cached) == 2  # one pass decoded and cached both splits, atomically (no temporary left)
    assert not list((tmp_path / "cache" / "cifar10").glob("*.tmp"))
    _check(data.cifar10_tensors(tmp_path / "d", train=True), expected["train"])  # folder holding the archive
    # the cache is what is read the second time: poison it and see it come back
    with np.load(cached[0]) as z:
        x, y = z["x"].copy(), z["y"]
    x[0, 0, 0, 0] ^= 0xFF
    np.savez(cached[0], x=x, y=y)
    split_train = cached[0].name.endswith("-train.npz")
    assert data.cifar10_tensors(archive, train=split_train)[0][0, 0, 0, 0] == x[0, 0, 0, 0]


def test_missing_data_error_says_where_and_how(tmp_path, monkeypatch):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        data.cifar10_tensors(empty)
    msg = str(e.value)
    assert str(empty) in msg and "STABKIT_DATA" in msg and "download=True" in msg
    assert isinstance(e.value, ValueError)
    monkeypatch.setenv("STABKIT_DATA", str(tmp_path / "env-dir"))
    with pytest.raises(ValueError) as e:
        data.cifar10(train=False)
    assert str(tmp_path / "env-dir") in str(e.value) and str(tmp_path / "cache" / "data") in str(e.value)


def test_data_roots_order(tmp_path, monkeypatch):
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    monkeypatch.setattr(cifar_files, "shared_data_dir", lambda: shared)
    monkeypatch.setenv("STABKIT_DATA", str(tmp_path / "env"))
    assert data.data_roots() == [tmp_path / "env", tmp_path / "cache" / "data", shared]
    assert data.data_roots(tmp_path / "given") == [tmp_path / "given"]


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    """download=True calls torchvision's CIFAR10(root, train, download=True) (faked here: no internet)."""
    import torchvision

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            _write_pickles(Path(root) / "cifar-10-batches-py")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    with pytest.raises(FileNotFoundError):
        data.cifar10_tensors(tmp_path / "dl", train=False)  # no download unless asked
    assert not calls
    x, y = data.cifar10_tensors(tmp_path / "dl", train=False, download=True)
    assert calls == [(str(tmp_path / "dl"), False, True)] and x.shape == (4, 3, 32, 32)


def test_unknown_class_folder_is_an_error(tmp_path):
    from PIL import Image

    (tmp_path / "train" / "cow").mkdir(parents=True)
    (tmp_path / "test" / "cat").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "train" / "cow" / "0.png")
    with pytest.raises(ValueError, match="cow"):
        data.cifar10_tensors(tmp_path, train=True)


def test_cifar10_dataset_transforms_and_noise(tmp_path):
    expected = _write_folders(tmp_path)
    ds = data.cifar10(tmp_path, train=False)
    x, y = ds[0]
    ex = (torch.from_numpy(expected["test"][0][0]).float() / 255 - torch.tensor(data.CIFAR10_MEAN)[:, None, None]) \
        / torch.tensor(data.CIFAR10_STD)[:, None, None]
    torch.testing.assert_close(x, ex)
    assert y == expected["test"][1][0] and len(ds) == 5
    torch.manual_seed(0)
    train = data.cifar10(tmp_path, train=True)
    assert train[0][0].shape == (3, 32, 32)
    noisy = data.cifar10(tmp_path, train=False, noise_std=10.0)
    a, b = noisy[0][0], noisy[0][0]
    assert not torch.equal(a, b)  # fresh at every load
    norms = torch.stack([(noisy[0][0] - ex).norm() for _ in range(50)])
    assert abs(norms.pow(2).mean().sqrt().item() - 10.0) < 0.3  # E||noise||^2 = std^2


@pytest.mark.slow
def test_real_copy_test_split(real_cifar10):
    """Statistics only actual photographs have: skipped, naming STABKIT_DATA, on generated data (conftest.py)."""
    t0 = time.perf_counter()
    x, y = data.cifar10_tensors(real_cifar10, train=False)
    first = time.perf_counter() - t0
    assert x.shape == (10000, 3, 32, 32) and x.dtype == torch.uint8
    assert y.bincount().tolist() == [1000] * 10
    std = (x.float() / 255).std(dim=(0, 2, 3))
    # the original pickles: 0.247/0.244/0.262; the shared JPEG copy (q75) is slightly smoother: 0.243/0.240/0.259
    np.testing.assert_allclose(std.numpy(), [0.245, 0.242, 0.261], atol=0.005)
    t0 = time.perf_counter()
    x2, y2 = data.cifar10_tensors(real_cifar10, train=False)
    cached = time.perf_counter() - t0
    assert torch.equal(x, x2) and torch.equal(y, y2)
    print(f"real copy {real_cifar10}: first load {first:.1f} s, second {cached:.2f} s")


# ------------------------------------------------------------------ the generated stand-in of tests/conftest.py
def test_generated_layouts_read_alike(tmp_path):
    """The two layouts of the generated data set (pickles, JPEG archive) read as the same images and labels."""
    from generated_cifar import generated_images, write_generated_cifar10

    paths = write_generated_cifar10(tmp_path / "gen", n_train_per_class=3, n_test_per_class=2, seed=5)
    for train, n, seed in ((True, 30, 5), (False, 20, 6)):
        x, y = generated_images(n // 10, seed)
        xp, yp = data.cifar10_tensors(paths["pickle"], train=train)
        xj, yj = data.cifar10_tensors(paths["jpeg"], train=train)
        assert xp.shape == xj.shape == (n, 3, 32, 32) and yp.bincount().tolist() == [n // 10] * 10
        # the pickles hold the images exactly, shuffled as torchvision's; the folders sort by class and name
        rows = {bytes(img.numpy().tobytes()): int(label) for img, label in zip(xp, yp)}
        assert rows == {bytes(img.tobytes()): int(label) for img, label in zip(x, y)}
        assert torch.equal(yj, torch.from_numpy(y))
        err = (xj.float() - torch.from_numpy(x).float()).abs().mean()  # JPEG smooths the pixel noise: ~9
        assert err < 12, f"JPEG (q90) far from the generated pixels: mean |error| {err:.1f} / 255"
    assert data.cifar10_tensors(paths["pickle"].parent, train=False)[0].shape[0] == 20  # parent folder too


def test_tests_never_take_the_shared_copy(tmp_path, monkeypatch):
    """CI's checkout has shared/data beside it, a user's clone does not: the test session ignores it (it uses
    STABKIT_DATA or the cache, else generates), so that CI runs what a fresh machine runs (issue 25)."""
    import conftest
    from generated_cifar import write_generated_cifar10

    shared = tmp_path / "shared" / "data"
    write_generated_cifar10(shared, n_train_per_class=1, n_test_per_class=1)
    monkeypatch.setattr(cifar_files, "shared_data_dir", lambda: shared)
    assert data.cifar10_tensors(train=False)[0].shape[0] == 10  # stabkit itself finds it
    assert conftest._real_copy() is None                          # the tests generate instead
    monkeypatch.setenv("STABKIT_DATA", str(shared))              # unless the user names it
    assert conftest._real_copy() == shared


def test_session_data_is_found_without_shared(cifar10_data, monkeypatch):
    """The session's data (conftest.py) are what a run finds with no shared/ folder beside the checkout."""
    monkeypatch.setenv("STABKIT_DATA", str(cifar10_data))  # the autouse fixture of this file removed it
    x, y = data.cifar10_tensors(train=False)
    assert x.shape[1:] == (3, 32, 32) and len(x) == len(y) >= 100


# ------------------------------------------------------------------------------ damaged data: errors name the file
def _archive_of_folders(tmp_path: Path) -> Path:
    _write_folders(tmp_path / "src" / "cifar10-png")
    archive = tmp_path / "d" / "cifar10-png.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar10-png", arcname="cifar10-png")
    return archive


def test_random_bytes_archive_names_the_file(tmp_path):
    archive = tmp_path / "cifar10.tar.gz"
    archive.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ValueError, match=r"cifar10\.tar\.gz.*not a readable tar archive"):
        data.cifar10_tensors(archive, train=False)


def test_truncated_archive_names_the_file(tmp_path):
    archive = _archive_of_folders(tmp_path)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=str(archive)):
        data.cifar10_tensors(archive, train=True)


def test_garbage_pickle_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_pickles(folder)
    (folder / "test_batch").write_bytes(b"\x80\x04garbage" + np.random.default_rng(1).bytes(300))
    with pytest.raises(ValueError, match=str(folder / "test_batch")):
        data.cifar10_tensors(folder, train=False)
    (folder / "test_batch").write_bytes(pickle.dumps(["not", "a", "batch"]))
    with pytest.raises(ValueError, match="test_batch.*not a CIFAR-10 batch"):
        data.cifar10_tensors(folder, train=False)


def test_wrong_size_array_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_pickles(folder)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"labels": [1, 2], "data": np.zeros((2, 3071), dtype=np.uint8)}, f)
    with pytest.raises(ValueError, match="test_batch.*3072"):
        data.cifar10_tensors(folder, train=False)
    with open(folder / "test_batch", "wb") as f:  # one label short
        pickle.dump({"labels": [1], "data": np.zeros((2, 3072), dtype=np.uint8)}, f)
    with pytest.raises(ValueError, match="test_batch.*labels"):
        data.cifar10_tensors(folder, train=False)


def test_corrupt_jpeg_names_the_file(tmp_path):
    _write_folders(tmp_path / "d")
    bad = tmp_path / "d" / "test" / "cat" / "zz-broken.jpg"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(2).bytes(200))  # a JPEG header, then noise
    with pytest.raises(ValueError, match="zz-broken.jpg"):
        data.cifar10_tensors(tmp_path / "d", train=False)
    archive = tmp_path / "a" / "cifar10.tar"  # and inside an archive: archive path and member name
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tf:
        tf.add(tmp_path / "d", arcname="cifar10")
    with pytest.raises(ValueError, match=r"cifar10\.tar:cifar10/test/cat/zz-broken\.jpg"):
        data.cifar10_tensors(archive, train=False)


class _Exploit:
    """A pickle payload that runs os.mkdir when unpickled by a plain pickle.load."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return os.mkdir, (self.target,)


def test_pickles_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_pickles(folder)
    marker = tmp_path / "pwned"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"labels": [0], "data": np.zeros((1, 3072), dtype=np.uint8), "x": _Exploit(marker)}, f)
    with pytest.raises(ValueError, match="test_batch.*not allowed"):
        data.cifar10_tensors(folder, train=False)
    assert not marker.exists()  # the payload never ran
    # the same inside an archive of torchvision's pickles
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="cifar-10-batches-py")
    with pytest.raises(ValueError, match="not allowed"):
        data.cifar10_tensors(archive, train=False)
    assert not marker.exists()

