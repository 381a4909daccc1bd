"""Tests of stabkit.data (METHODS.md section 4) on generated data and, when present, the shared archive."""
import itertools
import math
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from stabkit import data

SHARED = Path(os.environ.get("STABKIT_SHARED_CIFAR", "/work/shared/data/cifar10-jpeg.tar.gz"))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own cache, no STABKIT_DATA and no shared/data folder beside the checkout."""
    monkeypatch.setenv("STABKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STABKIT_DATA", raising=False)
    monkeypatch.setattr(data, "shared_data_dir", lambda: None)


# ------------------------------------------------------------------------------------ generated layouts
def _images(n, seed):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8), g.integers(0, 10, size=n).astype(np.int64)


def _write_pickles(folder: Path):
    """torchvision's cifar-10-batches-py format: 5 training batches and a test batch."""
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _images(3, i)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", "labels": y.tolist(),
                         "data": x.reshape(len(x), -1), "filenames": [f"{k}.png" for k in range(len(x))]}, f)
        xs.append(x)
        ys.append(y)
    xt, yt = _images(4, 99)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"labels": yt.tolist(), "data": xt.reshape(len(xt), -1)}, f)
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


def test_torchvision_pickles(tmp_path):
    train, test = _write_pickles(tmp_path / "d" / "cifar-10-batches-py")
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
    monkeypatch.setattr(data, "shared_data_dir", lambda: shared)
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
@pytest.mark.skipif(not SHARED.is_file(), reason="shared CIFAR-10 archive absent")
def test_shared_archive_test_split():
    t0 = time.perf_counter()
    x, y = data.cifar10_tensors(SHARED, train=False)
    first = time.perf_counter() - t0
    assert x.shape == (10000, 3, 32, 32) and x.dtype == torch.uint8
    assert y.bincount().tolist() == [1000] * 10
    std = (x.float() / 255).std(dim=(0, 2, 3))
    # BOOK.md: about 0.243/0.240/0.259 (JPEG q75; the original pickles give 0.247/0.244/0.262)
    np.testing.assert_allclose(std.numpy(), [0.243, 0.240, 0.259], atol=0.004)
    t0 = time.perf_counter()
    x2, y2 = data.cifar10_tensors(SHARED, train=False)
    cached = time.perf_counter() - t0
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert cached < first
    print(f"shared archive: first load {first:.1f} s (both splits decoded), cached {cached:.2f} s")


# -------------------------------------------------------------------------------------------- DeviceLoader
def _windows(img: torch.Tensor, p: int = 4) -> torch.Tensor:
    """All (2p+1)^2 crops of the zero-padded image and their mirror images: [2 * (2p+1)^2, C, H, W]."""
    C, H, W = img.shape
    padded = torch.zeros(C, H + 2 * p, W + 2 * p, dtype=img.dtype)
    padded[:, p:p + H, p:p + W] = img
    crops = [padded[:, r:r + H, c:c + W] for r in range(2 * p + 1) for c in range(2 * p + 1)]
    return torch.stack(crops + [w.flip(-1) for w in crops])


def test_crop_flip_is_a_window_of_the_padded_image():
    torch.manual_seed(0)
    imgs = torch.rand(24, 3, 32, 32)  # distinct values: windows are unambiguous
    loader = data.DeviceLoader(imgs, torch.arange(24), 8, augment=True, seed=3)
    seen = set()
    for _ in range(6):
        for xb, yb in loader:
            for x, i in zip(xb, yb):
                w = _windows(imgs[i])
                match = (w == x).flatten(1).all(1).nonzero().flatten()
                assert len(match) >= 1, "output is not a shifted/flipped window of the padded image"
                seen.add(int(match[0]))
    assert len(seen) > 60  # many of the 162 offsets x flips occur


def test_crop_flip_matches_slicing():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [8, 8], [4, 4], [1, 7], [6, 2]])
    flips = torch.tensor([False, True, False, True, True])
    out = data.crop_flip(x, offsets, flips, 4)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for b in range(5):
        r, c = offsets[b].tolist()
        ref = padded[b, :, r:r + 32, c:c + 32]
        assert torch.equal(out[b], ref.flip(-1) if flips[b] else ref)
    assert torch.equal(out[2], x[2])  # centre crop without flip is the image


