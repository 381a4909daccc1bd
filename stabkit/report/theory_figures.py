"""Figures of the page on the constant-filter theory (``stabkit.theory``): the raw and relative stabilities
of the toy networks layer by layer against the predicted laws, the effect of a bias on G_k, receptive
fields and how one input spreads through the layers.

``tables``: ``{case name: theory.constant_filter_stabilities(...)}``; ``cases``: ``{case name: (filter,
stride, depth)}``. Each function returns a matplotlib ``Figure``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stabkit import theory

__all__ = ["raw_stabilities", "stability_laws", "bias_effect", "receptive_fields", "spreads"]


def raw_stabilities(tables: Mapping[str, pd.DataFrame], cases: Mapping[str, tuple[int, int, int]]) -> Figure:
    """``D``, ``G`` and ``deno`` (squared distances, activation units^2) against the layer, one panel per
    case; log layer axis at stride 1 (power laws), linear at stride 2 (exponential laws)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (name, df) in zip(axes, tables.items()):
        d = df[df.layer >= 1]
        for col, label in [("D", "$D$ (shift)"), ("G", "$G$ (noise)"), ("deno", "deno")]:
            ax.plot(d.layer, d[col], "o-", ms=3, label=label)
        ax.set_yscale("log")
        if cases[name][1] == 1:
            ax.set_xscale("log")
        ax.set(title=name, xlabel="layer $k$", ylabel="squared distance (activation units$^2$)")
    # one legend under the panels: inside a panel it covers the curves
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def stability_laws(tables: Mapping[str, pd.DataFrame], cases: Mapping[str, tuple[int, int, int]]) -> Figure:
    """``D_k``, ``G_k``, ``R_k`` (dots) against the layer with the predicted laws
    (:func:`stabkit.theory.predicted_law`, dashes, scaled to the last measured layer), one panel per case."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    colors = dict(zip("DGR", ("C0", "C1", "C2")))
    for ax, (name, df) in zip(axes, tables.items()):
        k, s, _ = cases[name]
        d = df[df.layer >= 1]
        for q in "DGR":
            ax.plot(d.layer, d[f"{q}_f"], "o", ms=4, color=colors[q], label=f"${q}_k$")
            law = theory.predicted_law(q, d.layer, k, s)
            ax.plot(d.layer, law * (d[f"{q}_f"].iloc[-1] / law[-1]), "--", color=colors[q], lw=1.2)
        ax.set_yscale("log")
        if s == 1:
            ax.set_xscale("log")
        ax.set(title=name, xlabel="layer $k$", ylabel="relative stability (dimensionless)")
    fig.legend(*axes[0].get_legend_handles_labels(), title="measured (dots), predicted (dashes)", loc="lower center",
               ncol=3, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def bias_effect(bias: pd.DataFrame, biases: Sequence[float]) -> Figure:
    """``G_k / eta^2`` at the last layer against the noise norm ``eta``, one line per ``|bias|`` of
    ``biases``, positive biases left, negative right. ``bias``: columns ``sign``, ``|bias|``, ``eta``,
    ``G_f / eta^2``."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    colours = dict(zip(biases, plt.cm.viridis(np.linspace(0, 0.9, len(biases)))))
    for ax, sign in zip(axes, (+1, -1)):
        for b in biases:
            d = bias[(bias.sign == sign) & (bias["|bias|"] == b)]
            ax.plot(d.eta, d["G_f / eta^2"], "o-", ms=3, color=colours[b], label=f"{sign * b:g}" if b else "0")
        ax.set(xscale="log", yscale="log", xlabel=r"noise norm $\eta$ (input units)",
               title=("positive" if sign > 0 else "negative") + " bias $b$")
        ax.legend(title="bias $b$", fontsize=9)
    axes[0].set_ylabel(r"$G_k / \eta^2$ at the last layer (per input unit$^2$)")
    fig.tight_layout()
    return fig


def receptive_fields(layers: Sequence[int] | np.ndarray = tuple(range(13)),
                     cases: Sequence[tuple[int, int]] = ((3, 1), (5, 1), (2, 2), (3, 2))) -> Figure:
    """Receptive field (input pixels, :func:`stabkit.theory.receptive_field`) against the layer, one line
    per ``(filter, stride)`` of ``cases``; log y axis."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for f, s in cases:
        ax.plot(layers, [theory.receptive_field(f, s, int(l)) for l in layers], "o-", ms=3,
                label=f"filter {f}, stride {s}")
    ax.set(yscale="log", xlabel="layer $l$", ylabel="receptive field (input pixels)")
    ax.legend()
    fig.tight_layout()
    return fig


def spreads(cases: Sequence[tuple[int, int, int]] = ((5, 1, 4), (2, 2, 4))) -> Figure:
    """How one input spreads through the layers (:func:`stabkit.theory.spread`), one panel per ``(filter,
    stride, depth)``: each layer's activation over the input positions, divided by the layer's maximum."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, (f, s, L) in zip(axes, cases):
        sp = theory.spread(f, s, L)
        n = int(sp[sp.layer == 0].position.max()) + 1
        img = np.full((L + 1, n), np.nan)
        for l, d in sp.groupby("layer"):
            v = d.sort_values("position").value.to_numpy()
            row = np.repeat(v / v.max(), s ** int(l))[:n]
            img[int(l), : row.size] = row
        im = ax.imshow(img, aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.set(title=f"filter {f}, stride {s}", xlabel="input position (pixels)", ylabel="layer")
        fig.colorbar(im, ax=ax, label="activation / layer max")
    fig.tight_layout()
    return fig
