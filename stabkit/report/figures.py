"""Figures of the stabilities against the error and through the layers, drawn from tidy run tables, and the
axes, labels and colour maps every figure module shares (:func:`subplots`, :func:`log_ticks`,
``axis_label()``, ``ordered()``, :func:`colours`).

Each function takes tidy run tables (ARCHITECTURE.md, "Run tables") and returns a matplotlib ``Figure``.
Nothing here runs a network: the pages get the tables from :func:`stabkit.report.page.page` and pass them
in. Values that must be logged (sensitivities, test errors, energies) are drawn on log axes; rows with
non-positive or non-finite values are left out of log axes (they cannot be drawn there). Networks are
coloured and marked by :mod:`stabkit.report.palette` (the same on every page). Fig. 2's spectra are in
:mod:`stabkit.report.spectra_figures`, the probe pages' figures in :mod:`stabkit.report.probe_figures`, the
demonstration pages' in :mod:`stabkit.report.perturbation_figures` and :mod:`stabkit.report.theory_figures`.

- ``sensitivity_vs_error(output, ...)``  Fig. 1 / Fig. 5: output ``D_f, G_f, R_f`` against test error.
- ``layer_profiles(layers, ...)``        Fig. 3 / Fig. 6: ``D_k, G_k, R_k`` against relative depth.
- ``training_curves(metrics, ...)``      test error per epoch (a check that the runs trained).
- ``training_cost(runs, ...)``           best test error against training time, per architecture.
- ``block_profiles(profile, ...)``       appendix: block-by-block sensitivities with the theory's law.
- ``task_states(output, ...)``           appendix: output sensitivities per task, at init and trained.
- ``two_points_examples(...)``           Fig. 5: far and close images of the scale-detection task, and
                                         one image with its one-pixel move and the matched noise.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from stabkit.data import TwoPoints, twopoints_probes

from .palette import hue_colours, net_style
from .tables import geomean, require_columns, run_columns

__all__ = [
    "LABELS", "LAYER_LABELS", "VARIANTS", "MARKERS", "colours", "subplots", "log_ticks", "sensitivity_vs_error",
    "layer_profiles", "two_points_examples", "training_curves", "training_cost", "block_profiles", "task_states",
]


#: Axis labels (mathtext) of the table columns.
LABELS = {
    "D_f": r"$D_f$", "G_f": r"$G_f$", "R_f": r"$R_f = D_f / G_f$",
    "test_err": r"test error $\epsilon_t$", "test_err_corrupted": r"test error (noisy test set)",
    "rel_depth": "relative depth", "depth": "layer", "eigenvalue": r"grid-Laplacian eigenvalue $\lambda$",
    "energy": "filter energy", "fraction": "energy fraction", "noise_std": "noise std",
    "ptr": r"$P_\mathrm{train}$", "epoch": "epoch",
}


#: Layer-wise labels used by :func:`layer_profiles`.
LAYER_LABELS = {"D_f": r"$D_k$", "G_f": r"$G_k$", "R_f": r"$R_k = D_k / G_k$"}


#: (label, state, shuffle, linestyle) of the curves drawn by :func:`layer_profiles`.
VARIANTS = (("trained", "trained", 0, "-"), ("shuffled", "trained", 1, "--"), ("init", "init", 0, ":"))


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def ordered(values) -> list:
    """Distinct values of ``values`` (NaN left out) sorted, by their text when they do not compare."""
    vals = list(dict.fromkeys(v for v in values if not (isinstance(v, float) and np.isnan(v))))
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=str)


def colours(values, cmap: str = "tab10") -> dict:
    """One colour per distinct value (in sorted order; ``tab10``, or ``tab20`` beyond 10 values).
    Network names get their fixed palette colour instead (see :func:`~stabkit.report.palette.hue_colours`)."""
    vals = ordered(values)
    name = cmap if len(vals) <= 10 else "tab20"
    cm = plt.get_cmap(name)
    return {v: cm(i % cm.N) for i, v in enumerate(vals)}


def _markers(values) -> dict:
    return {v: MARKERS[i % len(MARKERS)] for i, v in enumerate(ordered(values))}


def axis_label(col: str, layer: bool = False) -> str:
    """The axis label of a table column (:data:`LABELS`; :data:`LAYER_LABELS` with ``layer=True``)."""
    if layer and col in LAYER_LABELS:
        return LAYER_LABELS[col]
    return LABELS.get(col, col)


def require_rows(df: pd.DataFrame, columns: Sequence[str], arg: str) -> None:
    """``ValueError`` naming ``arg`` unless ``df`` holds ``columns`` and at least one row."""
    require_columns(df, columns, arg)
    if df.empty:
        raise ValueError(f"{arg} is empty: nothing to plot")


def subplots(nrows: int, ncols: int, axes=None, width: float = 3.6, height: float = 3.0):
    """``(figure, axes array [nrows, ncols])``: new constrained-layout axes, or the given ``axes``."""
    if axes is not None:
        arr = np.asarray(axes, dtype=object).reshape(nrows, ncols)
        return arr.flat[0].figure, arr
    fig, arr = plt.subplots(nrows, ncols, figsize=(width * ncols + 1.6, height * nrows),
                            squeeze=False, constrained_layout=True)
    return fig, arr


def positive_rows(df: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Rows of ``df`` whose ``cols`` are all finite and > 0 (what a log axis can draw)."""
    ok = np.ones(len(df), dtype=bool)
    for c in cols:
        x = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        ok &= np.isfinite(x) & (x > 0)
    return df[ok]


