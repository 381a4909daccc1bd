"""Tests of stabkit.transforms.diffeo and stabkit.transforms.noise (book/methods.md, "Random diffeomorphisms", "Noise matched to the diffeomorphism")."""
import math

import pytest
import torch

from stabkit.transforms import (GaussianNoiseCorruption, deform, diffeo_batch, noisy_batch, temperature_range,
                                typical_displacement, typical_temperature)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def ramp(n, batch=1, channels=1, dtype=torch.float64):
    """Pixel value = column index."""
    return torch.arange(n, dtype=dtype).expand(batch, channels, n, n).clone()


def reference_fields(batch, n, T, cut, seed):
    """dx, dy [B, n, n] written independently of the implementation: explicit sums over modes, from the
    documented draw layout (one randn(B, 2, cut, cut) float64 on the CPU generator)."""
    coef = torch.randn(batch, 2, cut, cut, generator=gen(seed), dtype=torch.float64)
    pos = torch.arange(n, dtype=torch.float64) / (n - 1)
    u = torch.zeros(batch, 2, n, n, dtype=torch.float64)
    for i in range(1, cut + 1):
        for j in range(1, cut + 1):
            if math.hypot(i, j) < cut + 0.5:
                mode = torch.sin(math.pi * j * pos)[:, None] * torch.sin(math.pi * i * pos)[None, :]  # [y, x]
                u += coef[:, :, i - 1, j - 1, None, None] / math.hypot(i, j) * mode
    u = u * math.sqrt(T) * n
    return u[:, 0], u[:, 1]


def mode_sum(n, cut):
    """Exact E[dx^2 + dy^2] / (T n^2), averaged over the pixel grid."""
    pos = torch.arange(n, dtype=torch.float64) / (n - 1)
    total = 0.0
    for i in range(1, cut + 1):
        for j in range(1, cut + 1):
            if math.hypot(i, j) < cut + 0.5:
                total += float((torch.sin(math.pi * i * pos) ** 2).mean() * (torch.sin(math.pi * j * pos) ** 2).mean()) / (i * i + j * j)
    return 2 * total


# ---------------------------------------------------------------------------------- temperatures
def test_temperature_formulas():
    n, c = 32, 3
    tmin, tmax = temperature_range(n, c)
    assert tmin == pytest.approx(1 / (math.pi * n**2 * math.log(c)), rel=1e-14)
    assert tmax == pytest.approx(4 / (math.pi**3 * c**2 * math.log(c)), rel=1e-14)
    assert typical_displacement(tmin, c, n) == pytest.approx(0.5, rel=1e-12)  # T_min = half a pixel
    for d in (0.0, 0.3, 1.0, 2.5):
        assert typical_displacement(typical_temperature(d, c, n), c, n) == pytest.approx(d, rel=1e-12, abs=1e-15)
    d = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(typical_displacement(typical_temperature(d, c, n), c, n), d)


# ------------------------------------------------------------------------------------ deform
@pytest.mark.parametrize("interp", ["bilinear", "nearest"])
@pytest.mark.parametrize("shape", [(3, 2, 12, 12), (2, 12, 12), (12, 12)])
def test_zero_temperature_is_identity(interp, shape):
    x = torch.randn(shape, generator=gen(1))
    assert torch.equal(deform(x, 0.0, 3, interp, generator=gen()), x)
    assert torch.equal(deform(x, torch.zeros(shape[0]) if len(shape) == 4 else 0.0, 3, interp), x)


def test_gaussian_interp_blurs_but_keeps_constants():
    x = torch.randn(2, 3, 10, 10, generator=gen(1), dtype=torch.float64)
    blurred = deform(x, 0.0, 3, "gaussian")
    assert not torch.allclose(blurred, x)
    assert blurred.std() < x.std()
    const = torch.full((2, 1, 10, 10), 3.5, dtype=torch.float64)
    T = temperature_range(10, 3)[1]
    torch.testing.assert_close(deform(const, T, 3, "gaussian", generator=gen()), const)


