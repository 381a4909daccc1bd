"""The perturbations page's figures (stabkit.report.perturbation_figures) on small generated images (Agg backend)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from stabkit.report import perturbation_figures
from stabkit.transforms import diffeo_batch, noisy_batch, temperature_range


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _images(n: int = 3, side: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_image_row_and_perturbation_grid():
    x = _images()
    fig = perturbation_figures.image_row(x, ["a", "b", "c"])
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    g = torch.Generator().manual_seed(0)
    x_tau = diffeo_batch(x, delta=1.0, cut=3, generator=g)
    fig = perturbation_figures.perturbation_grid(x, x_tau, noisy_batch(x, x_tau, generator=g))
    assert len(fig.axes) == 4 * 3 and fig.axes[0].get_ylabel() == "clean"


def test_temperature_grid_is_seeded():
    img = _images(1)
    a = perturbation_figures.temperature_grid(img, [3], n_T=2, seed=0)
    b = perturbation_figures.temperature_grid(img, [3], n_T=2, seed=0)
    assert len(a.axes) == 2 * 3
    np.testing.assert_array_equal(a.axes[1].images[0].get_array(), b.axes[1].images[0].get_array())


def test_temperature_plane_and_displacement_check():
    cs = np.arange(2, 10)
    tmin = np.array([temperature_range(16, int(c))[0] for c in cs])
    tmax = np.array([temperature_range(16, int(c))[1] for c in cs])
    fig = perturbation_figures.temperature_plane(cs, tmin, tmax, 16)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_title() == "16 x 16 images"
    disp = pd.DataFrame({"cut": [3, 3, 6, 6], "T": [1e-3, 1e-2] * 2, "measured": [0.5, 1.5, 0.6, 1.8],
                         "formula": [0.5, 1.6, 0.6, 1.9]})
    assert len(perturbation_figures.displacement_check(disp).axes[0].lines) == 4
