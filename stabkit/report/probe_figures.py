"""Figures of the related-probe pages (rotation, patch shuffling, masking, resolution) and of the page
that sets rotation invariance against relative stability.

Same conventions as :mod:`stabkit.report.figures`: tidy tables in, a matplotlib ``Figure`` out, networks
coloured and marked by :mod:`stabkit.report.palette`. Accuracies are in percent; the chance level of
CIFAR-10 (10 %) is drawn dotted.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from stabkit import robustness

from .palette import hue_colours, net_colours, net_style
from .tables import require_columns

__all__ = [
    "LINESTYLES", "CHANCE", "nv_strip_image", "plot_nv_strips", "nv_strips", "image_grid", "plot_examples",
    "accuracy_vs_magnitude", "pixelation_curves", "transfer_heatmaps", "nv_profile", "rotation_accuracy",
    "nv_vs_rk", "nv_rk_profile",
]


LINESTYLES = ("-", "--", ":", "-.")


CHANCE = 10.0


def _order(values) -> list:
    vals = list(dict.fromkeys(v for v in values if v == v))
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=str)


def _legend(ax, handles, **kw) -> None:
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False,
              **kw)


def nv_strip_image(values: np.ndarray, width: int = 200) -> np.ndarray:
    """Sorted NV values of one layer resampled to ``width`` columns (nearest rank), ``inf`` kept."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return np.full(width, np.nan)
    idx = np.minimum((np.arange(width) + 0.5) / width * v.size, v.size - 1).astype(int)
    return v[idx]