@pytest.mark.parametrize("interp", ["bilinear", "nearest", "gaussian"])
def test_border_is_fixed(interp):
    x = torch.randn(4, 2, 16, 16, generator=gen(2), dtype=torch.float64)
    T = temperature_range(16, 3)[1]  # large but diffeomorphic
    y = deform(x, T, 3, interp, generator=gen())
    ref = deform(x, 0.0, 3, interp)  # = x except for the gaussian blur
    for sl in [(..., 0, slice(None)), (..., -1, slice(None)), (..., slice(None), 0), (..., slice(None), -1)]:
        torch.testing.assert_close(y[sl], ref[sl], rtol=0, atol=1e-12)
    assert not torch.allclose(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


def test_ramp_recovers_field():
    n, cut, B, seed = 20, 3, 6, 7
    T = typical_temperature(1.5, cut, n)
    dx, dy = reference_fields(B, n, T, cut, seed)
    # channel 0: ramp along x (column index), channel 1: ramp along y; one field per image, shared
    img = torch.stack([ramp(n, B)[:, 0], ramp(n, B)[:, 0].transpose(1, 2)], dim=1)
    out = deform(img, T, cut, "bilinear", generator=gen(seed))
    pos = torch.arange(n, dtype=torch.float64)
    sx, sy = pos[None, None, :] - dx, pos[None, :, None] - dy
    inside = (sx >= 0) & (sx <= n - 1) & (sy >= 0) & (sy <= n - 1)  # no clamping there
    assert inside.float().mean() > 0.8
    torch.testing.assert_close((img[:, 0] - out[:, 0])[inside], dx[inside], rtol=0, atol=1e-10)
    torch.testing.assert_close((img[:, 1] - out[:, 1])[inside], dy[inside], rtol=0, atol=1e-10)
    # where clamped, the source is the border
    torch.testing.assert_close(out[:, 0], sx.clamp(0, n - 1), rtol=0, atol=1e-10)
    # the field is not trivial
    assert dx.abs().max() > 0.5


def test_batch_images_independent_channels_shared():
    n = 16
    x = torch.randn(1, 1, n, n, generator=gen(3)).expand(5, 3, n, n).contiguous()
    y = diffeo_batch(x, 1.0, 3, generator=gen(4))
    for b in range(1, 5):  # same image, different fields
        assert not torch.allclose(y[0], y[b])
    for c in range(1, 3):  # same channels, same field
        assert torch.equal(y[:, 0], y[:, c])
    # the fields of different images are uncorrelated (statistical check on many images)
    B = 400
    dx = ramp(n, B) - deform(ramp(n, B), typical_temperature(0.5, 3, n), 3, generator=gen(5))
    f = dx.reshape(B, -1)
    corr = torch.nn.functional.cosine_similarity(f[:-1], f[1:], dim=1)
    assert corr.mean().abs() < 0.1
    assert corr.abs().mean() > 0.05  # not all identical / not all zero


def test_same_seed_same_probes_bit_for_bit():
    x = torch.randn(6, 3, 16, 16, generator=gen(0))
    a = diffeo_batch(x, generator=gen(11))
    b = diffeo_batch(x, generator=gen(11))
    assert torch.equal(a, b)
    assert not torch.equal(a, diffeo_batch(x, generator=gen(12)))
    assert torch.equal(noisy_batch(x, a, generator=gen(13)), noisy_batch(x, b, generator=gen(13)))
    # draws do not depend on the dtype: float32 and float64 images get the same fields
    a64 = diffeo_batch(x.double(), generator=gen(11))
    torch.testing.assert_close(a.double(), a64, rtol=0, atol=1e-5)


def test_mean_square_displacement_linear_in_T():
    n, cut, B = 16, 3, 300
    expected = mode_sum(n, cut) * n**2  # E<dx^2 + dy^2> / T
    ratios = []
    for k, d in enumerate((0.25, 0.5, 1.0)):
        T = typical_temperature(d, cut, n)
        img = torch.stack([ramp(n, B)[:, 0], ramp(n, B)[:, 0].transpose(1, 2)], dim=1)
        disp = img - deform(img, T, cut, generator=gen(100 + k))
        msd = disp.pow(2).sum(1).mean().item()
        ratios.append(msd / (T * expected))
    for r in ratios:
        assert r == pytest.approx(1.0, abs=0.12)
    # and the T = 0 limit
    img = ramp(n, 4)
    assert (img - deform(img, 0.0, cut, generator=gen())).abs().max() == 0


def test_per_image_temperature():
    n = 12
    x = torch.randn(3, 1, n, n, generator=gen(0), dtype=torch.float64)
    T = torch.tensor([0.0, 1e-3, 4e-3], dtype=torch.float64)
    y = deform(x, T, 3, generator=gen(1))
    assert torch.equal(y[0], x[0])
    # image b with T_b gives what a scalar temperature gives for it (same coefficients)
    torch.testing.assert_close(y[2], deform(x, 4e-3, 3, generator=gen(1))[2])


def test_nearest_takes_pixel_values():
    x = torch.randn(2, 1, 10, 10, generator=gen(0))
    y = deform(x, temperature_range(10, 3)[1], 3, "nearest", generator=gen(1))
    assert set(y[0].flatten().tolist()) <= set(x[0].flatten().tolist())


# ------------------------------------------------------------------------------------- noise
def test_noise_norm_matches_diffeo_norm_per_image():
    x = torch.randn(7, 3, 16, 16, generator=gen(0), dtype=torch.float64)
    xt = diffeo_batch(x, generator=gen(1))
    xe = noisy_batch(x, xt, generator=gen(2))
    want = (xt - x).flatten(1).norm(dim=1)
    torch.testing.assert_close((xe - x).flatten(1).norm(dim=1), want, rtol=1e-12, atol=0)
    assert want.std() > 0  # different per image
    xs = noisy_batch(x, None, sigma=2.5, generator=gen(2))
    torch.testing.assert_close((xs - x).flatten(1).norm(dim=1), torch.full((7,), 2.5, dtype=torch.float64))
    # one independent direction per image
    e = (xs - x).flatten(1)
    assert torch.nn.functional.cosine_similarity(e[0], e[1], dim=0).abs() < 0.2


def test_gaussian_noise_corruption():
    std = 3.0
    t = GaussianNoiseCorruption(std, generator=gen(0))
    x = torch.zeros(2000, 3, 8, 8)
    y = t(x)
    norms2 = y.flatten(1).pow(2).sum(1)
    assert norms2.mean().item() == pytest.approx(std**2, rel=0.05)
    assert not torch.equal(y[0], y[1])
    single = torch.zeros(3, 8, 8)
    a, b = t(single), t(single)
    assert a.shape == single.shape and not torch.equal(a, b)  # fresh noise at every call
    torch.testing.assert_close(GaussianNoiseCorruption(std, generator=gen(5))(single),
                               GaussianNoiseCorruption(std, generator=gen(5))(single))
    assert torch.equal(GaussianNoiseCorruption(0.0)(single), single)
    from torchvision import transforms
    pipe = transforms.Compose([transforms.Normalize((0.5,) * 3, (0.5,) * 3), GaussianNoiseCorruption(1.0)])
    assert pipe(torch.rand(3, 8, 8)).shape == (3, 8, 8)
    assert "std=3.0" in repr(t)


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("call, word", [
    (lambda: deform(torch.zeros(2, 3, 8, 9), 0.1, 3), "square"),
    (lambda: deform(torch.zeros(8), 0.1, 3), "dimensions"),
    (lambda: deform(torch.zeros(1, 2, 3, 8, 8), 0.1, 3), "dimensions"),
    (lambda: deform(torch.zeros(8, 8), -0.1, 3), "T"),
    (lambda: deform(torch.zeros(8, 8), float("nan"), 3), "T"),
    (lambda: deform(torch.zeros(2, 1, 8, 8), torch.tensor([0.1, -0.1]), 3), "T"),
    (lambda: deform(torch.zeros(8, 8), 0.1, 3, interpolation="cubic"), "interpolation"),
    (lambda: deform(torch.full((8, 8), float("nan")), 0.1, 3), "NaN"),
    (lambda: deform(torch.zeros(8, 8, dtype=torch.uint8), 0.1, 3), "floating"),
    (lambda: deform(torch.zeros(8, 8), 0.1, 0), "cut"),
    (lambda: diffeo_batch(torch.zeros(2, 1, 8, 8), delta=-1.0), "delta"),
    (lambda: diffeo_batch(torch.zeros(2, 1, 8, 8), cut=1), "cut"),
    (lambda: temperature_range(32, 1), "cut"),
    (lambda: typical_temperature(1.0, 1, 32), "cut"),
    (lambda: typical_displacement(1e-3, 1, 32), "cut"),
    (lambda: typical_displacement(-1e-3, 3, 32), "T"),
    (lambda: typical_temperature(-1.0, 3, 32), "delta"),
    (lambda: noisy_batch(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 7)), "shape"),
    (lambda: noisy_batch(torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), float("inf"))), "NaN"),
    (lambda: noisy_batch(torch.zeros(2, 3, 8, 8), None, sigma=-1.0), "sigma"),
    (lambda: GaussianNoiseCorruption(-1.0), "std"),
    (lambda: GaussianNoiseCorruption(1.0)(torch.zeros(2, 2, 2, 2, 2)), "dimensions"),
])
def test_errors(call, word):
    with pytest.raises(ValueError, match=word):
        call()


