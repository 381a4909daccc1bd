"""Figure functions (stabkit.report.figures) on small synthetic tidy tables (fast, Agg backend, no networks)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from stabkit.report import figures as plots, palette

from synthetic_tables import legend_outside, layers_table


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def output_table(marker: str = "noise_std") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i, net in enumerate(["VGG11", "LeNet", "FC2"]):
        for seed in (0, 1):
            for m in ((0.0, 1.0, 10.0) if marker == "noise_std" else (1024, 2048)):
                r = 10 ** (-2 + 0.5 * i + rng.normal(0, 0.1))
                err = 0.2 * np.sqrt(r)
                for state, rr in (("init", 1.0), ("trained", r)):
                    rows.append({"net": net, "seed": seed, marker: m, "state": state, "shuffle": 0,
                                 "D_f": rr * 0.1, "G_f": 0.1, "R_f": rr,
                                 "test_err": err if state == "trained" else 0.9})
    return pd.DataFrame(rows)


def _points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections)


def test_sensitivity_vs_error_panels_and_points():
    out = output_table()
    fig = plots.sensitivity_vs_error(out)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.collections]
    assert len(axes) == 3
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert _points(ax) == len(out)  # every run trained + init
    assert "R_f" in axes[2].get_ylabel()
    labels = [t.get_text() for t in axes[2].get_legend().get_texts()]
    assert {"VGG11", "LeNet", "FC2", "trained", "initialisation"} <= set(labels)


def test_sensitivity_vs_error_init_drawn_at_trained_error():
    out = output_table()
    fig = plots.sensitivity_vs_error(out, quantities=["R_f"], states=["init"], law=False)
    xs = np.concatenate([c.get_offsets()[:, 0] for c in fig.axes[0].collections])
    assert np.all(xs < 0.5)  # the trained errors, not the 0.9 of the init rows
    fig = plots.sensitivity_vs_error(out, quantities=["R_f"], states=["init"], law=False,
                                     init_at_trained_error=False)
    xs = np.concatenate([c.get_offsets()[:, 0] for c in fig.axes[0].collections])
    np.testing.assert_allclose(xs, 0.9)


def test_sensitivity_vs_error_drops_nonpositive_and_other_marker():
    out = output_table(marker="ptr")
    out.loc[0, "R_f"] = 0.0
    fig = plots.sensitivity_vs_error(out, quantities=["R_f"], marker="ptr")
    assert _points(fig.axes[0]) == len(out) - 1


def test_sensitivity_vs_error_marker_legend_only_when_it_tells_runs_apart():
    out = output_table(marker="ptr")
    labels = lambda fig: [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]  # noqa: E731
    assert {"1024", "2048"} <= set(labels(plots.sensitivity_vs_error(out, quantities=["R_f"], marker="ptr")))
    one = labels(plots.sensitivity_vs_error(out[out.ptr == 1024], quantities=["R_f"], marker="ptr"))
    assert "1024" not in one and not any("P" in t for t in one) and {"VGG11", "trained"} <= set(one)


def test_sensitivity_vs_error_into_given_axes():
    fig, axes = plt.subplots(1, 2)
    got = plots.sensitivity_vs_error(output_table(), quantities=["G_f", "R_f"], axes=axes)
    assert got is fig and _points(axes[0]) > 0


def test_sensitivity_vs_error_rejects_bad_input():
    with pytest.raises(ValueError, match="output"):
        plots.sensitivity_vs_error(output_table().drop(columns="R_f"))
    with pytest.raises(ValueError, match="states"):
        plots.sensitivity_vs_error(output_table(), states=["final"])
    with pytest.raises(ValueError, match="empty"):
        plots.sensitivity_vs_error(output_table().iloc[:0])


def test_layer_profiles_lines_and_styles():
    lay = layers_table()
    fig = plots.layer_profiles(lay)
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 3
    ax = axes[2]
    assert ax.get_yscale() == "log"
    assert len(ax.lines) == 2 * 3  # 2 nets x (trained, shuffled, init)
    styles = {l.get_linestyle() for l in ax.lines}
    assert styles == {"-", "--", ":"}
    # geometric mean over seeds: trained R at the last layer = 10**-1
    trained = [l for l in ax.lines if l.get_linestyle() == "-"][0]
    assert trained.get_ydata()[-1] == pytest.approx(0.1)
    assert list(trained.get_xdata()) == sorted(trained.get_xdata())


def test_layer_profiles_one_column_per_net_and_missing_variant():
    lay = layers_table(("VGG11", "VGG11bn", "VGG13bn"))
    lay = lay[lay["shuffle"] == 0]  # no shuffled runs
    fig = plots.layer_profiles(lay, quantities=["R_f"], col="net")
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 3
    assert {ax.get_title() for ax in axes} == {"VGG11", "VGG11bn", "VGG13bn"}
    assert all(len(ax.lines) == 2 for ax in axes)
    with pytest.raises(ValueError, match="col"):
        plots.layer_profiles(lay, col="nope")


def test_training_curves_one_line_per_run():
    rows = [{"net": n, "seed": s, "epoch": e, "test_err": 0.9 / (e + 1)}
            for n in ("A", "B") for s in (0, 1) for e in range(5)]
    fig = plots.training_curves(pd.DataFrame(rows))
    assert len(fig.axes[0].lines) == 4


def test_training_curves_log_epochs_when_run_lengths_differ_much():
    def curves(lengths):
        rows = [{"net": n, "seed": 0, "epoch": e, "test_err": 0.9 / e} for n, k in lengths.items()
                for e in range(1, k + 1)]
        return plots.training_curves(pd.DataFrame(rows)).axes[0].get_xscale()
    assert curves({"A": 15, "LeNet": 250}) == "log"  # 15 epochs would be squeezed into 6 % of a linear axis
    assert curves({"A": 15, "B": 25}) == "linear"


def test_training_cost_one_line_per_architecture_noise_free_runs_only():
    from stabkit.report.palette import net_style

    runs = pd.DataFrame({"net": ["VGG11bn", "VGG11bn", "ResNet18", "VGG11bn"], "width": [0.25, 0.5, 0.25, 0.5],
                         "noise": [0.0, 0.0, 0.0, 30.0], "epochs": ["15", "41 of 60", "20", "20"],
                         "best error (%)": [20.2, 9.5, 14.6, 30.0], "core-hours": [0.6, 4.0, 2.0, 1.8]})
    ax = plots.training_cost(runs).axes[0]
    lines = {ln.get_label(): ln for ln in ax.lines}
    assert set(lines) == {"VGG11bn", "ResNet18"} and list(lines["VGG11bn"].get_ydata()) == [20.2, 9.5]
    assert lines["VGG11bn"].get_color() == net_style("VGG11bn")[0]
    assert sorted(t.get_text() for t in ax.texts) == ["1/2 x 41", "1/4 x 15", "1/4 x 20"]
    assert ax.get_xlabel() == "training time (core-hours)" and ax.get_xscale() == "log"
    with pytest.raises(ValueError, match="core-hours"):
        plots.training_cost(runs.drop(columns="core-hours"))


def test_log_axes_spanning_less_than_a_decade_have_labels():
    out = output_table()
    out["test_err"] = np.where(out["state"] == "trained", 0.30 + 0.01 * out["seed"], 0.9)
    fig = plots.sensitivity_vs_error(out, quantities=["R_f"], law=False)
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    labels = [t.get_text() for t, v in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= v <= hi]
    assert len([l for l in labels if l]) >= 3
    # Fig. 1 at the cpu scale: trained errors 0.19-0.45 got the two labels 0.2 and 0.4 only
    seeds = out["seed"] / max(out["seed"].max(), 1)
    out["test_err"] = 0.19 + 0.26 * seeds
    fig = plots.sensitivity_vs_error(out, quantities=["R_f"], law=False)
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert len([t for t, v in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= v <= hi and t.get_text()]) >= 3


def test_training_curves_style_legend():
    rows = [{"net": "A", "seed": 0, "noise_std": n, "epoch": e, "test_err": 0.9 / (e + 1 + n)}
            for n in (0.0, 30.0) for e in range(3)]
    fig = plots.training_curves(pd.DataFrame(rows), style="noise_std")
    ax = fig.axes[0]
    assert {l.get_linestyle() for l in ax.lines} == {"-", "--"}
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "0.0" in labels and "30.0" in labels


def test_same_net_same_colour_on_every_figure():
    from matplotlib.colors import to_hex


    fig = plots.sensitivity_vs_error(output_table(), quantities=["R_f"])
    pts = fig.axes[0].collections
    seen = {to_hex(c.get_facecolor()[0]) for c in pts if len(c.get_facecolor())}
    assert to_hex(palette.net_style("VGG11")[0]) in seen
    fig2 = plots.layer_profiles(layers_table(), quantities=["R_f"])
    lines = {to_hex(ln.get_color()) for ln in fig2.axes[0].lines}
    assert to_hex(palette.net_style("VGG11")[0]) in lines


def test_sensitivity_vs_error_shares_the_error_axis():
    """Fig. 1 / Fig. 5: the three panels have the same error axis (limits and labelled ticks), and the law
    line of the R_f panel does not widen it."""
    fig = plots.sensitivity_vs_error(output_table())
    axes = [ax for ax in fig.axes if ax.collections]
    lims = {tuple(np.round(ax.get_xlim(), 12)) for ax in axes}
    assert len(lims) == 1
    fig.canvas.draw()
    ticks = [[t.get_text() for t in ax.get_xticklabels() if t.get_text()] for ax in axes]
    assert ticks[0] and all(t == ticks[0] for t in ticks)
    assert legend_outside(fig)


def test_task_states_points_not_bars():
    """Appendix: every run is a point (no log-scale bars), the mean a short horizontal line."""
    out = pd.DataFrame([dict(task_name=f"task {t} (x)", state=s, seed=k, R_f=10.0 ** -k, test_err=0.1 * (k + 1))
                        for t in (1, 2) for s in ("init", "trained") for k in range(3)])
    fig = plots.task_states(out)
    for ax in fig.axes[:2]:
        assert not ax.patches  # no bars
        assert sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets")) >= 12
        assert all("\n" in t.get_text() for t in ax.get_xticklabels())  # long task names wrap


def test_two_points_examples():
    fig = plots.two_points_examples(n=3)
    images = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert len(images) == 3 + 3 + 3
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert all(float(t.split()[-1]) > 15 for t in titles)  # far: beyond xi + gap/2
    assert all(float(ax.get_title().split()[-1]) < 13 for ax in fig.axes[3:6])
    with pytest.raises(ValueError, match="n must be"):
        plots.two_points_examples(n=1)


def test_log_x_axis_labels_do_not_collide():
    """Over ~2 decades on a narrow panel, 1-2-5 ticks wrote "0.0010.002": the x labels must not overlap."""
    out = output_table()
    out["test_err"] = np.where(out["state"] == "trained", 0.001 * 60 ** (out["seed"] / max(out["seed"].max(), 1)),
                               0.06)
    fig = plots.sensitivity_vs_error(out, law=False)
    fig.set_size_inches(12, 3)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:3]:
        lo, hi = ax.get_xlim()
        boxes = [t.get_window_extent(renderer) for t, v in zip(ax.get_xticklabels(), ax.get_xticks())
                 if lo <= v <= hi and t.get_text()]
        assert len(boxes) >= 2
        boxes.sort(key=lambda b: b.x0)
        gap = 0.6 * plt.rcParams["font.size"] * fig.dpi / 72  # about a character: labels must not touch
        assert all(b.x0 - a.x1 >= gap for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in ax.get_xticklabels()]


def test_runs_with_zero_test_error_are_counted_on_the_figure():
    """A run at zero test error cannot sit on the log error axis: the figure says how many are left out."""
    out = output_table()
    fig = plots.sensitivity_vs_error(out, law=False)
    assert not any("not drawn" in t.get_text() for t in fig.texts)
    one = (out["state"] == "trained") & (out["net"] == "VGG11") & (out["seed"] == 0) & (out["noise_std"] == 0.0)
    out.loc[one, "test_err"] = 0.0
    fig = plots.sensitivity_vs_error(out, law=False)
    texts = [t.get_text() for t in fig.texts]
    assert any(t.startswith("not drawn: 1 run with") for t in texts), texts