def plot_nv_strips(acts: pd.DataFrame, vmax: float = 1.5, width: int = 200, title: str = "", ax=None,
                   labels: bool = True):
    """Per-layer strip heatmap of per-activation NV of one net: one row per layer (execution order, top =
    input side), the layer's activations sorted by NV along x (resampled to ``width`` columns, so every
    layer spans the full width); ``inferno`` from 0 to ``vmax`` (larger finite values saturate),
    ``inf`` (SV = 0 < TV) in cyan, ``0/0 = 1`` shown as 1; ``labels``: layer names on the y axis.
    Returns the image artist."""
    layers = acts.drop_duplicates("layer").sort_values("depth")["layer"].tolist()
    img = np.stack([nv_strip_image(acts.loc[acts.layer == name, "NV"].to_numpy(), width) for name in layers])
    shown = np.where(np.isinf(img), np.inf, np.minimum(img, vmax * (1 - 1e-9)))
    cmap = plt.get_cmap("inferno").with_extremes(over="cyan", bad="lightgrey")
    ax = ax if ax is not None else plt.gca()
    art = ax.imshow(np.ma.masked_invalid(np.where(np.isinf(shown), vmax * 10, shown)), aspect="auto",
                    cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.grid(False)
    ax.set_yticks(range(len(layers)))
    short = [name.removeprefix("features.") for name in layers]  # the common prefix of the VGG nodes
    ax.set_yticklabels(short if labels else [], fontsize=7)
    ax.set_xticks([0, width / 2, width - 1], ["0", "50", "100"])
    ax.set_xlabel("units sorted by NV (%)", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return art


def nv_strips(acts: pd.DataFrame, trainings: Sequence[str] = ("unrotated", "rotated")) -> Figure:
    """:func:`plot_nv_strips` of every net (rows) and training (columns), first seed, unstratified."""
    require_columns(acts, ["net", "training", "layer", "depth", "NV", "seed"], "acts")
    a = acts[~acts["stratified"].astype(bool)] if "stratified" in acts.columns else acts
    a = a[a["seed"] == a["seed"].min()]
    nets = _order(a["net"])
    fig, axes = plt.subplots(len(nets), len(trainings), squeeze=False,
                             figsize=(9, 0.2 * a["layer"].nunique() * len(nets) + 1.5))
    art = None
    for i, net in enumerate(nets):
        for j, tr in enumerate(trainings):
            sub = a[(a["net"] == net) & (a["training"] == tr)]
            if len(sub):
                art = plot_nv_strips(sub, title=f"{net}, trained {tr}", ax=axes[i, j], labels=j == 0)
            else:
                axes[i, j].set_axis_off()
    if art is not None:
        fig.colorbar(art, ax=axes, extend="max", shrink=0.6).set_label("NV (cyan: infinite)")
    return fig


def image_grid(columns: Sequence[tuple[str, object]], fontsize: int = 8) -> Figure:
    """One column per ``(title, images [N, C, H, W] in [0, 1])``, one row per image."""
    if not columns:
        raise ValueError("columns must hold at least one (title, images) pair")
    n, m = len(columns[0][1]), len(columns)
    fig, axes = plt.subplots(n, m, figsize=(1.35 * m + 0.4, 1.4 * n + 0.3), squeeze=False)
    for j, (title, imgs) in enumerate(columns):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(imgs[i].clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        axes[0, j].set_title(title, fontsize=fontsize)
    fig.tight_layout()
    return fig


def plot_examples(images, family: str, magnitudes: Sequence, seed: int = 0, title: str | None = None,
                  **options) -> Figure:
    """Grid of examples: one row per image, one column per magnitude of ``family`` (pixel space, with
    :func:`stabkit.robustness.apply_family` and a generator seeded with ``seed``)."""
    import torch

    cols = [(f"{mag:g}", robustness.apply_family(family, images, mag, generator=torch.Generator().manual_seed(seed),
                                                 **options)) for mag in magnitudes]
    fig = image_grid(cols, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, y=1.02)
    return fig


def accuracy_vs_magnitude(curves: pd.DataFrame, style: str, xlabel: str, col: str = "training",
                          col_order: Sequence[str] = ("unrotated", "rotated"), xscale: str | None = None,
                          band: bool = True) -> Figure:
    """Accuracy (%) against the probe magnitude: colour and marker = net (palette), line style = ``style``
    (e.g. the probe variant), one panel per ``col`` value (in ``col_order``, those present); a band of
    +- one sd over seeds; chance dotted. ``curves``: :func:`stabkit.report.robustness_claims.accuracy_curves`."""
    require_columns(curves, ["net", "magnitude", "mean", "sd", style], "curves")
    cols = [c for c in col_order if col in curves.columns and c in set(curves[col])] or [None]
    styles = {v: LINESTYLES[i % len(LINESTYLES)] for i, v in enumerate(_order(curves[style]))}
    cmap = net_colours(curves["net"])
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols) + 1.8, 3.4), squeeze=False,
                             sharey=True, constrained_layout=True)
    for ax, c in zip(axes[0], cols):
        sub = curves if c is None else curves[curves[col] == c]
        for (net, sv), d in sub.groupby(["net", style]):
            d = d.sort_values("magnitude")
            ax.plot(d["magnitude"], d["mean"], ls=styles[sv], color=cmap[net], marker=net_style(net)[1], ms=4)
            if band:
                ax.fill_between(d["magnitude"], d["mean"] - d["sd"], d["mean"] + d["sd"], color=cmap[net],
                                alpha=0.12, lw=0)
        ax.axhline(CHANCE, color="grey", ls=":", lw=1)
        if xscale:
            ax.set_xscale(xscale)
        ax.set_xlabel(xlabel)
        if c is not None:
            ax.set_title(f"{col} = {c}")
    axes[0, 0].set_ylabel("top-1 accuracy (%)")
    handles = [Line2D([], [], color=cl, marker=net_style(n)[1], label=str(n)) for n, cl in cmap.items()]
    handles += [Line2D([], [], color="0.3", ls=ls, label=str(v)) for v, ls in styles.items()]
    _legend(axes[0, -1], handles)
    return fig


def pixelation_curves(curves: pd.DataFrame) -> Figure:
    """Accuracy (%) against the pixelation factor (log x), one line per training source size and
    resampling, error bars +- one sd. ``curves``: columns ``resampling``, ``source``, ``magnitude``,
    ``mean``, ``sd``."""
    require_columns(curves, ["resampling", "source", "magnitude", "mean", "sd"], "curves")
    fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
    for (rs, src), d in curves.groupby(["resampling", "source"]):
        ax.errorbar(d["magnitude"], d["mean"], yerr=d["sd"], marker="o", capsize=3,
                    label=f"trained at {src} px ({rs})")
    ax.axhline(CHANCE, color="grey", ls=":", lw=1)
    ax.set(xscale="log", xlabel="pixelation factor", ylabel="top-1 accuracy (%)")
    ticks = sorted(curves["magnitude"].unique())
    ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    _legend(ax, ax.get_legend_handles_labels()[0])
    return fig