def _plain_number(v: float, _pos=None) -> str:
    return f"{v:.3g}"


def log_ticks(ax, axes: str = "xy") -> None:
    """Readable ticks on log axes. Matplotlib's default leaves an axis spanning less than a couple of
    decades with one label or none: below one decade use a few evenly spaced ticks, up to 2.5 decades
    ticks at 1, 2, 5 x 10^k (on an x axis beyond 1.5 decades 1, 3 x 10^k, whose labels do not collide),
    both with plain-number labels; beyond, decade labels only."""
    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        if (ax.get_xscale() if name == "x" else ax.get_yscale()) != "log":
            continue
        lo, hi = ax.get_xlim() if name == "x" else ax.get_ylim()
        axis.set_minor_formatter(NullFormatter())
        if not (lo > 0 and hi > 0):
            continue
        span = abs(np.log10(hi / lo))
        if span < 1.0:
            # nbins 4 left two labels on a 0.2-0.45 error axis: ask for at least three
            axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10], min_n_ticks=3))
            axis.set_major_formatter(FuncFormatter(_plain_number))
        elif span < 2.5:
            subs = (1.0, 3.0) if name == "x" and span > 1.5 else (1.0, 2.0, 5.0)
            axis.set_major_locator(LogLocator(base=10, subs=subs))
            axis.set_major_formatter(FuncFormatter(_plain_number))