def test_loader_epochs_seeds_and_coverage():
    x = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(50)
    kw = dict(augment=True, mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD, noise_std=1.0, seed=7)
    a = data.DeviceLoader(x, y, 16, **kw)
    b = data.DeviceLoader(x, y, 16, **kw)
    assert len(a) == 4 and len(data.DeviceLoader(x, y, 16, drop_last=True)) == 3
    ea, eb = list(a), list(b)
    for (xa, ya), (xb, yb) in zip(ea, eb):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.dtype == torch.float32 and xa.shape[1:] == (3, 32, 32)
    labels = torch.cat([yb for _, yb in ea])
    assert sorted(labels.tolist()) == list(range(50))  # every sample once per epoch
    assert not torch.equal(labels, y)  # shuffled
    second = torch.cat([yb for _, yb in a])
    assert sorted(second.tolist()) == list(range(50)) and not torch.equal(second, labels)  # new epoch, new order
    a.set_epoch(0)
    assert torch.equal(next(iter(a))[0], ea[0][0])  # replayable
    other = data.DeviceLoader(x, y, 16, **dict(kw, seed=8))
    assert not torch.equal(next(iter(other))[1], ea[0][1])
    dropped = torch.cat([yb for _, yb in data.DeviceLoader(x, y, 16, drop_last=True)])
    assert len(dropped) == 48


def test_loader_normalisation_noise_and_dtypes():
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    y = torch.zeros(20, dtype=torch.long)
    mean, std = torch.tensor(data.CIFAR10_MEAN)[:, None, None], torch.tensor(data.CIFAR10_STD)[:, None, None]
    clean = data.DeviceLoader(x, y, 20, shuffle=False, mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD)
    xb, _ = next(iter(clean))
    torch.testing.assert_close(xb, (x.float() / 255 - mean) / std)
    as_float = data.DeviceLoader(x.float() / 255, y, 20, shuffle=False, mean=data.CIFAR10_MEAN,
                                 std=data.CIFAR10_STD)
    torch.testing.assert_close(next(iter(as_float))[0], xb)
    noisy = data.DeviceLoader(x, y, 20, shuffle=False, mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD,
                              noise_std=30.0)
    norms = torch.cat([(xn - xb).flatten(1).norm(dim=1) for _ in range(10) for xn, _ in noisy])
    assert abs(norms.pow(2).mean().sqrt().item() - 30.0) < 0.5  # E||noise||^2 = std^2, after normalisation
    calls = []

    def extra(batch, gen):
        calls.append(gen)
        assert batch.max() <= 1.0  # before normalisation, after /255
        return batch.flip(-2)

    aug = data.DeviceLoader(x, y, 20, shuffle=False, mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD,
                            extra_augment=extra)
    torch.testing.assert_close(next(iter(aug))[0], xb.flip(-2))
    assert isinstance(calls[0], torch.Generator)


def test_loader_bad_arguments():
    x = torch.zeros(4, 3, 8, 8)
    with pytest.raises(ValueError, match="batch_size"):
        data.DeviceLoader(x, torch.zeros(4), 0)
    with pytest.raises(ValueError, match="length"):
        data.DeviceLoader(x, torch.zeros(3), 2)
    with pytest.raises(ValueError, match="mean and std"):
        data.DeviceLoader(x, torch.zeros(4), 2, mean=(0.5, 0.5, 0.5))


# -------------------------------------------------------------------------------------------- twopoints
def _brute_force_counts(d, xi, gap, norm="L2", pbc=False):
    cand = [(r, c) for r in range(d) for c in range(d) if r != c]
    far = close = 0
    for a in range(len(cand)):
        r1, c1 = cand[a]
        for b in range(a + 1, len(cand)):
            dr, dc = abs(r1 - cand[b][0]), abs(c1 - cand[b][1])
            if pbc:
                dr, dc = min(dr, d - dr), min(dc, d - dc)
            dist = math.hypot(dr, dc) if norm == "L2" else max(dr, dc)
            if dist >= xi + gap / 2:
                far += 1
            elif dist < xi - gap / 2:
                close += 1
    return far, close


def test_twopoints_pair_counts_brute_force():
    far, close = data.twopoints_pairs(28, 14.0, 2.0)
    assert (len(far), len(close)) == _brute_force_counts(28, 14.0, 2.0)
    for kw in (dict(norm="Linf"), dict(pbc=True), dict(norm="Linf", pbc=True)):
        f, c = data.twopoints_pairs(9, 4.0, 2.0, **kw)
        assert (len(f), len(c)) == _brute_force_counts(9, 4.0, 2.0, **kw)
    for pairs in (far, close):
        assert (pairs[..., 0] != pairs[..., 1]).all()  # no diagonal positions
        assert (pairs[:, 0] != pairs[:, 1]).any(-1).all()  # two distinct points


