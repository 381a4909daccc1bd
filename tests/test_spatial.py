"""Spatial probes: rotations, patch shuffling, masking, resizing, pixelation (stabkit.transforms.spatial)."""
import math

import numpy as np
import pytest
import torch

from stabkit.transforms import mask_patches, patch_shuffle, pixelate, resize, rotate
from stabkit.transforms.spatial import gaussian_blur


def _imgs(B=3, C=3, H=12, W=12, seed=0):
    return torch.rand(B, C, H, W, generator=torch.Generator().manual_seed(seed))


def _same_pixels(a, b):
    """Per image and channel, the same multiset of values."""
    return torch.equal(a.flatten(2).sort(-1).values, b.flatten(2).sort(-1).values)


# ---------------------------------------------------------------------------------------------- rotate
@pytest.mark.parametrize("deg", [0, 90, 180, 270, 360, -90, -270, 450, 720.0])
def test_rotate_quarter_turns_equal_rot90(deg):
    x = _imgs()
    k = (int(deg) // 90) % 4
    assert torch.equal(rotate(x, deg), torch.rot90(x, k, dims=(-2, -1)))


def test_rotate_per_image_angles_mixed_batch():
    x = _imgs(B=4)
    angles = torch.tensor([90.0, 30.0, 180.0, -45.0])
    out = rotate(x, angles)
    assert torch.equal(out[0], torch.rot90(x[0], 1, dims=(-2, -1)))
    assert torch.equal(out[2], torch.rot90(x[2], 2, dims=(-2, -1)))
    assert torch.allclose(out[1], rotate(x[1:2], 30.0)[0])
    assert torch.allclose(out[3], rotate(x[3:4], -45.0)[0])


def test_rotate_is_counter_clockwise_and_in_degrees():
    # a near-quarter turn interpolated must be close to rot90 (degrees, not radians)
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 8] = 1.0  # right of centre
    out = rotate(x, 89.9999)
    assert out[0, 0, 0, 4] > 0.99  # moved to the top: counter-clockwise as displayed
    # interpolation of the same angle through grid_sample agrees with rot90 away from the border
    y = _imgs(B=1, H=9, W=9)
    assert torch.allclose(rotate(y, 89.9999)[..., 1:-1, 1:-1], torch.rot90(y, 1, dims=(-2, -1))[..., 1:-1, 1:-1],
                          atol=1e-4)


def test_rotate_small_angle_close_to_identity_and_padding():
    x = _imgs(B=2, H=16, W=16)
    assert torch.allclose(rotate(x, 1e-7), x, atol=1e-5)
    out = rotate(torch.ones(1, 1, 16, 16), 45.0)
    assert out[0, 0, 0, 0] == 0.0 and out[0, 0, 8, 8] == pytest.approx(1.0)  # zero padding in the corners
    out = rotate(torch.ones(1, 1, 16, 16), 45.0, padding="border")
    assert torch.allclose(out, torch.ones_like(out))


def test_rotate_shapes_dtypes_and_non_square():
    x = _imgs(B=2, H=8, W=12)
    assert rotate(x, 90).shape == x.shape  # odd quarter turns of non-square images interpolate
    assert torch.equal(rotate(x, 180), torch.rot90(x, 2, dims=(-2, -1)))
    u = (x * 255).to(torch.uint8)
    assert rotate(u, 33).dtype == torch.uint8
    assert rotate(x[0], 90).shape == x[0].shape and rotate(x[0, 0], 90).shape == x[0, 0].shape


def test_rotate_bad_arguments():
    x = _imgs()
    with pytest.raises(ValueError, match="interpolation"):
        rotate(x, 10, interpolation="cubic")
    with pytest.raises(ValueError, match="padding"):
        rotate(x, 10, padding="wrap")
    with pytest.raises(ValueError, match="degrees"):
        rotate(x, torch.zeros(2))
    with pytest.raises(ValueError, match="images"):
        rotate(torch.zeros(1, 1, 1, 2, 2), 10)


def test_rotate_refuses_strings_and_nan_images():
    x = _imgs()
    with pytest.raises(TypeError, match="degrees must be a real number"):  # was an obscure torch error
        rotate(x, "10")
    with pytest.raises(TypeError, match="degrees"):
        rotate(x, ["10", "20", "30"])
    bad = x.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="finite"):  # was silently rotated (NaN spreads by interpolation)
        rotate(bad, 30)
    with pytest.raises(TypeError, match="interp"):
        rotate(x, 30, interp="nearest")


