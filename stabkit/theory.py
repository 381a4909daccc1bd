"""Constant-filter theory (``book/methods.md``, section "Constant-filter theory").

A toy model of a network that has learnt pure spatial pooling: a 1-D, one-channel CNN whose filters are
constant. Each of its ``depth`` layers zero-pads ``(k-1)//2`` pixels on each side, sums the input over
windows of size ``k`` taken with stride ``s``, multiplies by ``s/k`` (or by 1 with ``one_filters=True``),
adds a bias and applies a ReLU. Fed with one-hot inputs, it predicts how the layer stabilities scale with
the layer index ``l`` (written ``k`` in the paper; here ``l`` to avoid a clash with the filter size):

==========================  ===============  ==============  ==================
case                        ``D_l``           ``G_l``          ``R_l = D_l/G_l``
==========================  ===============  ==============  ==================
stride 1 (any filter)       ``l^-1``          ``l^(1/2)``      ``l^(-3/2)``
stride = filter = ``s``     ``s^-l``          ``s^l``          ``s^(-2l)``
==========================  ===============  ==============  ==================

(``D_l``, ``G_l`` are relative to the layer's ``deno``, i.e. the ``D_f``/``G_f`` of the "Stabilities" section of ``book/methods.md`` applied to
layer ``l``.) For ``s = 2`` this is ``D ~ 2^-l``, ``G ~ 2^l``, ``R ~ 4^-l``. **Fix:** the original notebook
drew a constant R line for the stride-2 case, contradicting its own D and G lines; :func:`predicted_law`
returns ``R ~ 4^-l`` there.

The laws are asymptotic. With the paper's input length ``N = RF + 1`` the finite size shows: for stride
1 the ``||mean||^2`` term of ``deno`` (~1/N) and the zero-padded border bend the curves, and exponents fitted
over layers ``L/4..L`` (filter 3, seeds 2) approach the prediction slowly: ``D`` -0.68 (L = 8), -0.86
(L = 50), -0.905 (L = 100), ``G`` 0.50, ``R`` -1.40 at L = 100. For stride = filter = 2 the fit over layers
1..8 gives ``D`` -0.93, ``G`` 0.98, ``R`` -1.92 (the last layers hold only 2-4 units).

**Public API**
``ConstantFiltersCNN(kernel_size, stride, depth, one_filters=False, bias=0.0)``
``receptive_field(f, s, l)``
``constant_filter_stabilities(kernel_size, stride, depth, seeds=1, bias=0.0, rectify_noise=True, eta=None)``
``one_hot_probes(kernel_size, stride, depth, seed=0, rectify_noise=True, eta=None) -> (x, x_tau, x_eta)``
``predicted_exponents(kernel_size, stride)``, ``predicted_law(quantity, layers, kernel_size, stride)``
``fit_exponents(table, stride)``
``spread(kernel_size, stride, depth, position=None)``
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .checks import check_float, check_int
from .stability import stability

__all__ = [
    "ConstantFiltersCNN", "receptive_field", "input_size", "one_hot_probes", "constant_filter_stabilities",
    "constant_filter_replicates", "predicted_exponents", "predicted_law", "fit_exponents", "spread",
]


class ConstantFiltersCNN(nn.Module):
    """1-D one-channel CNN with constant filters (the toy model of the constant-filter theory).

    Parameters
    ----------
    kernel_size : int >= 1
        Filter size ``k``.
    stride : int >= 1
        Stride ``s`` of every layer.
    depth : int >= 1
        Number of layers ``L``.
    one_filters : bool, default False
        Filter entries are 1 instead of ``s/k`` (``s/k`` keeps the total activation of a one-hot input
        constant through the layers).
    bias : float, default 0.0
        Bias added before every ReLU.

    Input ``[B, N]`` or ``[B, 1, N]``; output ``[B, N_L]`` (the last layer's activations, flattened).
    Layer ``i`` (0-based) is the pair of modules ``features.{2i}`` (``nn.Conv1d`` with frozen constant
    weight, zero padding ``(k-1)//2``) and ``features.{2i+1}`` (``nn.ReLU``), so the model is FX-traceable
    and :func:`stabkit.stability.measure` sees every conv and ReLU node. No parameter requires grad.
    """

    def __init__(self, kernel_size: int, stride: int, depth: int, one_filters: bool = False,
                 bias: float = 0.0):
        super().__init__()
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        self.stride = check_int("stride", stride, minimum=1)
        self.depth = check_int("depth", depth, minimum=1)
        self.bias = check_float("bias", bias)
        self.one_filters = bool(one_filters)
        k, s = self.kernel_size, self.stride
        value = 1.0 if self.one_filters else s / k
        mods: list[nn.Module] = []
        for _ in range(self.depth):
            conv = nn.Conv1d(1, 1, k, stride=s, padding=(k - 1) // 2, bias=True)
            with torch.no_grad():
                conv.weight.fill_(value)
                conv.bias.fill_(self.bias)
            conv.weight.requires_grad_(False)
            conv.bias.requires_grad_(False)
            mods += [conv, nn.ReLU()]
        self.features = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, -1)
        return self.features(x).flatten(1)

    def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each ReLU: a list of ``depth`` tensors ``[B, N_l]`` (input not included)."""
        x = x.reshape(x.shape[0], 1, -1)
        out = []
        for i in range(self.depth):
            x = self.features[2 * i + 1](self.features[2 * i](x))
            out.append(x.flatten(1))
        return out

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, depth={self.depth}, "
                f"one_filters={self.one_filters}, bias={self.bias}")


def receptive_field(f: int, s: int, l: int) -> int:
    """Receptive field ``RF(f, s, l) = f + (f - 1) * sum_{i=1..l} s^i`` in pixels (the constant-filter theory's formula).

    ``f`` filter size (>= 1), ``s`` stride (>= 1), ``l`` number of layers (>= 0). E.g.
    ``RF(3, 1, l) = 3 + 2 l``, ``RF(2, 2, l) = 2^(l+1)``.
    """
    f = check_int("f", f, minimum=1)
    s = check_int("s", s, minimum=1)
    l = check_int("l", l, minimum=0)
    return f + (f - 1) * sum(s ** i for i in range(1, l + 1))


def input_size(kernel_size: int, stride: int, depth: int) -> int:
    """Input length ``N = RF(kernel_size, stride, depth) + 1`` used by the constant-filter experiments."""
    return receptive_field(kernel_size, stride, depth) + 1


def _stabilities(o: torch.Tensor, o_tau: torch.Tensor, o_eta: Sequence[torch.Tensor]) -> dict:
    """Section-3 stabilities of one layer (float64, via :func:`stabkit.stability.stability`): D, G (mean
    over the noise draws), deno, D_f, G_f, R_f."""
    D, deno = stability(o, o_tau)
    G = float(np.mean([stability(o, e)[0] for e in o_eta]))
    return {"D": D, "G": G, "deno": deno, "D_f": D / deno, "G_f": G / deno,
            "R_f": D / G if G > 0 else float("nan")}


def one_hot_probes(kernel_size: int, stride: int, depth: int, seed: int = 0, rectify_noise: bool = True,
                   eta: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Probe set ``(x, x_tau, x_eta)`` of the constant-filter experiments, float64 ``[N-1, N]`` each.

    ``N = RF(kernel_size, stride, depth) + 1``. ``x``: one-hot vectors at positions ``0 .. N-2``
    (``P = N - 1``; the shift of the last one-hot vector would leave the input, so it is left out, no
    wrap-around); ``x_tau``: the same moved by one pixel (positions ``1 .. N-1``); ``x_eta = x + eta_i``
    with ``eta_i ~ N(0, I_N)`` rescaled to the norm ``||tau x_i - x_i|| = sqrt(2)`` (or to ``eta``), then
    rectified (``ReLU``) if ``rectify_noise``. Draws from ``torch.Generator().manual_seed(seed)``.
    Usable directly with ``stabkit.stability.measure(ConstantFiltersCNN(...).double(), one_hot_probes(...))``.
    """
    seed = check_int("seed", seed, minimum=0)
    eta = None if eta is None else check_float("eta", eta, positive=True)
    N = input_size(kernel_size, stride, depth)
    eye = torch.eye(N, dtype=torch.float64)
    x, x_tau = eye[:-1], eye[1:]
    norm = math.sqrt(2.0) if eta is None else eta
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z * (norm / z.norm(dim=1, keepdim=True))
    return x, x_tau, x + (torch.relu(z) if rectify_noise else z)


@torch.no_grad()
def constant_filter_stabilities(kernel_size: int, stride: int, depth: int, seeds: int = 1,
                                bias: float = 0.0, rectify_noise: bool = True,
                                eta: float | None = None, one_filters: bool = False,
                                first_seed: int = 0) -> pd.DataFrame:
    """Layer-by-layer stabilities of :class:`ConstantFiltersCNN` on one-hot inputs, float64.

    Probes from :func:`one_hot_probes` (input length ``N = RF(kernel_size, stride, depth) + 1``,
    ``P = N - 1`` one-hot inputs, diffeo = shift by one pixel, noise = Gaussian rescaled to the norm of
    the shift, ``sqrt(2)``, or to ``eta``, then rectified when ``rectify_noise``); noise draw ``i`` of
    ``seeds`` uses seed ``first_seed + i``. Stabilities follow ``book/methods.md``, section "Stabilities" (``deno`` over all ordered pairs
    including ``i = j``, plus 1e-10), computed with :func:`stabkit.stability.stability`; ``G`` is averaged
    over the ``seeds`` noise draws before forming ``G_f`` and ``R_f``.

    Returns
    -------
    DataFrame, one row per layer ``0 .. depth`` (layer 0 = the input itself; layer ``l >= 1`` = after the
    ``l``-th ReLU, node ``features.{2l-1}`` of the model), columns ``layer``, ``rel_depth``
    (``layer / depth``), ``width`` (number of activations), ``D, G, deno, D_f, G_f, R_f`` and the settings
    ``kernel_size, stride, depth, bias, eta`` (noise norm before rectification), ``rectify_noise``,
    ``seeds``, ``P``.
    """
    net = ConstantFiltersCNN(kernel_size, stride, depth, one_filters=one_filters, bias=bias).double()
    seeds = check_int("seeds", seeds, minimum=1)
    first_seed = check_int("first_seed", first_seed, minimum=0)
    draws = [one_hot_probes(kernel_size, stride, depth, seed, rectify_noise, eta)
             for seed in range(first_seed, first_seed + seeds)]
    x, x_tau = draws[0][0], draws[0][1]
    xs_eta = [d[2] for d in draws]
    P = x.shape[0]
    outs = [[x, x_tau, *xs_eta]]
    for a in net.layer_outputs(torch.cat([x, x_tau, *xs_eta])):
        outs.append(list(a.split(P)))
    rows = []
    for layer, (o, o_tau, *o_eta) in enumerate(outs):
        row = {"layer": layer, "rel_depth": layer / net.depth, "width": o.shape[1]}
        row.update(_stabilities(o, o_tau, o_eta))
        rows.append(row)
    df = pd.DataFrame(rows)
    df["kernel_size"], df["stride"], df["depth"] = net.kernel_size, net.stride, net.depth
    df["bias"], df["eta"], df["rectify_noise"] = net.bias, math.sqrt(2.0) if eta is None else float(eta), \
        bool(rectify_noise)
    df["seeds"], df["P"] = seeds, P
    return df


def constant_filter_replicates(kernel_size: int, stride: int, depth: int, seeds: int = 1, **options) -> pd.DataFrame:
    """:func:`constant_filter_stabilities` once per noise draw (draw ``i`` with seed ``i``, ``0 <= i < seeds``),
    stacked with a column ``seed``: the replicates over which an exponent gets an interval (the shift and
    the denominator are the same in every draw, so ``D_f`` is too; ``G_f`` and ``R_f`` vary). ``options``:
    the keyword arguments of :func:`constant_filter_stabilities` (``bias``, ``eta``, ...)."""
    seeds = check_int("seeds", seeds, minimum=1)
    if "seeds" in options or "first_seed" in options:
        raise ValueError("options must not set seeds: each replicate is one noise draw")
    parts = [constant_filter_stabilities(kernel_size, stride, depth, seeds=1, first_seed=i, **options).assign(seed=i)
             for i in range(seeds)]
    return pd.concat(parts, ignore_index=True)


def predicted_exponents(kernel_size: int, stride: int) -> dict[str, float]:
    """Exponents of the predicted depth laws of :func:`predicted_law`.

    Stride 1: power laws in the layer index ``l``, ``{"D": -1, "G": 0.5, "R": -1.5}``.
    Stride = kernel_size = ``s >= 2``: exponentials ``s^(e l)`` with ``{"D": -1, "G": 1, "R": -2}``
    (``R ~ 4^-l`` for ``s = 2``). Other combinations have no prediction: ValueError.
    """
    kernel_size = check_int("kernel_size", kernel_size, minimum=1)
    stride = check_int("stride", stride, minimum=1)
    if stride == 1:
        return {"D": -1.0, "G": 0.5, "R": -1.5}
    if stride == kernel_size:
        return {"D": -1.0, "G": 1.0, "R": -2.0}
    raise ValueError(f"stride must be 1 or equal to kernel_size for a predicted law, got "
                     f"stride={stride}, kernel_size={kernel_size}")


def predicted_law(quantity: str, layers, kernel_size: int, stride: int,
                  prefactor: float = 1.0) -> np.ndarray:
    """Predicted ``D_l``, ``G_l`` or ``R_l`` against the layer index ``l`` (for plots), float64.

    ``quantity`` in ``{"D", "G", "R"}`` (``"D_f"``, ``"G_f"``, ``"R_f"`` accepted too); ``layers`` array of
    layer indices ``l >= 1``; the law is ``prefactor * l^e`` for stride 1 and ``prefactor * s^(e l)`` for
    stride = kernel_size = ``s`` (exponents from :func:`predicted_exponents`). In particular the stride-2
    R line is ``4^-l``, not the constant drawn in the original notebook (fixed here).
    """
    q = str(quantity).removesuffix("_f")
    exps = predicted_exponents(kernel_size, stride)
    if q not in exps:
        raise ValueError(f"quantity must be one of 'D', 'G', 'R' (or 'D_f', 'G_f', 'R_f'), got {quantity!r}")
    l = np.asarray(layers, dtype=np.float64)
    if np.any(l < 1):
        raise ValueError("layers must be layer indices >= 1")
    if stride == 1:
        return prefactor * l ** exps[q]
    return prefactor * float(stride) ** (exps[q] * l)


def fit_exponents(table: pd.DataFrame, stride: int, first_layer: int = 1,
                  last_layer: int | None = None) -> dict[str, float]:
    """Least-squares exponents of ``D_f, G_f, R_f`` against the layer index, in the form of the laws.

    Stride 1: slope of ``log Q`` against ``log l``; stride ``s > 1``: slope of ``log_s Q`` against ``l``.
    Uses the rows of ``table`` (a :func:`constant_filter_stabilities` table) with
    ``first_layer <= layer <= last_layer``. Returns ``{"D": ..., "G": ..., "R": ...}``.
    """
    stride = check_int("stride", stride, minimum=1)
    first_layer = check_int("first_layer", first_layer, minimum=1)
    t = table[table["layer"] >= first_layer]
    if last_layer is not None:
        t = t[t["layer"] <= last_layer]
    if len(t) < 2:
        raise ValueError("table must hold at least two layers in [first_layer, last_layer] to fit")
    l = t["layer"].to_numpy(dtype=np.float64)
    xs = np.log(l) if stride == 1 else l
    scale = 1.0 if stride == 1 else math.log(stride)
    return {q: float(np.polyfit(xs, np.log(t[f"{q}_f"].to_numpy(dtype=np.float64)) / scale, 1)[0])
            for q in ("D", "G", "R")}


@torch.no_grad()
def spread(kernel_size: int, stride: int, depth: int, position: int | None = None,
           one_filters: bool = False, bias: float = 0.0) -> pd.DataFrame:
    """How a one-hot input spreads through a :class:`ConstantFiltersCNN` (for the notebook's drawing).

    The input has length ``N = RF(kernel_size, stride, depth) + 1`` and a single 1 at ``position``
    (default ``N // 2``). Returns a long DataFrame with one row per (layer, position): ``layer``
    (0 = input, ``1..depth`` = after each ReLU), ``position`` (index in that layer's output), ``value``.
    The notebook draws filter 5 stride 1 and filter 2 stride 2.
    """
    net = ConstantFiltersCNN(kernel_size, stride, depth, one_filters=one_filters, bias=bias).double()
    N = input_size(kernel_size, stride, depth)
    if position is None:
        position = N // 2
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not 0 <= position < N:
        raise ValueError(f"position must be an integer in [0, {N - 1}] (input length N = {N}), "
                         f"got {position!r}")
    x = torch.zeros(1, N, dtype=torch.float64)
    x[0, position] = 1.0
    acts = [x[0]] + [a[0] for a in net.layer_outputs(x)]
    frames = [pd.DataFrame({"layer": layer, "position": np.arange(a.numel()), "value": a.numpy()})
              for layer, a in enumerate(acts)]
    return pd.concat(frames, ignore_index=True)
