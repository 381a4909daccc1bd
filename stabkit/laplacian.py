"""Grid-Laplacian spectrum of convolution filters (``book/methods.md``, section "Grid-Laplacian spectra of
filters").

A ``k x k`` filter slice is a function on the ``k x k`` pixel grid. The graph Laplacian of that grid
(4-neighbours, open boundary) has an orthonormal eigenbasis ordered by "spatial frequency": eigenvalue 0 is
the constant filter (pure spatial pooling), large eigenvalues are checkerboard-like filters. Projecting
every slice of a layer's weight on this basis and averaging the squared projections gives the layer's
spectrum. Only sums within one eigenvalue are basis independent (the 3x3 grid has the degenerate pairs
1, 3 and 4), so :func:`filter_spectra` reports one row per *distinct* eigenvalue.

**Public API**
``laplacian_eigenvectors(n=3) -> (psi [n*n, n, n], eigenvalues [n*n])``
``laplacian_projection(filters [N, n, n]) -> [n*n]``
``filter_spectra(model) -> DataFrame``
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import torch
from torch import nn

from .checks import check_int

__all__ = ["grid_laplacian", "laplacian_eigenvectors", "laplacian_projection", "filter_spectra"]

#: Eigenvalues closer than this are treated as one degenerate eigenvalue.
DEGENERACY_TOL = 1e-8


def grid_laplacian(n: int = 3) -> np.ndarray:
    """Graph Laplacian ``L = D - A`` of the ``n x n`` pixel grid, float64 ``[n*n, n*n]``.

    Pixels are numbered row-major (pixel ``(r, c)`` is index ``r * n + c``); each pixel is linked to its
    4 neighbours, with an open (non-periodic) boundary, so border pixels have degree 2 or 3.
    """
    n = check_int("n", n, minimum=1)  # the side of the pixel grid
    lap = np.zeros((n * n, n * n), dtype=np.float64)
    for r in range(n):
        for c in range(n):
            i = r * n + c
            for rr, cc in ((r + 1, c), (r, c + 1)):
                if rr < n and cc < n:
                    j = rr * n + cc
                    lap[i, j] = lap[j, i] = -1.0
                    lap[i, i] += 1.0
                    lap[j, j] += 1.0
    return lap


@lru_cache(maxsize=16)
def _eig(n: int) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh(grid_laplacian(n))
    values = np.where(np.abs(values) < DEGENERACY_TOL, 0.0, values)
    # Fix the sign of each eigenvector (largest-magnitude entry positive) so results are reproducible.
    idx = np.argmax(np.round(np.abs(vectors), 9), axis=0)
    signs = np.sign(vectors[idx, np.arange(vectors.shape[1])])
    vectors = vectors * np.where(signs == 0, 1.0, signs)
    psi = vectors.T.reshape(n * n, n, n)
    psi.setflags(write=False)
    values.setflags(write=False)
    return psi, values


def laplacian_eigenvectors(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the ``n x n`` grid Laplacian.

    Returns
    -------
    psi : float64 ``[n*n, n, n]``
        ``psi[a]`` is the a-th orthonormal eigenvector, reshaped as an ``n x n`` filter (row-major).
    eigenvalues : float64 ``[n*n]``
        Ascending. Closed form: ``2 - 2 cos(pi a / n) + 2 - 2 cos(pi b / n)``, ``a, b = 0..n-1``;
        for ``n = 3``: ``0, 1, 1, 2, 3, 3, 4, 4, 6``. ``psi[0]`` is the constant filter ``1/n``.
    """
    psi, values = _eig(check_int("n", n, minimum=1))
    return psi.copy(), values.copy()


def laplacian_projection(filters) -> np.ndarray:
    """Mean squared projection of filter slices on the grid-Laplacian eigenvectors.

    Parameters
    ----------
    filters : array or tensor ``[N, n, n]`` (or any ``[..., n, n]``, flattened to ``[N, n, n]``)
        ``N`` square filter slices, e.g. a conv weight ``[C_out, C_in, n, n]`` reshaped.

    Returns
    -------
    float64 ``[n*n]``: ``mean_i <psi_a, filters_i>^2`` for each eigenvector ``a`` (ascending eigenvalue,
    the order of :func:`laplacian_eigenvectors`). Since the basis is orthonormal, the entries sum to the
    mean squared Frobenius norm of the slices.
    """
    if isinstance(filters, torch.Tensor):
        w = filters.detach().to("cpu", torch.float64).numpy()
    else:
        w = np.asarray(filters, dtype=np.float64)
    if w.ndim < 2 or w.shape[-1] != w.shape[-2] or w.shape[-1] < 1:
        raise ValueError(f"filters must have shape [N, n, n] (square slices), got {tuple(w.shape)}")
    n = w.shape[-1]
    w = w.reshape(-1, n * n)
    if w.shape[0] == 0:
        raise ValueError("filters must contain at least one slice, got N = 0")
    psi, _ = _eig(n)
    proj = w @ psi.reshape(n * n, n * n).T  # [N, n*n]
    return (proj ** 2).mean(axis=0)


def _group_eigenvalues(values: np.ndarray) -> list[tuple[float, np.ndarray]]:
    groups: list[tuple[float, list[int]]] = []
    for a, v in enumerate(values):
        if groups and abs(v - groups[-1][0]) < 1e-6:
            groups[-1][1].append(a)
        else:
            groups.append((float(v), [a]))
    return [(round(v, 10), np.asarray(ix)) for v, ix in groups]


def filter_spectra(model: nn.Module) -> pd.DataFrame:
    """Grid-Laplacian spectrum of every spatial conv layer of ``model``, per distinct eigenvalue.

    Layers: every ``nn.Conv2d`` (subclasses included) whose kernel is square with side ``k > 1``, in
    ``model.named_modules()`` order. 1x1 convolutions (no spatial structure) and non-square kernels are
    skipped. Each weight ``[C_out, C_in/groups, k, k]`` is viewed as ``C_out * C_in/groups`` slices and
    projected with :func:`laplacian_projection` (``k x k`` grid, so LeNet's 5x5 filters use the 25
    eigenvectors of the 5x5 grid).

    Returns
    -------
    DataFrame with one row per (conv layer, distinct eigenvalue) and columns
        ``layer`` (module name from ``named_modules``, e.g. ``"features.0"``),
        ``depth`` (1-based position among the included conv layers), ``rel_depth`` (``depth / n`` for
        ``n`` included layers, so the last one is 1; the conventions of ``stability.measure``),
        ``kernel_size``, ``eigenvalue``,
        ``energy`` (mean squared projection summed over the eigenvectors of that eigenvalue),
        ``fraction`` (``energy`` / sum of the layer's energies; sums to 1 per layer).
    Empty (same columns) if the model has no such layer.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    convs = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            if kh == kw and kh > 1:
                convs.append((name, mod))
    columns = ["layer", "depth", "rel_depth", "kernel_size", "eigenvalue", "energy", "fraction"]
    rows = []
    for depth, (name, mod) in enumerate(convs, start=1):
        k = mod.kernel_size[0]
        energy = laplacian_projection(mod.weight.reshape(-1, k, k))
        _, values = _eig(k)
        total = float(energy.sum())
        rel = depth / len(convs)
        for value, ix in _group_eigenvalues(values):
            e = float(energy[ix].sum())
            rows.append((name, depth, rel, k, value, e, e / total if total > 0 else float("nan")))
    return pd.DataFrame(rows, columns=columns)