def sensitivity_vs_error(output: pd.DataFrame, quantities: Sequence[str] = ("D_f", "G_f", "R_f"),
                         error: str = "test_err", hue: str = "net", marker: str | None = "noise_std",
                         states: Sequence[str] = ("trained", "init"), shuffle: int | None = 0,
                         init_at_trained_error: bool = True, law: bool = True, axes=None,
                         xlabel: str | None = None, title: str | None = None) -> Figure:
    """Output sensitivities against test error, one log-log panel per quantity.

    ``output``: the ``output`` run table (columns ``state``, ``error``, ``hue``, the quantities, and
    optionally ``marker`` and ``shuffle``). Colour = ``hue`` (the net), marker = ``marker`` (e.g. the
    training noise std, or ``ptr``), filled = trained, hollow grey-edged = at initialisation. Each run
    is one point. With ``init_at_trained_error`` an initial net is drawn at the test error of the same
    run after training (so that the vertical offset is the effect of training). ``law`` adds the 2021
    reference line ``eps_t = 0.2 sqrt(R_f)`` to the ``R_f`` panel. ``axes``: optional ``len(quantities)``
    axes to draw into. ``xlabel``: label of the error axis (default: from :data:`LABELS`). A run whose
    ``well_trained`` column (:func:`stabkit.report.selection.with_convergence`) is False is crossed out in
    red. Returns the figure.
    """
    quantities = list(quantities)
    if not quantities:
        raise ValueError("quantities must name at least one column, e.g. ('D_f', 'G_f', 'R_f')")
    require_rows(output, quantities + [error, hue, "state"], "output")
    bad = [s for s in states if s not in ("trained", "init")]
    if bad:
        raise ValueError(f"states must be 'trained' and/or 'init', got {bad}")
    df = output
    if shuffle is not None and "shuffle" in df.columns:
        df = df[df["shuffle"] == shuffle]
    # one value (e.g. a single P_train) tells nothing apart: the nets keep their own markers, no legend block
    marker = marker if marker and marker in df.columns and df[marker].nunique(dropna=False) > 1 else None
    df = df.copy()
    if init_at_trained_error and "init" in states:
        keys = [k for k in run_columns(df) if k != error]
        tr = df[df["state"] == "trained"].groupby(keys, dropna=False)[error].mean()
        if len(tr) and keys:
            idx = pd.MultiIndex.from_frame(df[keys]) if len(keys) > 1 else pd.Index(df[keys[0]])
            mapped = tr.reindex(idx).to_numpy()
            is_init = (df["state"] == "init").to_numpy()
            df.loc[is_init, error] = np.where(np.isnan(mapped[is_init]), df.loc[is_init, error],
                                              mapped[is_init])
    cmap = hue_colours(df[hue], hue)
    mmap = _markers(df[marker]) if marker else {}
    fig, arr = subplots(1, len(quantities), axes)
    # One error axis for every panel (the same limits and ticks), spanning the points drawn in any panel.
    drawn = positive_rows(df[df["state"].isin(states)], [error])[error].to_numpy(dtype=np.float64)
    xlim = (drawn.min() / 1.25, drawn.max() * 1.25) if len(drawn) else None
    for ax, q in zip(arr.flat, quantities):
        for state in states:
            sub = positive_rows(df[df["state"] == state], [q, error])
            groups = sub.groupby([hue] + ([marker] if marker else []), dropna=False)
            for key, g in groups:
                key = key if isinstance(key, tuple) else (key,)
                c = cmap[key[0]]
                m = mmap.get(key[1], "o") if marker else (net_style(key[0])[1] if hue == "net" else "o")
                if state == "trained":
                    ax.scatter(g[error], g[q], c=[c], marker=m, s=34, edgecolors="k", linewidths=0.4,
                               zorder=3)
                    if "well_trained" in g.columns:  # collapsed / unconverged: crossed out, listed on the page
                        bad = g[~g["well_trained"].fillna(True).astype(bool)]
                        ax.scatter(bad[error], bad[q], marker="x", c="crimson", s=70, linewidths=1.4, zorder=4)
                else:
                    ax.scatter(g[error], g[q], facecolors="none", edgecolors=[c], marker=m, s=30,
                               linewidths=0.9, alpha=0.8, zorder=2)
        if law and q == "R_f":
            if xlim is not None:  # drawn over the shared error axis only: it must not widen it
                e = np.geomspace(*xlim, 50)
                ax.plot(e, (e / 0.2) ** 2, color="0.5", lw=1, ls="-.", zorder=1, scalex=False)
        if "init" in states and q == "R_f":
            ax.axhline(1.0, color="0.8", lw=0.8, zorder=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if xlim is not None:
            ax.set_xlim(*xlim)
        log_ticks(ax)
        ax.set_xlabel(xlabel or axis_label(error))
        ax.set_ylabel(axis_label(q))
    handles = [Line2D([], [], ls="", marker=net_style(v)[1] if hue == "net" and not marker else "o", color=c,
                      markeredgecolor="k", label=str(v)) for v, c in cmap.items()]
    if marker:
        handles.append(Line2D([], [], ls="", label=f"{axis_label(marker)}:"))
        handles += [Line2D([], [], ls="", marker=m, color="0.3", label=str(v)) for v, m in mmap.items()]
    handles.append(Line2D([], [], ls="", label=""))
    if "trained" in states:
        handles.append(Line2D([], [], ls="", marker="o", color="0.3", label="trained"))
    if "init" in states:
        handles.append(Line2D([], [], ls="", marker="o", markerfacecolor="none", color="0.3",
                              label="initialisation"))
    if "well_trained" in df.columns and not df["well_trained"].fillna(True).astype(bool).all():
        handles.append(Line2D([], [], ls="", marker="x", color="crimson", markeredgewidth=1.4,
                              label="not well trained"))
    if law and "R_f" in quantities:
        handles.append(Line2D([], [], color="0.5", ls="-.", label=r"$\epsilon_t = 0.2\sqrt{R_f}$"))
    arr.flat[len(quantities) - 1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5),
                                         fontsize="small", frameon=False)
    # a run with zero test error has no place on a log axis: say how many are left out (in the bottom
    # right corner, under the legend, so that the panels keep their height)
    err = pd.to_numeric(df[error], errors="coerce")
    zero = df[(df["state"] == "trained").to_numpy() & (err <= 0).to_numpy()]
    n_zero = zero["run"].nunique() if "run" in zero.columns else len(zero)
    if n_zero:
        fig.text(0.995, 0.01, f"not drawn: {n_zero} run{'s' if n_zero > 1 else ''} with {axis_label(error)} = 0",
                 ha="right", va="bottom", fontsize="x-small", color="0.3")
    if title:
        fig.suptitle(title)
    return fig


