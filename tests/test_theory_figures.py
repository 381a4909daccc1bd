"""The constant-filter theory page's figures (stabkit.report.theory_figures) on small toy networks (Agg backend)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from stabkit import theory
from stabkit.report import theory_figures


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


CASES = {"stride 1 (filter 3)": (3, 1, 6), "stride = filter = 2": (2, 2, 4)}


def _tables() -> dict[str, pd.DataFrame]:
    return {name: theory.constant_filter_stabilities(k, s, L, seeds=1) for name, (k, s, L) in CASES.items()}


def test_stabilities_and_laws_one_panel_per_case():
    raw = theory_figures.raw_stabilities(_tables(), CASES)
    panels = [ax for ax in raw.axes if ax.lines]
    assert isinstance(raw, Figure) and len(panels) == 2 and len(panels[0].lines) == 3
    assert panels[0].get_xscale() == "log" and panels[1].get_xscale() == "linear"  # power law / exponential law
    laws = theory_figures.stability_laws(_tables(), CASES)
    assert [len(ax.lines) for ax in laws.axes if ax.lines] == [6, 6]  # D, G, R: dots and the predicted dashes


def test_bias_effect_one_line_per_bias_and_sign():
    rows = [{"sign": s, "|bias|": b, "eta": e, "G_f / eta^2": 1.0 + b} for s in (1, -1) for b in (0.0, 0.1)
            for e in (0.1, 1.0)]
    fig = theory_figures.bias_effect(pd.DataFrame(rows), [0.0, 0.1])
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]


def test_receptive_fields_and_spreads():
    fig = theory_figures.receptive_fields(np.arange(0, 5), [(3, 1), (2, 2)])
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].get_yscale() == "log"
    fig = theory_figures.spreads([(3, 1, 2), (2, 2, 2)])
    assert len([ax for ax in fig.axes if ax.images]) == 2