def transfer_heatmaps(grid: pd.DataFrame) -> Figure:
    """Source x target heatmaps of the accuracy at the target size and of delta (points), annotated.
    ``grid``: :func:`stabkit.robustness.transfer_grid` rows of one resampling."""
    require_columns(grid, ["source", "target", "acc_ootb_mean", "delta_mean"], "grid")
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), constrained_layout=True)
    for ax, col, title, cmap, centred in (
            (axes[0], "acc_ootb_mean", "accuracy at the target size (%)", "viridis", False),
            (axes[1], "delta_mean", "delta = acc_ootb - acc_source (points)", "RdBu", True)):
        piv = grid.pivot(index="source", columns="target", values=col)
        vals = piv.to_numpy(dtype=np.float64)
        lim = np.nanmax(np.abs(vals)) if np.isfinite(vals).any() else 1.0
        kw = dict(vmin=-lim, vmax=lim) if centred else {}
        art = ax.imshow(vals, cmap=cmap, aspect="auto", **kw)
        for (i, j), v in np.ndenumerate(vals):
            if np.isfinite(v):
                r, g, b, _ = art.cmap(art.norm(v))  # readable label: white on dark cells, black on light
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=10,
                        color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
        ax.set_xticks(range(len(piv.columns)), [str(int(c)) for c in piv.columns])
        ax.set_yticks(range(len(piv.index)), [str(int(r)) for r in piv.index])
        ax.grid(False)
        ax.set(title=title, xlabel="target size (px)", ylabel="source size (px, training)")
    return fig


def nv_profile(inv: pd.DataFrame) -> Figure:
    """Layer mean NV against relative depth: colour and marker = net, solid = unrotated training,
    dashed = rotated; the value 1 dotted. ``inv``: unstratified ``invariance`` rows with ``training``."""
    require_columns(inv, ["net", "training", "layer", "rel_depth", "mean_NV"], "inv")
    prof = inv.groupby(["net", "training", "layer", "rel_depth"], as_index=False)["mean_NV"].mean()
    cmap = net_colours(prof["net"])
    fig, ax = plt.subplots(figsize=(7.5, 4), constrained_layout=True)
    styles = {"unrotated": "-", "rotated": "--"}
    for (net, tr), d in prof.groupby(["net", "training"]):
        d = d.sort_values("rel_depth")
        ax.plot(d["rel_depth"], d["mean_NV"], ls=styles.get(tr, ":"), color=cmap[net], marker=net_style(net)[1],
                ms=3)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="relative depth (node index / number of nodes)", ylabel="layer mean NV (rotations)")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f} %"))
    handles = [Line2D([], [], color=c, marker=net_style(n)[1], label=str(n)) for n, c in cmap.items()]
    handles += [Line2D([], [], color="0.3", ls=ls, label=f"trained {tr}") for tr, ls in styles.items()]
    _legend(ax, handles)
    return fig