def test_twopoints_split():
    tr = data.TwoPoints(ptr=512, seed=0)
    te = data.TwoPoints(ptr=512, train=False, seed=0)
    tr1 = data.TwoPoints(ptr=512, seed=1)
    te1 = data.TwoPoints(ptr=512, train=False, seed=1)
    assert tr.x.shape == (512, 1, 28, 28) and tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert te.x.shape == (2048, 1, 28, 28) and te.y.sum() == 1024  # testsize = 4 ptr, balanced
    assert abs(tr.y.float().mean().item() - 0.5) < 0.08  # drawn from a balanced pool
    assert torch.equal(te.positions, te1.positions) and not torch.equal(tr.positions, tr1.positions)

    def key(p):
        return {tuple(sorted(map(tuple, q.tolist()))) for q in p}
    assert not key(tr.positions) & key(te.positions)  # disjoint
    assert len(key(te.positions)) == len(te)
    for ds in (tr, te):
        assert torch.allclose(ds.x.mean(dim=(1, 2, 3)), torch.ones(len(ds)))  # mean pixel value 1
        assert ((ds.x > 0).sum(dim=(1, 2, 3)) == 2).all() and ds.x.max() == 28 * 28 / 2
        dist = (ds.positions[:, 0] - ds.positions[:, 1]).double().norm(dim=1)
        assert (dist[ds.y == 0] >= 15).all() and (dist[ds.y == 1] < 13).all()
        b = torch.arange(len(ds))
        for k in range(2):
            assert (ds.x[b, 0, ds.positions[:, k, 0], ds.positions[:, k, 1]] == 392).all()
    with pytest.raises(ValueError, match="norm"):
        data.TwoPoints(norm="L3")
    with pytest.raises(ValueError, match="ptr"):
        data.TwoPoints(ptr=100_000)


def test_twopoints_probes():
    te = data.TwoPoints(ptr=256, train=False)
    g = torch.Generator().manual_seed(5)
    x, x_tau, x_eta, pos, moved = data.twopoints_probes(te.positions, 28, P=300, generator=g, return_positions=True)
    assert x.shape == x_tau.shape == x_eta.shape == (300, 1, 28, 28)
    step = (moved - pos).abs().max(-1).values
    target_inside = ((pos > 0) & (pos < 27)).all(-1)
    assert (step[target_inside] == 1).all()  # Chebyshev distance 1 unless clipped
    assert (step <= 1).all() and (moved >= 0).all() and (moved <= 27).all()
    dirs = {tuple(v) for v in (moved - pos)[target_inside].tolist()}
    assert len(dirs) == 8  # all eight neighbours occur
    torch.testing.assert_close(x, data.twopoints_images(pos, 28))
    torch.testing.assert_close(x_tau, data.twopoints_images(moved, 28))
    n_tau = (x_tau - x).flatten(1).norm(dim=1)
    n_eta = (x_eta - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(n_eta, n_tau, rtol=1e-4, atol=1e-3)
    again = data.twopoints_probes(te.positions, 28, P=300, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(again, (x, x_tau, x_eta)))


# ----------------------------------------------------------------------------------------------- 1-D tasks
def test_scale1d_pairs_brute_force():
    L, xi, gap = 64, 16, 2
    pairs = list(itertools.combinations(range(L), 2))
    close = [p for p in pairs if min(p[1] - p[0], L - p[1] + p[0]) < xi - gap]
    far = [p for p in pairs if min(p[1] - p[0], L - p[1] + p[0]) >= xi + gap]
    neg, pos = data.scale1d_pairs(L, xi, gap, task=1)
    assert sorted(map(tuple, pos.tolist())) == close and sorted(map(tuple, neg.tolist())) == far
    neg, pos = data.scale1d_pairs(L, xi, gap, task=2)
    assert sorted(map(tuple, pos.tolist())) == [p for p in pairs if p[0] // xi == p[1] // xi]
    assert len(neg) + len(pos) == len(pairs)


@pytest.mark.parametrize("task", [1, 2])
def test_scale1d_dataset_and_probes(task):
    tr = data.ScaleDetection1D(L=128, xi=32, task=task, ptr=512)
    te = data.ScaleDetection1D(L=128, xi=32, task=task, ptr=512, train=False)
    assert tr.x.shape == (512, 1, 128) and te.x.shape[1:] == (1, 128)
    assert te.y.float().mean() == 0.5
    assert torch.allclose(tr.x.mean(dim=(1, 2)), torch.ones(len(tr)))
    same_block = (te.positions[:, 0] // 32) == (te.positions[:, 1] // 32)
    if task == 2:
        assert torch.equal(same_block, te.y.bool())
    x, x_tau, x_eta, pos, moved = data.scale1d_probes(te, P=200, generator=torch.Generator().manual_seed(0),
                                                      return_positions=True)
    assert x.shape == x_tau.shape == x_eta.shape == (200, 1, 128)
    delta = (moved - pos).abs()
    if task == 1:
        assert ((delta == 1) | (delta == 127)).all()  # +-1 on the periodic line
    else:
        assert (delta == 1).all() and torch.equal(moved // 32, pos // 32)  # never leaves its block
    torch.testing.assert_close((x_eta - x).flatten(1).norm(dim=1), (x_tau - x).flatten(1).norm(dim=1),
                               rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="task"):
        data.ScaleDetection1D(task=3)
    with pytest.raises(ValueError, match="task"):
        data.scale1d_probes(te.positions, 128, 10)  # a bare tensor does not say which task