def layer_profiles(layers: pd.DataFrame, quantities: Sequence[str] = ("D_f", "G_f", "R_f"),
                   hue: str = "net", col: str | None = None, x: str = "rel_depth",
                   variants: Sequence[tuple] = VARIANTS, axes=None, title: str | None = None) -> Figure:
    """Layer-by-layer sensitivities against depth (log y).

    ``layers``: the ``layers`` run table (``layer``, ``x``, ``state``, ``shuffle``, ``hue``, quantities).
    One row of panels per quantity; with ``col`` (e.g. ``"net"``) one column per value of ``col``,
    otherwise one column holding every ``hue``. Curves: geometric mean over runs of each layer;
    ``variants`` = ``(label, state, shuffle, linestyle)`` tuples, by default trained (solid), trained
    with shuffled channels (dashed), initialisation (dotted). Variants absent from the table are skipped.
    """
    quantities = list(quantities)
    if not quantities:
        raise ValueError("quantities must name at least one column, e.g. ('D_f', 'G_f', 'R_f')")
    require_rows(layers, quantities + [x, hue, "state", "layer"], "layers")
    if col is not None and col not in layers.columns:
        raise ValueError(f"col must be a column of layers or None, got {col!r}")
    df = layers if "shuffle" in layers.columns else layers.assign(shuffle=0)
    cols = ordered(df[col]) if col else [None]
    cmap = hue_colours(df[hue], hue)
    fig, arr = subplots(len(quantities), len(cols), axes, width=3.4, height=2.6)
    drawn = []
    for j, cv in enumerate(cols):
        sub = df if cv is None else df[df[col] == cv]
        for label, state, shuffle, ls in variants:
            part = sub[(sub["state"] == state) & (sub["shuffle"] == shuffle)]
            if part.empty:
                continue
            if label not in drawn:
                drawn.append(label)
            avg = geomean(part, [hue, "layer", x], quantities).sort_values([hue, x])
            for i, q in enumerate(quantities):
                ax = arr[i, j]
                for h, g in avg.groupby(hue, dropna=False):
                    g = positive_rows(g, [q])
                    mk = (net_style(h)[1] if hue == "net" else ".") if ls == "-" else None
                    ax.plot(g[x], g[q], ls=ls, color=cmap[h], lw=1.4, marker=mk, ms=3.5)
        for i, q in enumerate(quantities):
            ax = arr[i, j]
            ax.set_yscale("log")
            log_ticks(ax, "y")
            if i == len(quantities) - 1:
                ax.set_xlabel(axis_label(x))
            if j == 0:
                ax.set_ylabel(axis_label(q, layer=True))
            if i == 0 and cv is not None:
                ax.set_title(str(cv))
    styles = {lab: ls for lab, _, _, ls in variants}
    handles = [Line2D([], [], color=c, lw=1.6, label=str(v)) for v, c in cmap.items()] if not col or \
        col != hue else []
    handles += [Line2D([], [], color="0.3", ls=styles[lab], label=lab) for lab in drawn]
    arr[0, -1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                      frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def two_points_examples(n: int = 4, d: int = 28, xi: float = 14.0, gap: float = 2.0, seed: int = 0) -> Figure:
    """The 2-D scale-detection task (:class:`stabkit.data.TwoPoints`) in pictures: ``n`` far and ``n``
    close test images (two active pixels; title = their L2 distance in pixels: far > ``xi + gap/2``,
    close < ``xi - gap/2``),
    and a last row with one close image, its one-pixel move and the isotropic noise of the same norm
    (:func:`stabkit.data.twopoints_probes`). ``d``, ``xi``, ``gap``: the task's options; ``seed``: which
    images and moves are drawn."""
    import torch

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 3:
        raise ValueError(f"n must be an integer >= 3 (images per class), got {n!r}")
    task = TwoPoints(d=d, xi=xi, gap=gap, ptr=4 * n, train=False, seed=seed)
    pos = task.positions.to(torch.float64)
    dist = (pos[:, 0] - pos[:, 1]).norm(dim=-1)
    fig, arr = plt.subplots(3, n, figsize=(1.55 * n + 0.6, 5.0), squeeze=False, constrained_layout=True)
    for row, (label, cls) in enumerate(((f"far (> {xi + gap / 2:g} px)", 0), (f"close (< {xi - gap / 2:g} px)", 1))):
        idx = torch.nonzero(task.y == cls).flatten()[:n]
        for j, i in enumerate(idx.tolist()):
            arr[row, j].imshow(task.x[i, 0].numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            arr[row, j].set_title(f"distance {float(dist[i]):.1f}", fontsize=8)
        arr[row, 0].set_ylabel(label, fontsize=9)
    close = task.positions[task.y == 1][:1]
    x, x_tau, x_eta = twopoints_probes(close, d, P=1, generator=torch.Generator().manual_seed(seed))
    lim = float(x.abs().max()) / 4  # the two active pixels saturate, so that the noise shows
    for j, (img, title) in enumerate(((x, "clean"), (x_tau, "one-pixel move"), (x_eta, "noise, same norm"))):
        arr[2, j].imshow(img[0, 0].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        arr[2, j].set_title(title, fontsize=8)
    arr[2, 0].set_ylabel("the probes", fontsize=9)
    for ax in arr.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    for ax in arr[2, 3:]:
        ax.set_visible(False)
    return fig


def training_curves(metrics: pd.DataFrame, hue: str = "net", y: str = "test_err",
                    style: str | None = None, ax=None, title: str | None = None) -> Figure:
    """``y`` (default test error) per epoch, one thin line per run, colour = ``hue``, line style =
    ``style`` (e.g. the noise level; optional); log y. The epoch axis is logarithmic when the runs'
    lengths differ more than fourfold (e.g. 15 and 250 epochs), so that the short runs stay readable."""
    require_rows(metrics, ["epoch", y, hue], "metrics")
    cmap = hue_colours(metrics[hue], hue)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.2), constrained_layout=True)
    else:
        fig = ax.figure
    keys = [k for k in run_columns(metrics) if k != "epoch"] or [hue]
    styles = {}
    if style and style in metrics.columns:
        styles = {v: ls for v, ls in zip(ordered(metrics[style]), ["-", "--", ":", "-."] * 10)}
    for key, g in metrics.groupby(keys, dropna=False):
        g = positive_rows(g.sort_values("epoch"), [y])
        if g.empty:
            continue
        ls = styles.get(g[style].iloc[0], "-") if styles else "-"
        ax.plot(g["epoch"], g[y], color=cmap[g[hue].iloc[0]], lw=0.9, alpha=0.8, ls=ls)
    ax.set_yscale("log")
    log_ticks(ax, "y")
    lengths = metrics.groupby(keys, dropna=False)["epoch"].max()
    if len(lengths) and lengths.min() > 0 and lengths.max() > 4 * lengths.min():
        ax.set_xscale("log")
        log_ticks(ax, "x")
    ax.set_xlabel("epoch")
    ax.set_ylabel(axis_label(y))
    handles = [Line2D([], [], color=c, label=str(v)) for v, c in cmap.items()]
    if styles:
        handles.append(Line2D([], [], ls="", label=f"{axis_label(style)}:"))
        handles += [Line2D([], [], color="0.3", ls=ls, label=str(v)) for v, ls in styles.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    if title:
        ax.set_title(title)
    return fig


def training_cost(runs: pd.DataFrame, error: str = "best error (%)", ax=None,
                  title: str | None = None) -> Figure:
    """Test error against training time, one point per run in the architecture's colour and marker, the
    runs of one architecture joined in order of cost, each labelled ``width x epochs`` (e.g. ``1/2 x 20``).
    ``runs``: :func:`stabkit.report.tables.training_runs` (columns ``net``, ``width``, ``epochs``,
    ``error`` and ``core-hours`` or ``GPU-hours``); runs trained with noise (``noise`` > 0) are left
    out. Both axes logarithmic."""
    hours = next((c for c in ("core-hours", "GPU-hours") if c in runs.columns), None)
    if hours is None:
        raise ValueError(f"runs must have a 'core-hours' or 'GPU-hours' column (tables.training_runs), got "
                         f"{list(runs.columns)}")
    require_rows(runs, ["net", "width", "epochs", error], "runs")
    df = runs[pd.to_numeric(runs["noise"], errors="coerce").fillna(0) == 0] if "noise" in runs else runs
    df = positive_rows(df, [hours, error])
    if df.empty:
        raise ValueError("runs: no noise-free run with a training time and an error to draw")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.6, 3.6), constrained_layout=True)
    else:
        fig = ax.figure
    for net in ordered(df["net"]):
        g = df[df["net"] == net].sort_values(hours)
        colour, marker = net_style(net)
        ax.plot(g[hours], g[error], color=colour, marker=marker, lw=0.9, ms=5, label=net)
        for _, r in g.iterrows():
            w = float(r["width"])
            width = "1" if w == 1 else (f"1/{round(1 / w)}" if (1 / w).is_integer() else f"{w:g}")
            ax.annotate(f"{width} x {str(r['epochs']).split(' ')[0]}", (r[hours], r[error]), fontsize="x-small",
                        xytext=(3, 3), textcoords="offset points", color=colour)
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_ticks(ax, "xy")
    ax.set_xlabel(f"training time ({hours})")
    ax.set_ylabel("best test error (%)" if error == "best error (%)" else error)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    if title:
        ax.set_title(title)
    return fig


