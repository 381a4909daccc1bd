"""Tests of stabkit.data.loader: DeviceLoader and crop_flip (book/methods.md, "Tasks")."""
import pytest
import torch

from stabkit import data

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
    with pytest.raises(ValueError, match="padding"):
        data.DeviceLoader(x, torch.zeros(4), 2, padding=-1)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0", "tpu", 3])
def test_loader_device_string_is_checked(device):
    with pytest.raises(ValueError, match="device"):  # used to be torch's RuntimeError, or a TypeError
        data.DeviceLoader(torch.zeros(4, 3, 8, 8), torch.zeros(4), 2, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is absent")
def test_loader_cuda_without_cuda_is_refused():
    with pytest.raises(ValueError, match="CUDA is not available"):
        data.DeviceLoader(torch.zeros(4, 3, 8, 8), torch.zeros(4), 2, device="cuda")
    assert data.DeviceLoader(torch.zeros(4, 3, 8, 8), torch.zeros(4), 2, device="auto").device.type == "cpu"


def test_default_eval_batch_size():
    assert data.default_eval_batch_size(128, "cpu") == 512  # what runs have always used on the CPU
    assert data.default_eval_batch_size(1024, "cpu") == 1024
    assert data.default_eval_batch_size(128, "cuda") == 2048


def test_loader_noise_on_1d_signals_is_per_sample():
    x = torch.zeros(400, 1, 64)
    noisy = data.DeviceLoader(x, torch.zeros(400), 100, shuffle=False, noise_std=3.0)
    norms = torch.cat([xb.flatten(1).norm(dim=1) for xb, _ in noisy])
    assert abs(norms.pow(2).mean().sqrt().item() - 3.0) < 0.1  # E||noise||^2 = std^2 per signal


def test_loader_moves_epoch_draws_to_the_device_once(monkeypatch):
    """crop_flip gets offsets and flips already on the images' device (one copy per epoch, none per batch)."""
    from stabkit.data import loader as loader_mod

    seen = []
    real = loader_mod.crop_flip

    def spy(x, offsets, flips, padding=4):
        seen.append((offsets.device == x.device, flips.device == x.device, offsets.data_ptr()))
        return real(x, offsets, flips, padding)

    monkeypatch.setattr(loader_mod, "crop_flip", spy)
    ld = data.DeviceLoader(torch.zeros(40, 3, 8, 8, dtype=torch.uint8), torch.arange(40), 8, augment=True)
    list(ld)
    assert len(seen) == 5 and all(a and b for a, b, _ in seen)
    # slices of one epoch tensor: consecutive batches' offsets are views 8 rows apart
    ptrs = [p for _, _, p in seen]
    assert all(b - a == 8 * 2 * 8 for a, b in zip(ptrs, ptrs[1:]))