# --------------------------------------------------------------------------------------- patch shuffle
@pytest.mark.parametrize("mode", ["full", "rows_cols"])
@pytest.mark.parametrize("k,H,W", [(2, 12, 12), (3, 12, 12), (5, 12, 12), (3, 11, 13), (4, 10, 7), (7, 7, 9)])
def test_patch_shuffle_is_a_pixel_permutation(mode, k, H, W):
    x = _imgs(B=4, H=H, W=W)
    out, index = patch_shuffle(x, k, mode=mode, generator=torch.Generator().manual_seed(1), return_index=True)
    assert out.shape == x.shape and _same_pixels(out, x)
    for b in range(4):  # one permutation per image, shared by the channels
        assert torch.equal(index[b].sort().values, torch.arange(H * W))
        assert torch.equal(out[b].flatten(1), x[b].flatten(1)[:, index[b]])


@pytest.mark.parametrize("mode", ["full", "rows_cols"])
def test_patch_shuffle_k1_identity_and_seeded(mode):
    x = _imgs()
    assert torch.equal(patch_shuffle(x, 1, mode=mode), x)
    a = patch_shuffle(x, 4, mode=mode, generator=torch.Generator().manual_seed(3))
    b = patch_shuffle(x, 4, mode=mode, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_patch_shuffle_moves_whole_patches():
    H = W = 12
    k = 3  # patches of 4x4
    x = torch.arange(H * W, dtype=torch.float32).view(1, 1, H, W).repeat(8, 1, 1, 1)
    out = patch_shuffle(x, k, generator=torch.Generator().manual_seed(0))
    patches_in = {tuple(x[0, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4].flatten().tolist()) for i in range(3) for j in range(3)}
    moved = 0
    for b in range(8):
        got = [tuple(out[b, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4].flatten().tolist()) for i in range(3) for j in range(3)]
        assert set(got) == patches_in
        moved += not torch.equal(out[b], x[b])
    assert moved >= 7  # a random permutation of 9 patches is almost never the identity


def test_patch_shuffle_rows_cols_keeps_rows_and_columns_together():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    out = patch_shuffle(x, 3, mode="rows_cols", generator=torch.Generator().manual_seed(2))[0, 0]
    # every output row is a permutation of one input row; same for columns
    rows = {tuple(sorted(r.tolist())) for r in x[0, 0]}
    cols = {tuple(sorted(c.tolist())) for c in x[0, 0].T}
    assert {tuple(sorted(r.tolist())) for r in out} == rows
    assert {tuple(sorted(c.tolist())) for c in out.T} == cols


def test_patch_shuffle_uneven_division_rule():
    # rows_cols: 7 rows in 3 parts: sizes 3, 2, 2 (the first n mod k parts are one longer); the strips move
    # with their sizes, so every output is a concatenation of the three strips in some order
    import itertools
    strips = [[0.0, 1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    layouts = {tuple(sum((strips[i] for i in p), [])) for p in itertools.permutations(range(3))}
    x = torch.arange(7.0).view(1, 1, 7, 1).expand(1, 1, 7, 3).contiguous()
    seen = set()
    for s in range(40):
        out = patch_shuffle(x, 3, mode="rows_cols", generator=torch.Generator().manual_seed(s))[0, 0, :, 0]
        assert tuple(out.tolist()) in layouts
        seen.add(tuple(out.tolist()))
    assert seen == layouts
    # full mode: nine 2x2 patches from the top-left corner, the remainder band (last row and column) fixed
    y = torch.arange(49.0).view(1, 1, 7, 7).repeat(20, 1, 1, 1)
    out = patch_shuffle(y, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, 6], y[:, :, 6]) and torch.equal(out[:, :, :, 6], y[:, :, :, 6])
    patches = {tuple(y[0, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2].flatten().tolist()) for i in range(3) for j in range(3)}
    for b in range(20):
        got = {tuple(out[b, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2].flatten().tolist()) for i in range(3) for j in range(3)}
        assert got == patches


def test_patch_shuffle_full_uneven_grid_is_uniform():
    # k = 3 on 32 px: every one of the 9 patches moves as in a uniform permutation (1/9 of the patches in
    # place on average), none is pinned; the old rule (patches trade only with patches of their shape)
    # left 45 % in place and never moved the bottom-right patch
    B, k, n = 400, 3, 32
    x = torch.zeros(B, 1, n, n)
    _, index = patch_shuffle(x, k, generator=torch.Generator().manual_seed(0), return_index=True)
    q = n // k
    corners = torch.tensor([(i * q) * n + j * q for i in range(k) for j in range(k)])  # top-left pixel of a patch
    src = index[:, corners]  # source pixel shown at each patch's top-left corner
    in_place = (src == corners).float()
    assert abs(in_place.mean().item() - 1 / 9) < 0.03
    assert in_place[:, -1].mean() < 0.2  # the bottom-right patch moves
    src_patch = (src // n // q) * k + (src % n) // q
    counts = torch.bincount(src_patch[:, -1], minlength=9)
    assert counts.min() > 0.5 * B / 9  # ... to any of the 9 places


def test_patch_shuffle_same_permutations_when_k_divides():
    # k dividing the side: the rule above is the plain grid, and the permutations drawn from a seed are
    # those of earlier versions (same random keys): reference computed by hand
    x = torch.arange(16.0).view(1, 1, 4, 4)
    g = torch.Generator().manual_seed(7)
    perm = torch.argsort(torch.rand(1, 4, generator=torch.Generator().manual_seed(7)).double(), dim=1)[0]
    out = patch_shuffle(x, 2, generator=g)[0, 0]
    for slot in range(4):
        src = int(perm[slot])
        r, c = divmod(slot, 2)
        sr, sc = divmod(src, 2)
        assert torch.equal(out[2 * r:2 * r + 2, 2 * c:2 * c + 2], x[0, 0, 2 * sr:2 * sr + 2, 2 * sc:2 * sc + 2])


def test_patch_shuffle_bad_arguments():
    x = _imgs(H=8, W=8)
    for k in (0, 9, 2.0, True):
        with pytest.raises((TypeError, ValueError), match="k must"):  # TypeError: not an integer
            patch_shuffle(x, k)
    with pytest.raises(ValueError, match="mode"):
        patch_shuffle(x, 2, mode="rows")


# ---------------------------------------------------------------------------------------- mask patches
@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_mask_fraction_exact(fraction):
    x = _imgs(B=5, H=16, W=16) + 0.5  # no zero pixels
    out, mask = mask_patches(x, 4, fraction, generator=torch.Generator().manual_seed(0), return_mask=True)
    assert mask.shape == (5, 1, 16, 16)
    assert torch.equal(mask.float().mean(dim=(1, 2, 3)), torch.full((5,), fraction))
    assert torch.equal((out == 0).all(1, keepdim=True), mask)
    assert torch.equal(out[~mask.expand_as(out)], x[~mask.expand_as(x)])


def test_mask_per_image_fraction_partial_tiles_and_fills():
    x = _imgs(B=3, H=10, W=10) + 0.5
    out, mask = mask_patches(x, 4, torch.tensor([0.0, 1 / 9, 1.0]), return_mask=True)  # 3x3 tiles, edges of 2
    assert mask[0].sum() == 0 and mask[2].all()
    assert mask[1].sum() in (16, 8, 4)  # one tile: full, edge or corner
    mean_fill = mask_patches(x, 5, 1.0, fill="mean")  # default: the CIFAR-10 mean for 3 channels
    assert torch.allclose(mean_fill, torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1).expand_as(x))
    val = mask_patches(x, 5, 1.0, fill=torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(val[:, 1], torch.full_like(val[:, 1], 0.2))
    noisy = mask_patches(x, 5, 0.5, fill="noise", generator=torch.Generator().manual_seed(0))
    assert noisy.shape == x.shape and not torch.equal(noisy, x)
    blur = mask_patches(x, 5, 1.0, fill="blur", blur_sigma=1.0)
    assert torch.allclose(blur, gaussian_blur(x, 1.0))


def test_mask_saliency_order_masks_most_salient_first():
    x = _imgs(B=2, H=8, W=8) + 0.5
    sal = torch.zeros(2, 8, 8)
    sal[0, 4:, 4:] = 1.0  # bottom-right tile of 4x4
    sal[1, :4, :4] = 1.0
    _, mask = mask_patches(x, 4, 0.25, order="saliency", saliency=sal, return_mask=True)
    assert mask[0, 0, 4:, 4:].all() and mask[0].sum() == 16
    assert mask[1, 0, :4, :4].all() and mask[1].sum() == 16


def test_mask_bad_arguments():
    x = _imgs(H=8, W=8)
    with pytest.raises(ValueError, match="fraction"):
        mask_patches(x, 2, 1.5)
    with pytest.raises(ValueError, match="fill"):
        mask_patches(x, 2, 0.5, fill="gray")
    with pytest.raises(ValueError, match="order"):
        mask_patches(x, 2, 0.5, order="best")
    with pytest.raises(ValueError, match="saliency"):
        mask_patches(x, 2, 0.5, order="saliency")
    with pytest.raises(ValueError, match="patch"):
        mask_patches(x, 0, 0.5)


def test_mask_fill_does_not_depend_on_the_batch():
    # fill="mean" used the batch's mean: the same image got another fill in a batch of 64 and of 8
    x = _imgs(B=64, H=8, W=8)
    for fill in ("mean", "zeros", "zero"):
        big = mask_patches(x, 4, 0.5, fill=fill, generator=torch.Generator().manual_seed(0))
        small = mask_patches(x[:8], 4, 0.5, fill=fill, generator=torch.Generator().manual_seed(0))
        assert torch.equal(big[:8], small)
    mean = (0.1, 0.2, 0.3)
    out, mask = mask_patches(x, 4, 0.5, fill="mean", mean=mean, return_mask=True)
    assert torch.allclose(out[:, 1][mask[:, 0]], torch.tensor(0.2))
    gray = _imgs(B=2, C=1, H=8, W=8)
    with pytest.raises(ValueError, match="mean"):  # no default mean for 1 channel
        mask_patches(gray, 4, 0.5, fill="mean")
    assert torch.allclose(mask_patches(gray, 4, 1.0, fill="mean", mean=[0.5]), torch.full_like(gray, 0.5))
    with pytest.raises(ValueError, match="std"):
        mask_patches(gray, 4, 0.5, fill="noise", mean=[0.5])


def test_mask_noise_fill_clipped_to_the_image_range():
    x = _imgs(B=16, H=8, W=8)
    out = mask_patches(x, 2, 1.0, fill="noise", std=(2.0, 2.0, 2.0), generator=torch.Generator().manual_seed(0))
    assert out.min() == 0.0 and out.max() == 1.0  # wide noise: clipped at both ends
    u = (x * 255).to(torch.uint8)
    ou = mask_patches(u, 2, 1.0, fill="mean")  # integer images: the mean is scaled to 0..255
    assert ou.dtype == torch.uint8 and ou[:, 0].float().mean().item() == pytest.approx(round(0.4914 * 255), abs=0.5)


def test_integer_arguments_accept_numpy_integers():
    x = _imgs(H=8, W=8)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(patch_shuffle(x, np.int64(2), generator=g()), patch_shuffle(x, 2, generator=g()))
    assert torch.equal(patch_shuffle(x, torch.tensor(2), generator=g()), patch_shuffle(x, 2, generator=g()))
    assert torch.equal(mask_patches(x, np.int32(4), 0.5, generator=g()), mask_patches(x, 4, 0.5, generator=g()))
    assert torch.equal(pixelate(x, np.int64(2)), pixelate(x, 2))
    assert resize(x, np.int64(4)).shape == (3, 3, 4, 4)
    assert resize(x, (np.int64(4), 6)).shape == (3, 3, 4, 6)


# ---------------------------------------------------------------------------------------------- resize
@pytest.mark.parametrize("interp", ["bilinear", "nearest", "area", "bicubic"])
def test_resize_same_size_identity_and_shapes(interp):
    x = _imgs(H=16, W=16)
    assert torch.equal(resize(x, 16, interpolation=interp), x)
    assert resize(x, 8, interpolation=interp).shape == (3, 3, 8, 8)
    assert resize(x, (20, 24), interpolation=interp).shape == (3, 3, 20, 24)


def test_resize_antialias_and_blur():
    # a checkerboard aliases to a constant-ish pattern without antialias; with it, it averages to 0.5
    x = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float().view(1, 1, 16, 16)
    aa = resize(x, 4, antialias=True)
    assert torch.allclose(aa, torch.full_like(aa, 0.5), atol=0.05)
    assert torch.equal(resize(x, 8, interpolation="area"), torch.full((1, 1, 8, 8), 0.5))
    blurred = resize(x, 16, blur_sigma=1.0)
    assert torch.allclose(blurred, gaussian_blur(x, 1.0))
    assert blurred.std() < x.std() / 5
    # kernel size 2*ceil(3 sigma)+1: a delta spreads exactly that far
    d = torch.zeros(1, 1, 21, 21)
    d[0, 0, 10, 10] = 1.0
    b = gaussian_blur(d, 1.2)
    r = math.ceil(3 * 1.2)
    assert (b[0, 0, 10] > 0).sum() == 2 * r + 1
    assert b.sum() == pytest.approx(1.0, abs=1e-5)


def test_resize_and_pixelate_bad_arguments():
    x = _imgs()
    with pytest.raises(ValueError, match="interpolation"):
        resize(x, 8, interpolation="lanczos")
    with pytest.raises(ValueError, match="size"):
        resize(x, 0)
    with pytest.raises(ValueError, match="blur_sigma"):
        resize(x, 8, blur_sigma=-1.0)
    with pytest.raises(ValueError, match="factor"):
        pixelate(x, 0)
    with pytest.raises(TypeError, match="factor"):
        pixelate(x, 2.5)


def test_pixelate_blocks():
    x = _imgs(H=8, W=8)
    assert torch.equal(pixelate(x, 1), x)
    p = pixelate(x, 2)
    assert p.shape == x.shape
    blocks = x.view(3, 3, 4, 2, 4, 2).mean(dim=(3, 5))
    assert torch.allclose(p, blocks.repeat_interleave(2, 2).repeat_interleave(2, 3), atol=1e-6)
    assert pixelate(_imgs(H=10, W=10), 3).shape == (3, 3, 10, 10)
