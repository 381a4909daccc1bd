"""One colour and marker per architecture (stabkit.report.palette)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from stabkit.report import palette


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_palette_covers_every_network_with_distinct_styles():
    from stabkit import nets

    names = nets.list_models()
    assert set(names) <= set(palette.NET_STYLES) | {n for n in names if n.split("-")[-1] in palette.NET_STYLES}
    colours = [c for c, _ in palette.NET_STYLES.values()]
    assert len(set(colours)) == len(colours), "two architectures share a colour"
    assert palette.net_style("LowRes-ResNet18") == palette.net_style("ResNet18")
    assert palette.net_style("SomethingNew") == palette.net_style("SomethingNew")  # fixed, also for unknowns