def rotation_accuracy(acc: pd.DataFrame, classes: Sequence[str],
                      trainings: Sequence[str] = ("unrotated", "rotated")) -> Figure:
    """Accuracy (%) against the rotation angle: one panel per training (rows) and net (columns), one
    thin line per class (``classes[label]``, tab10), all classes thick black."""
    require_columns(acc, ["probe", "label", "magnitude", "accuracy", "net", "training"], "acc")
    r = acc[acc["probe"] == "rotate"]
    nets = _order(r["net"])
    rows = [t for t in trainings if t in set(r["training"])]
    fig, axes = plt.subplots(len(rows), len(nets), figsize=(3.3 * len(nets) + 1.6, 2.8 * len(rows)),
                             squeeze=False, sharex=True, sharey=True, constrained_layout=True)
    cls_colours = hue_colours(range(len(classes)), hue="label")
    for i, tr in enumerate(rows):
        for j, net in enumerate(nets):
            ax = axes[i, j]
            sub = r[(r["net"] == net) & (r["training"] == tr)]
            per = sub[sub["label"] >= 0].groupby(["label", "magnitude"])["accuracy"].mean().reset_index()
            for lab, d in per.groupby("label"):
                ax.plot(d["magnitude"], 100 * d["accuracy"], color=cls_colours[int(lab)], lw=1)
            allc = sub[sub["label"] < 0].groupby("magnitude")["accuracy"].mean()
            ax.plot(allc.index, 100 * allc.to_numpy(), color="black", lw=2.5)
            ax.set_xticks([0, 90, 180, 270])
            ax.set_title(f"{net}, trained {tr}", fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("rotation angle (degrees)")
            if j == 0:
                ax.set_ylabel("top-1 accuracy (%)")
    handles = [Line2D([], [], color=cls_colours[k], label=c) for k, c in enumerate(classes)]
    handles.append(Line2D([], [], color="black", lw=2.5, label="all classes"))
    _legend(axes[0, -1], handles)
    return fig


def nv_vs_rk(both: pd.DataFrame) -> Figure:
    """Layer mean NV against ``log10 R_k``, one panel per net: one point per node, colour = relative
    depth, circles = trained without rotations, triangles = with. ``both``:
    :func:`stabkit.report.layer_claims.layer_nv_vs_rk`."""
    require_columns(both, ["net", "training", "log10_R", "mean_NV", "rel_depth"], "both")
    nets = _order(both["net"])
    fig, axes = plt.subplots(1, len(nets), figsize=(4.4 * len(nets) + 1.2, 3.6), squeeze=False,
                             constrained_layout=True)
    sc = None
    for ax, net in zip(axes[0], nets):
        for tr, marker in (("unrotated", "o"), ("rotated", "^")):
            d = both[(both["net"] == net) & (both["training"] == tr)]
            sc = ax.scatter(d["log10_R"], d["mean_NV"], c=d["rel_depth"], cmap="viridis", vmin=0, vmax=1,
                            marker=marker, s=22, label=f"trained {tr}", edgecolor="k", linewidth=0.2)
        ax.set(title=net, xlabel="$\\log_{10} R_k$ (diffeo / noise)",
               ylabel="layer mean NV (rotations)" if ax is axes[0, 0] else "")
    if sc is not None:
        fig.colorbar(sc, ax=axes, label="relative depth", shrink=0.8)
    handles = [Line2D([], [], ls="", marker=m, color="0.5", markeredgecolor="k", label=f"trained {tr}")
               for tr, m in (("unrotated", "o"), ("rotated", "^"))]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small", frameon=False)
    return fig


def nv_rk_profile(both: pd.DataFrame, training: str = "unrotated") -> Figure:
    """Layer mean NV (solid, left axis) and ``log10 R_k`` (dashed, right axis) against relative depth,
    one colour per net (palette), for the nets trained ``training``."""
    require_columns(both, ["net", "training", "rel_depth", "mean_NV", "log10_R"], "both")
    prof = both.groupby(["net", "training", "rel_depth"], as_index=False)[["mean_NV", "log10_R"]].mean()
    prof = prof[prof["training"] == training]
    fig, ax1 = plt.subplots(figsize=(7.5, 3.6), constrained_layout=True)
    ax2 = ax1.twinx()
    cmap = net_colours(prof["net"])
    for net, d in prof.groupby("net"):
        ax1.plot(d["rel_depth"], d["mean_NV"], "-", color=cmap[net], marker=net_style(net)[1], ms=3)
        ax2.plot(d["rel_depth"], d["log10_R"], "--", color=cmap[net])
    ax1.set(xlabel="relative depth", ylabel="layer mean NV (solid)")
    ax2.set_ylabel("$\\log_{10} R_k$ (dashed)")
    ax2.grid(False)
    handles = [Line2D([], [], color=c, marker=net_style(n)[1], label=str(n)) for n, c in cmap.items()]
    handles += [Line2D([], [], color="0.3", ls="-", label="NV (left axis)"),
                Line2D([], [], color="0.3", ls="--", label=r"$\log_{10} R_k$ (right axis)")]
    ax1.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.12, 1.0), fontsize="small", frameon=False)
    ax1.set_title(f"networks trained {training}", fontsize=10)
    return fig