def test_one_spelling_of_the_interpolation():
    x = torch.rand(2, 3, 8, 8, generator=gen(1))
    with pytest.raises(ValueError, match="interpolation.*bilinear"):
        diffeo_batch(x, 1.0, 3, "linear", generator=gen(2))
    with pytest.raises(TypeError, match="interp"):
        deform(x, 1e-3, 3, interp="bilinear", generator=gen(2))


def test_integer_arguments_accept_numpy_and_refuse_floats():
    import numpy as np
    x = torch.rand(2, 1, 8, 8, generator=gen(1))
    assert torch.equal(deform(x, 1e-3, np.int64(3), generator=gen(2)), deform(x, 1e-3, 3, generator=gen(2)))
    assert temperature_range(np.int32(32), np.int64(3)) == temperature_range(32, 3)
    with pytest.raises(TypeError, match="cut"):
        deform(x, 1e-3, 2.5)


def test_noisy_batch_empty_batch():
    # an empty batch used to fail in reshape(0, -1)
    empty = torch.zeros(0, 3, 8, 8)
    assert noisy_batch(empty, empty.clone(), generator=gen()).shape == (0, 3, 8, 8)
    assert noisy_batch(empty, None, sigma=1.0).shape == (0, 3, 8, 8)


def test_normalize_is_the_per_channel_affine_map():
    from stabkit.transforms import normalize
    x = torch.rand(4, 3, 5, 5, generator=gen())
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    assert torch.equal(normalize(x, mean, std), (x - m) / s)
    assert torch.equal(normalize(x, torch.tensor(mean), torch.tensor(std)), (x - m) / s)
    assert normalize(x, None, None) is x
    assert torch.equal(normalize(x, 0.5, 0.25), (x - 0.5) / 0.25)
    assert normalize(x.double(), mean, std).dtype == torch.float64
    y = torch.rand(2, 3, 7, generator=gen())  # any [B, C, ...] layout: channels on axis 1
    assert torch.equal(normalize(y, mean, None), y - torch.tensor(mean).view(1, 3, 1))
    with pytest.raises(ValueError, match="mean"):
        normalize(x, (0.1, 0.2), std)
    with pytest.raises(TypeError, match="x must"):
        normalize((x * 255).to(torch.uint8), mean, std)
    with pytest.raises(TypeError, match="std"):
        normalize(x, mean, "0.2")


def test_draws_happen_on_the_generator_device():
    from stabkit.transforms import draws
    g = gen(5)
    a = draws.randn((3, 4), g, dtype=torch.float64)
    assert a.device.type == "cpu" and torch.equal(a, torch.randn(3, 4, generator=gen(5), dtype=torch.float64))
    assert torch.equal(draws.rand((6,), gen(1), device="cpu"), torch.rand(6, generator=gen(1)))
    assert draws.draw_device(None).type == "cpu"
    assert draws.draw_device(None, default_device="meta").type == "meta"
    with pytest.raises(TypeError, match="generator"):
        draws.rand((2,), 0)