def block_profiles(profile: pd.DataFrame, panels: Sequence[str], panel: str = "task_name",
                   quantities: Sequence[str] = ("D_f", "G_f", "R_f"), law=None, net: str = "CNN1D",
                   axes=None) -> Figure:
    """Block-by-block sensitivities (log y) of trained (the net's palette colour) and initial (grey,
    dashed) networks, one column per value of ``panel`` (in the order of ``panels``), one row per quantity.

    ``profile``: :func:`stabkit.report.theory_claims.block_profile` rows (``block``, ``state``, ``panel``,
    quantities). ``law``: optional ``law(quantity, blocks) -> values`` drawn dotted through the first
    trained point (e.g. :func:`stabkit.theory.predicted_law` with filter = stride = 2).
    """
    require_rows(profile, ["block", "state", panel, *quantities], "profile")
    fig, arr = subplots(len(quantities), len(panels), axes, width=3.8, height=2.6)
    colour = net_style(net)[0]
    for j, p in enumerate(panels):
        for i, q in enumerate(quantities):
            ax = arr[i, j]
            for state, ls, c in (("init", "--", "0.5"), ("trained", "-", colour)):
                d = profile[(profile[panel] == p) & (profile["state"] == state)].sort_values("block")
                ax.plot(d["block"], d[q], ls, marker=net_style(net)[1], ms=4, color=c, label=state)
            d = profile[(profile[panel] == p) & (profile["state"] == "trained")].sort_values("block")
            if law is not None and len(d):
                values = np.asarray(law(q, d["block"]), dtype=np.float64)
                ax.plot(d["block"], values * d[q].iloc[0] / values[0], ":", color="0.2",
                        label="theory, filter = stride = 2")
            ax.set_yscale("log")
            log_ticks(ax, "y")
            ax.set_ylabel(f"${q[0]}_k$ (dimensionless)")
            if i == 0:
                ax.set_title(str(p))
            if i == len(quantities) - 1:
                ax.set_xlabel("block $k$")
    arr[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    return fig


def task_states(output: pd.DataFrame, panel: str = "task_name",
                quantities: Sequence[tuple[str, str, str]] = (("R_f", "output $R_f$ (dimensionless)", "log"),
                                                              ("test_err", "test error (fraction)", "linear")),
                net: str = "CNN1D") -> Figure:
    """Per value of ``panel`` (x), every run's value at initialisation (grey) and after training (the
    net's palette colour) as points, with the mean as a bar; one panel per ``(column, label, yscale)``."""
    require_rows(output, [panel, "state", *[q for q, _, _ in quantities]], "output")
    fig, arr = subplots(1, len(quantities), width=3.6, height=3.2)
    cats = ordered(output[panel])
    colour, mk = net_style(net)
    for ax, (q, label, yscale) in zip(arr.flat, quantities):
        for k, (state, c, dx) in enumerate((("init", "0.55", -0.15), ("trained", colour, 0.15))):
            for i, cat in enumerate(cats):
                v = output.loc[(output[panel] == cat) & (output["state"] == state), q].to_numpy(dtype=np.float64)
                if not len(v):
                    continue
                ax.scatter(np.full(len(v), i + dx), v, color=c, marker=mk, s=22, zorder=3,
                           label=state if i == 0 else None)
                ax.hlines(np.mean(v), i + dx - 0.1, i + dx + 0.1, color="k", lw=1.5, zorder=4)
        ax.set_xticks(range(len(cats)), [str(c).replace(" (", "\n(") for c in cats])  # no overlap
        ax.set_xlim(-0.6, len(cats) - 0.4)
        ax.set_yscale(yscale)
        if yscale == "log":
            log_ticks(ax, "y")
        ax.set_ylabel(label)
    arr.flat[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    return fig
