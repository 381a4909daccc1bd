"""Fig. 2's figures: the energy of trained filters per grid-Laplacian eigenvector, layer by layer
(:func:`filter_spectra`), and the fraction at eigenvalue 0, the constant filter, against relative depth
(:func:`zero_mode_profile`). Same conventions as :mod:`stabkit.report.figures`.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .fits import zero_mode_fraction
from .figures import axis_label, log_ticks, ordered, positive_rows, require_rows, subplots
from .palette import hue_colours
from .tables import geomean

__all__ = [
    "laplacian_multiplicities", "filter_spectra", "zero_mode_profile",
]


def laplacian_multiplicities(k: int) -> dict[float, int]:
    """Multiplicity of each distinct eigenvalue of the ``k x k`` grid Laplacian (open boundary):
    eigenvalues ``4 - 2 cos(pi a/k) - 2 cos(pi b/k)``, ``a, b = 0..k-1``, rounded to 10 digits."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (the filter side), got {k!r}")
    a = np.arange(k)
    lam = (2 - 2 * np.cos(np.pi * a / k))[:, None] + (2 - 2 * np.cos(np.pi * a / k))[None, :]
    vals, counts = np.unique(np.round(lam.ravel(), 6), return_counts=True)
    return {round(float(v), 10): int(c) for v, c in zip(vals, counts)}


def _per_mode(spectra: pd.DataFrame, value: str) -> pd.DataFrame:
    """Energy fraction per eigenvector (a distinct eigenvalue's share divided by its multiplicity)."""
    df = spectra.copy()
    if value == "fraction" and "fraction" not in df.columns:
        keys = [c for c in df.columns if c not in ("eigenvalue", "energy")]
        df["fraction"] = df["energy"] / df.groupby(keys, dropna=False)["energy"].transform("sum")
    if "kernel_size" in df.columns:
        mult = np.ones(len(df))
        for k in df["kernel_size"].dropna().unique():
            table = laplacian_multiplicities(int(k))
            sel = (df["kernel_size"] == k).to_numpy()
            mult[sel] = [table.get(round(float(lam), 6), 1) for lam in df.loc[sel, "eigenvalue"]]
        df[value] = df[value] / mult
    return df


