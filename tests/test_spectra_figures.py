"""Fig. 2's figure functions (stabkit.report.spectra_figures) on synthetic spectra (Agg backend)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from stabkit.report import spectra_figures

from synthetic_tables import EIGEN_3


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def spectra_table() -> pd.DataFrame:
    rows = []
    for net in ("VGG11", "LeNet"):
        for i in range(3):
            for state in ("init", "trained"):
                for lam, mult in EIGEN_3.items():
                    frac = mult / 9 if state == "init" else (0.7 if lam == 0 else 0.3 * mult / 8)
                    rows.append({"net": net, "seed": 0, "layer": f"c{i}", "depth": i, "rel_depth": i / 2,
                                 "kernel_size": 3, "eigenvalue": lam, "energy": frac, "fraction": frac,
                                 "state": state})
    return pd.DataFrame(rows)


def test_laplacian_multiplicities():
    assert spectra_figures.laplacian_multiplicities(3) == EIGEN_3
    m5 = spectra_figures.laplacian_multiplicities(5)
    assert sum(m5.values()) == 25 and m5[0.0] == 1
    with pytest.raises(ValueError, match="k"):
        spectra_figures.laplacian_multiplicities(0)


def test_filter_spectra_flat_init_is_horizontal():
    fig = spectra_figures.filter_spectra(spectra_table())
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 2 and axes[0].get_yscale() == "log"
    init_lines = [l for l in axes[0].lines if l.get_linestyle() == ":"]
    assert len(init_lines) == 3
    for l in init_lines:
        np.testing.assert_allclose(l.get_ydata(), 1 / 9)  # per eigenvector: flat
    trained = [l for l in axes[0].lines if l.get_linestyle() == "-" and len(l.get_xdata()) == 6]
    assert trained[0].get_ydata()[0] == pytest.approx(0.7)


def test_filter_spectra_from_energy_only():
    sp = spectra_table().drop(columns="fraction")
    sp["energy"] *= 3.0
    fig = spectra_figures.filter_spectra(sp, value="fraction")
    init_lines = [l for l in fig.axes[0].lines if l.get_linestyle() == ":"]
    np.testing.assert_allclose(init_lines[0].get_ydata(), 1 / 9)
    with pytest.raises(ValueError, match="value"):
        spectra_figures.filter_spectra(sp, value="power")


def test_zero_mode_profile():
    fig = spectra_figures.zero_mode_profile(spectra_table())
    ax = fig.axes[0]
    assert len([l for l in ax.lines if l.get_linestyle() in ("-", ":")]) == 4
    assert ax.get_yscale() == "log"


def test_filter_spectra_wraps_panels():
    sp = pd.concat([spectra_table().assign(net=f"net{i}") for i in range(5)])
    fig = spectra_figures.filter_spectra(sp, max_cols=2)
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert len(visible) == 5
    assert len(fig.axes) == 6
    with pytest.raises(ValueError, match="max_cols"):
        spectra_figures.filter_spectra(sp, max_cols=0)
