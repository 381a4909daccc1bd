"""Figures of the page on the perturbations of every stability measurement (``book/methods.md``,
"Stabilities"): smooth diffeomorphisms of a temperature ``T`` and cut ``c`` against noise of the same norm.

Images are ``[B, 3, n, n]`` float tensors in ``[0, 1]`` (any device); each function returns a matplotlib
``Figure``. The deformations of :func:`temperature_grid` are drawn here, seeded per cut and temperature
(``seed + 1000 c + j``), so that a page shows the same pictures on every build.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from stabkit.transforms import deform, noisy_batch, temperature_range, typical_displacement, typical_temperature

__all__ = ["image_row", "temperature_grid", "perturbation_grid", "temperature_plane", "displacement_check"]


def image_row(images: torch.Tensor, names: Sequence[str]) -> Figure:
    """The page's images in one row, each titled by its name (``names``: one per image)."""
    fig, axes = plt.subplots(1, len(images), figsize=(1.6 * len(images), 1.9))
    for ax, img, name in zip(axes, images, names):
        ax.imshow(img.permute(1, 2, 0).cpu().numpy())
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return fig


def temperature_grid(img: torch.Tensor, cuts: Sequence[int], n_T: int, seed: int = 0) -> Figure:
    """One image (``img``: ``[1, 3, n, n]``) deformed at ``n_T`` temperatures from ``T_min`` to ``T_max``
    of each cut (:func:`~stabkit.transforms.temperature_range`), and the noise of the same norm below each
    deformation; the first column is the clean image. Titles give ``T`` and the typical displacement
    (pixels)."""
    n = img.shape[-1]
    fig, axes = plt.subplots(2 * len(cuts), n_T + 1, figsize=(1.55 * (n_T + 1), 1.7 * 2 * len(cuts)))
    for r, c in enumerate(cuts):
        t_min, t_max = temperature_range(n, c)
        temps = np.geomspace(t_min, max(t_max, 1.01 * t_min), n_T)
        for j, T in enumerate(temps):
            gen = torch.Generator().manual_seed(seed + 1000 * c + j)
            x_tau = deform(img, float(T), c, generator=gen)
            x_eta = noisy_batch(img, x_tau, generator=gen)
            for row, (pic, what) in enumerate([(x_tau, "diffeo"), (x_eta, "noise")]):
                ax = axes[2 * r + row, j + 1]
                ax.imshow(pic[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy())
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"T = {T:.1e}\n$\\delta$ = {typical_displacement(float(T), c, n):.1f} px", fontsize=8)
                if j == 0:
                    ax.set_ylabel(f"{what}\nc = {c}", fontsize=9)
        for row in range(2):
            ax = axes[2 * r + row, 0]
            ax.imshow(img[0].permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel("clean", fontsize=9)
    fig.suptitle("Diffeomorphisms (odd rows) and norm-matched noise (even rows): temperature grows to the right",
                 fontsize=10)
    fig.tight_layout()
    return fig


def perturbation_grid(images: torch.Tensor, x_tau: torch.Tensor, x_eta: torch.Tensor) -> Figure:
    """Per image (columns): clean, deformed (``x_tau``), with the noise of the same norm (``x_eta``), and
    ``|x_tau - x|`` summed over channels: the probe set of every stability measurement
    (:func:`~stabkit.probes.draw_probes`, delta = 1 pixel, c = 3)."""
    fig, axes = plt.subplots(4, len(images), figsize=(1.6 * len(images), 6.6))
    for i in range(len(images)):
        d = (x_tau[i] - images[i]).abs().sum(0).cpu().numpy()
        for r, pic in enumerate([images[i], x_tau[i], x_eta[i].clamp(0, 1)]):
            axes[r, i].imshow(pic.permute(1, 2, 0).cpu().numpy())
        axes[3, i].imshow(d, cmap="magma")
        for r in range(4):
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
        for r, label in enumerate(["clean", "diffeo", "noise", "|diffeo - clean|"]):
            axes[r, 0].set_ylabel(label, fontsize=9)
    fig.suptitle("$\\delta = 1$ pixel, $c = 3$: the perturbation of every stability measurement", fontsize=10)
    fig.tight_layout()
    return fig


def temperature_plane(cs: np.ndarray, tmin: np.ndarray, tmax: np.ndarray, n: int) -> Figure:
    """The useful temperatures against the cut: ``tmin``, ``tmax`` (arrays over the cuts ``cs``, from
    :func:`~stabkit.transforms.temperature_range` for ``n x n`` images), the temperatures of a typical
    displacement of 1 and 2 pixels, and the measurements' point (delta = 1, c = 3); log axes."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.fill_between(cs, tmin, tmax, where=tmax > tmin, alpha=0.2, color="C0", label="useful range")
    ax.plot(cs, tmin, "C0-", label="$T_{min}$ ($\\delta$ = 1/2 px)")
    ax.plot(cs, tmax, "C3-", label="$T_{max}$ (no overhangs)")
    for delta, style in [(1.0, "--"), (2.0, ":")]:
        ax.plot(cs, [typical_temperature(delta, int(c), n) for c in cs], "k" + style, lw=1,
                label=f"$\\delta$ = {delta:g} px")
    ax.plot([3], [typical_temperature(1.0, 3, n)], "k*", ms=12, label="measurements ($\\delta$ = 1, c = 3)")
    ax.set(xscale="log", yscale="log", xlabel="cut $c$ (highest mode)", ylabel="temperature $T$ (dimensionless)",
           title=f"{n} x {n} images")
    ax.set_xticks([2, 3, 5, 10, 20, 40], labels=["2", "3", "5", "10", "20", "40"])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def displacement_check(disp: pd.DataFrame) -> Figure:
    """Measured RMS displacement (pixels; dots) against the formula ``n/2 sqrt(pi T ln c)`` (lines), per cut:
    ``disp`` has one row per (``cut``, ``T``) with ``measured`` and ``formula``; log axes."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for c, d in disp.groupby("cut"):
        ax.plot(d["T"], d["measured"], "o", label=f"measured, c = {c}")
        ax.plot(d["T"], d["formula"], "-", color=ax.lines[-1].get_color(), alpha=0.6,
                label=f"$\\frac{{n}}{{2}}\\sqrt{{\\pi T \\ln c}}$, c = {c}")
    ax.set(xscale="log", yscale="log", xlabel="temperature $T$ (dimensionless)", ylabel="RMS displacement (pixels)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
