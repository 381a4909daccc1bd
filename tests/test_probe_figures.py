"""The probe pages' figure functions (stabkit.report.probe_figures) on synthetic tables (Agg backend)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from stabkit.report import figures as plots, probe_figures as pf

from synthetic_tables import legend_outside, layers_table


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_probe_figures_draw():

    curves = pd.DataFrame([dict(net=n, training=t, variant=v, magnitude=m, mean=50.0 - m, sd=1.0, n=2)
                           for n in ("LeNet", "VGG11bn") for t in ("unrotated", "rotated")
                           for v in ("a", "b") for m in (0.0, 0.5, 0.9)])
    fig = pf.accuracy_vs_magnitude(curves, style="variant", xlabel="fraction")
    assert len(fig.axes) == 2
    grid = pd.DataFrame([dict(source=s, target=t, acc_ootb_mean=50.0, delta_mean=float(t - s))
                         for s in (16, 32) for t in (16, 32)])
    assert len(pf.transfer_heatmaps(grid).axes) == 2
    assert pf.nv_strip_image(np.array([3.0, 1.0, np.inf]), width=4).tolist()[-1] == np.inf


def test_legends_are_off_the_data():

    assert legend_outside(plots.layer_profiles(layers_table()))
    assert legend_outside(plots.training_curves(pd.DataFrame(
        {"net": ["VGG11"] * 3, "seed": 0, "epoch": [1, 2, 3], "test_err": [0.9, 0.5, 0.3]})))
    both = pd.DataFrame([dict(net=n, training=t, rel_depth=d / 4, mean_NV=0.5 + d / 10, log10_R=-d / 4, run=n)
                         for n in ("LeNet", "VGG11bn") for t in ("unrotated", "rotated") for d in range(5)])
    assert legend_outside(pf.nv_vs_rk(both))
    assert legend_outside(pf.nv_rk_profile(both))


def test_nv_strip_labels_readable():

    acts = pd.DataFrame([dict(layer=f"features.conv{i}", depth=i, NV=v) for i in range(4) for v in (0.1, 0.5, 2.0)])
    fig, ax = plt.subplots()
    pf.plot_nv_strips(acts, ax=ax)
    labels = ax.get_yticklabels()
    assert [t.get_text() for t in labels] == ["conv0", "conv1", "conv2", "conv3"]
    assert min(t.get_fontsize() for t in labels) >= 7


def test_pixelation_curves_no_minor_ticks():

    curves = pd.DataFrame([dict(resampling="bilinear", source=16, magnitude=m, mean=50.0 - m, sd=1.0)
                           for m in (1.0, 2.0, 4.0, 8.0)])
    ax = pf.pixelation_curves(curves).axes[0]
    assert not len(ax.xaxis.get_minorticklocs())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