def filter_spectra(spectra: pd.DataFrame, col: str = "net", value: str = "fraction",
                   states: Sequence[str] = ("trained", "init"), per_mode: bool = True, axes=None,
                   cmap: str = "viridis", max_cols: int = 4, title: str | None = None) -> Figure:
    """Grid-Laplacian spectrum of the filters, layer by layer (log y), one panel per ``col`` value.

    ``spectra``: the ``spectra`` run table (``layer``, ``rel_depth``, ``eigenvalue``, ``energy`` and/or
    ``fraction``, ``state``; ``kernel_size`` for ``per_mode``). Colour = relative depth of the layer (dark
    = first layer), solid = trained, dotted = initialisation; averaged (geometric mean) over runs.
    ``per_mode``: divide each eigenvalue's share by its multiplicity, so a flat spectrum (random
    filters) is a horizontal line at ``1/k^2`` (drawn in grey). Panels wrap after ``max_cols`` columns.
    """
    require_rows(spectra, ["layer", "rel_depth", "eigenvalue", "state"], "spectra")
    if value not in ("fraction", "energy"):
        raise ValueError(f"value must be 'fraction' or 'energy', got {value!r}")
    if value not in spectra.columns and not (value == "fraction" and "energy" in spectra.columns):
        raise ValueError(f"spectra lacks column {value!r}")
    df = _per_mode(spectra, value) if per_mode else spectra
    if col not in df.columns:
        df = df.assign(**{col: "net"})
    cols = ordered(df[col])
    if isinstance(max_cols, bool) or not isinstance(max_cols, int) or max_cols < 1:
        raise ValueError(f"max_cols must be an integer >= 1, got {max_cols!r}")
    ncols = min(len(cols), max_cols)
    nrows = -(-len(cols) // ncols)
    fig, arr = subplots(nrows, ncols, axes, width=3.2, height=2.8)
    for ax in arr.flat[len(cols):]:
        ax.set_visible(False)
    cm = plt.get_cmap(cmap)
    styles = {"trained": "-", "init": ":"}
    for ax, cv in zip(arr.flat, cols):
        sub = df[(df[col] == cv) & df["state"].isin(states)]
        keys = ["state", "layer", "rel_depth", "eigenvalue"] + (
            ["kernel_size"] if "kernel_size" in sub.columns else [])
        avg = geomean(sub, keys, [value])
        for (state, layer, rd), g in avg.groupby(["state", "layer", "rel_depth"], dropna=False):
            g = positive_rows(g.sort_values("eigenvalue"), [value])
            ax.plot(g["eigenvalue"], g[value], ls=styles.get(state, "-"), color=cm(0.9 * float(rd)),
                    marker="o" if state == "trained" else None, ms=3, lw=1.2)
        if per_mode and value == "fraction" and "kernel_size" in sub.columns:
            for k in sub["kernel_size"].dropna().unique():
                ax.axhline(1.0 / float(k) ** 2, color="0.6", lw=0.8, ls="-.")
        ax.set_yscale("log")
        log_ticks(ax, "y")
        ax.set_title(str(cv))
        ax.set_xlabel(axis_label("eigenvalue"))
    ylabel = ("energy fraction per eigenvector" if value == "fraction" else "energy per eigenvector") \
        if per_mode else axis_label(value)
    for ax in arr[:, 0]:
        ax.set_ylabel(ylabel)
    handles = [Line2D([], [], color="0.3", ls=styles[s], label=s if s == "trained" else "initialisation")
               for s in states if s in styles]
    handles += [Line2D([], [], color=cm(0.0), label="first layer"),
                Line2D([], [], color=cm(0.9), label="last layer")]
    if per_mode and value == "fraction":
        handles.append(Line2D([], [], color="0.6", ls="-.", label=r"flat ($1/k^2$)"))
    arr[0, -1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                      frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def zero_mode_profile(spectra: pd.DataFrame, hue: str = "net", ax=None,
                      title: str | None = None, ylabel: bool = True, legend: bool | Sequence[str] = True) -> Figure:
    """Energy fraction at eigenvalue 0 against relative depth, per ``hue`` value (averaged over its runs:
    :func:`stabkit.report.fits.zero_mode_fraction` of the ``spectra`` run table): solid = trained, dotted =
    initialisation, grey = the flat value ``1/k^2``. Panels side by side: ``ylabel`` on the first only,
    ``legend`` on the last only (a legend placed right of a panel would cover the next one), given as the
    ``hue`` values of every panel (a sequence) so that it names the lines of the other panels too."""
    require_rows(spectra, ["layer", "rel_depth", "eigenvalue", "energy", "state"], "spectra")
    fractions = zero_mode_fraction(spectra, by=(hue,))
    df = fractions if hue in fractions.columns else fractions.assign(**{hue: "net"})
    cmap = hue_colours(df[hue], hue)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.2), constrained_layout=True)
    else:
        fig = ax.figure
    for (h, state), g in df.groupby([hue, "state"], dropna=False):
        g = g.sort_values("rel_depth")
        ax.plot(g["rel_depth"], g["fraction"], color=cmap[h], ls="-" if state == "trained" else ":",
                marker="o" if state == "trained" else None, ms=3)
    if "flat" in df.columns and np.isfinite(df["flat"]).any():
        for f in np.unique(df["flat"].dropna()):
            ax.axhline(f, color="0.6", lw=0.8, ls="-.")
    ax.set_yscale("log")
    log_ticks(ax, "y")
    ax.set_xlabel(axis_label("rel_depth"))
    if ylabel:
        ax.set_ylabel(r"energy fraction at $\lambda = 0$")
    shown = cmap if isinstance(legend, bool) else hue_colours(pd.Series(list(legend)), hue)
    handles = [Line2D([], [], color=c, label=str(v)) for v, c in shown.items()]
    handles += [Line2D([], [], color="0.3", ls="-", label="trained"),
                Line2D([], [], color="0.3", ls=":", label="initialisation"),
                Line2D([], [], color="0.6", ls="-.", label="flat spectrum")]
    if legend is not False:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                  frameon=False)
    if title:
        ax.set_title(title)
    return fig
