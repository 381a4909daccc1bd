"""Tests of stabkit.laplacian (book/methods.md, "Grid-Laplacian spectra of filters")."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from stabkit.laplacian import filter_spectra, grid_laplacian, laplacian_eigenvectors, laplacian_projection


@pytest.mark.parametrize("n", [2, 3, 5])
def test_eigenvalues_closed_form(n):
    _, values = laplacian_eigenvectors(n)
    expected = sorted(4 - 2 * math.cos(math.pi * a / n) - 2 * math.cos(math.pi * b / n)
                      for a, b in itertools.product(range(n), repeat=2))
    np.testing.assert_allclose(values, expected, atol=1e-12)
    assert values.dtype == np.float64


def test_eigenvalues_n3_explicit():
    _, values = laplacian_eigenvectors(3)
    np.testing.assert_allclose(values, [0, 1, 1, 2, 3, 3, 4, 4, 6], atol=1e-12)


def test_grid_laplacian_structure():
    lap = grid_laplacian(3)
    np.testing.assert_array_equal(np.diag(lap), [2, 3, 2, 3, 4, 3, 2, 3, 2])
    np.testing.assert_allclose(lap.sum(1), 0)
    assert lap[0, 1] == -1 and lap[0, 3] == -1 and lap[0, 4] == 0 and lap[2, 3] == 0  # no wrap-around


@pytest.mark.parametrize("n", [3, 5])
def test_eigenvectors_orthonormal_and_eigen(n):
    psi, values = laplacian_eigenvectors(n)
    assert psi.shape == (n * n, n, n)
    flat = psi.reshape(n * n, n * n)
    np.testing.assert_allclose(flat @ flat.T, np.eye(n * n), atol=1e-12)
    np.testing.assert_allclose(grid_laplacian(n) @ flat.T, flat.T * values, atol=1e-12)
    np.testing.assert_allclose(psi[0], np.full((n, n), 1 / n), atol=1e-12)  # constant mode, positive


def test_projection_sums_to_mean_squared_norm():
    w = torch.randn(7, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    proj = laplacian_projection(w.reshape(-1, 3, 3))
    assert proj.shape == (9,)
    np.testing.assert_allclose(proj.sum(), (w.double() ** 2).sum((2, 3)).mean().item(), rtol=1e-12)
    # numpy input gives the same
    np.testing.assert_allclose(laplacian_projection(w.reshape(-1, 3, 3).numpy()), proj, rtol=1e-6)


def test_constant_filter_all_energy_at_zero():
    proj = laplacian_projection(2.5 * np.ones((3, 3, 3)))
    np.testing.assert_allclose(proj[0], 9 * 2.5 ** 2)
    np.testing.assert_allclose(proj[1:], 0, atol=1e-20)


def test_checkerboard_energy_at_top():
    psi, _ = laplacian_eigenvectors(3)
    proj = laplacian_projection(psi[-1][None])  # an eigenvector projects only on itself
    np.testing.assert_allclose(proj, np.eye(9)[-1], atol=1e-12)


def test_projection_bad_shape():
    with pytest.raises(ValueError, match="filters"):
        laplacian_projection(np.zeros((4, 3, 2)))
    with pytest.raises(ValueError, match="filters"):
        laplacian_projection(np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match="n must"):
        laplacian_eigenvectors(0)


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 5, padding=2)
        self.skip = nn.Conv2d(6, 6, 1)          # 1x1: skipped
        self.rect = nn.Conv2d(6, 2, (3, 1))     # non-square: skipped
        self.c3 = nn.Conv2d(6, 8, 3, groups=2)

    def forward(self, x):
        return self.c3(self.skip(self.c2(self.c1(x))))


def test_filter_spectra_rows_and_fractions():
    torch.manual_seed(0)
    model = _Small()
    with torch.no_grad():
        model.c1.weight.fill_(0.3)  # constant filters: everything at eigenvalue 0
    df = filter_spectra(model)
    assert list(df.columns) == ["layer", "depth", "rel_depth", "kernel_size", "eigenvalue", "energy",
                                "fraction"]
    # 3x3 grid: 6 distinct eigenvalues; 5x5 grid: distinct values of 4-2cos(pi a/5)-2cos(pi b/5)
    n5 = len({round(4 - 2 * math.cos(math.pi * a / 5) - 2 * math.cos(math.pi * b / 5), 8)
              for a in range(5) for b in range(5)})
    assert df.groupby("layer", sort=False).size().to_dict() == {"c1": 6, "c2": n5, "c3": 6}
    assert df.groupby("layer")["depth"].first().to_dict() == {"c1": 1, "c2": 2, "c3": 3}
    np.testing.assert_allclose(df.groupby("layer")["fraction"].sum(), 1.0)
    assert df.groupby("layer")["rel_depth"].first().to_dict() == {"c1": 1 / 3, "c2": 2 / 3, "c3": 1.0}
    c1 = df[df.layer == "c1"]
    np.testing.assert_allclose(c1.fraction.to_numpy(), np.eye(6)[0], atol=1e-12)
    np.testing.assert_allclose(c1.energy.iloc[0], 9 * 0.3 ** 2)
    # degenerate eigenvalues are summed: energies per layer equal the projection summed by eigenvalue
    proj = laplacian_projection(model.c3.weight.reshape(-1, 3, 3))
    c3 = df[df.layer == "c3"]
    np.testing.assert_allclose(c3.eigenvalue.to_numpy(), [0, 1, 2, 3, 4, 6], atol=1e-9)
    np.testing.assert_allclose(c3.energy.to_numpy(),
                               [proj[0], proj[1] + proj[2], proj[3], proj[4] + proj[5], proj[6] + proj[7],
                                proj[8]], rtol=1e-12)


def test_filter_spectra_random_init_is_flat_ish():
    # Kaiming-uniform slices are i.i.d. entries: every eigenvector gets the same expected energy.
    conv = nn.Conv2d(64, 64, 3)
    df = filter_spectra(nn.Sequential(conv))
    degeneracy = np.array([1, 2, 1, 2, 2, 1])
    np.testing.assert_allclose(df.fraction.to_numpy() / degeneracy, 1 / 9, rtol=0.1)
    assert len(df) == 6 and df.rel_depth.iloc[0] == 1.0


def test_filter_spectra_no_conv_and_bad_model():
    assert filter_spectra(nn.Linear(3, 3)).empty
    with pytest.raises(ValueError, match="model"):
        filter_spectra("vgg11")
