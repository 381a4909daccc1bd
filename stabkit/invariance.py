"""Invariance of activations to a set of transformations: TV, SV and NV, layer by layer.

See ``book/probes.md`` (the rotation page and "Conventions").

For one activation ``a`` (one unit of one layer) and ``N`` samples ``x_i``, ``T`` transformations ``t``,
the samples x transformations matrix is ``M[i, t] = a(t(x_i))``. With ``s`` the unbiased standard deviation
(``stat="std"``, the default, as the original measures: it calls them variances) or the unbiased variance
(``stat="var"``):

- transformation variance ``TV = mean_i s_t(M[i, t])`` (how much the unit moves when one image is
  transformed),
- sample variance ``SV = mean_t s_i(M[i, t])`` (how much it moves across images),
- normalised variance ``NV = TV / SV`` with ``0/0 = 1`` and ``x/0 = inf`` (the number of infinite values
  is reported). NV < 1: more invariant to the transformations than to a change of image.

Stratified (``stratify=True``): the measures are computed within each class and the per-class NV (TV, SV)
averaged with equal weights. Convolutional activations ``[C, H, W]`` are either kept per position
(``aggregate="none"``) or reduced per channel over H, W (``"mean"``, ``"sum"`` (the 2019 experiments),
``"max"``).

The statistics are streamed in float64 over batches of samples: per layer the memory is ``O(T x A)``
(a Welford mean / M2 per transformation, merged across batches with Chan's formula) plus ``O(b x A)`` for
the batch being processed (a Welford over the transformations per sample); the full ``N x T x A`` array
is never formed. Layers are the nodes of the model's FX graph (:func:`stabkit.graph.trace`), named as
:mod:`stabkit.stability` names them and run by the same :class:`stabkit.graph.LayerInterpreter`.

Global summaries of a net (pooled over every activation, or the mean of the per-layer means) are in
:mod:`stabkit.robustness` (:func:`~stabkit.robustness.global_nv`, :func:`~stabkit.robustness.layer_mean_nv`).

Public API: :func:`invariance` (tables), :func:`rotations`, :func:`identity_transforms`,
:class:`Transformation`, :func:`measures_from_array` (direct computation on a full array, the reference
for tests), :func:`nv_ratio`. Devices are resolved by :func:`stabkit.graph.measurement_device`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


import numpy as np
import pandas as pd
import torch
from torch import nn

from . import graph
from .checks import check_choice, check_int
from .graph import (LayerInterpreter, activation_nodes, eval_mode, is_reshape, layer_name, node_kind, on_depth_axis,
                    trace)
from .transforms import normalize, rotate

__all__ = ["STATS", "AGGREGATIONS", "Transformation", "rotations", "identity_transforms", "invariance",
           "measures_from_array", "nv_ratio"]

#: The dispersion statistic, unbiased standard deviation (as the original) or unbiased variance.
STATS = ("std", "var")
#: Reduction of a feature map ``[C, H, W]`` per channel over H, W (``none``: one activation per position).
AGGREGATIONS = ("none", "mean", "sum", "max")


@dataclass(frozen=True)
class Transformation:
    """One deterministic transformation ``fn(images [B, C, H, W]) -> images`` with a name and the value of
    its parameter (e.g. the angle in degrees), recorded in the tables."""
    name: str
    value: float
    fn: Callable[[torch.Tensor], torch.Tensor] = field(compare=False, repr=False)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


def rotations(angles: Sequence[float] | None = None, n: int = 16, interpolation: str = "bilinear",
              padding: str = "zeros") -> list[Transformation]:
    """Rotations by explicit angles in **degrees** (default: ``n`` angles evenly over 360, i.e.
    0, 22.5, ..., 337.5 for n = 16, as in the 2019 paper), with :func:`stabkit.transforms.rotate`
    (multiples of 90 exact). ``padding="zeros"`` is black when applied before normalisation."""
    if angles is None:
        n = check_int("rotations: n", n, minimum=2)
        angles = [360.0 * i / n for i in range(n)]
    angles = [float(a) for a in angles]
    if len(angles) < 2:
        raise ValueError("rotations: angles must hold at least 2 angles (std over transformations)")
    rotate(torch.zeros(1, 1, 2, 2), 0.0, interpolation, padding)  # check the options now (clear errors)
    return [Transformation("rotate", a, (lambda x, a=a: rotate(x, a, interpolation, padding))) for a in angles]


def identity_transforms(n: int = 4) -> list[Transformation]:
    """``n`` copies of the identity (sanity check: TV = 0)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"identity_transforms: n must be an integer >= 2, got {n!r}")
    return [Transformation("identity", float(i), lambda x: x) for i in range(n)]


# ------------------------------------------------------------------------------------------ statistics
def nv_ratio(tv: np.ndarray | torch.Tensor, sv: np.ndarray | torch.Tensor) -> np.ndarray:
    """``TV / SV`` elementwise with ``0/0 = 1`` and ``x/0 = inf`` (float64 numpy)."""
    tv = np.asarray(tv.cpu() if isinstance(tv, torch.Tensor) else tv, dtype=np.float64)
    sv = np.asarray(sv.cpu() if isinstance(sv, torch.Tensor) else sv, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        nv = tv / sv
    nv = np.where(sv == 0, np.where(tv == 0, 1.0, np.inf), nv)
    return nv


def _s(m2: torch.Tensor, n: int, stat: str) -> torch.Tensor:
    var = m2 / (n - 1)
    return var.clamp_min(0).sqrt() if stat == "std" else var


def measures_from_array(M, stat: str = "std", labels=None) -> dict[str, np.ndarray]:
    """Direct (non-streaming) TV, SV, NV from a full array ``M [N, T, A]`` (or ``[N, T]``), float64.
    With ``labels [N]``, stratified: per-class measures averaged with equal weights.
    Returns ``{"TV": [A], "SV": [A], "NV": [A]}``. Reference implementation for tests."""
    check_choice("stat", stat, STATS)
    M = np.asarray(M, dtype=np.float64)
    if M.ndim == 2:
        M = M[:, :, None]
    if labels is not None:
        labels = np.asarray(labels)
        parts = [measures_from_array(M[labels == c], stat) for c in np.unique(labels)]
        return {k: np.mean([p[k] for p in parts], axis=0) for k in ("TV", "SV", "NV")}
    f = (lambda v: v) if stat == "var" else np.sqrt
    tv = f(M.var(axis=1, ddof=1)).mean(axis=0)
    sv = f(M.var(axis=0, ddof=1)).mean(axis=0)
    return {"TV": tv, "SV": sv, "NV": nv_ratio(tv, sv)}


class _Stream:
    """Streaming TV / SV accumulators of one layer (float64)."""

    def __init__(self, n_transforms: int, stat: str):
        self.T, self.stat = n_transforms, stat
        self.n = 0  # samples seen
        self.mean_t = self.m2_t = None  # [T, A] per-transformation statistics across samples
        self.tv_sum = None  # [A] sum over samples of s_t
        self._ms = self._m2s = None  # [b, A] per-sample Welford over transformations (current batch)

    def start_batch(self) -> None:
        self._ms = self._m2s = None

    def update(self, t: int, a: torch.Tensor) -> None:
        """Activations ``a [b, A]`` (float64) of the current batch under transformation ``t``
        (transformations must come in order 0..T-1 for each batch)."""
        b = a.shape[0]
        if self.mean_t is None:
            A = a.shape[1]
            self.mean_t = torch.zeros(self.T, A, dtype=torch.float64, device=a.device)
            self.m2_t = torch.zeros_like(self.mean_t)
            self.tv_sum = torch.zeros(A, dtype=torch.float64, device=a.device)
        # per-sample Welford over transformations
        if t == 0:
            self._ms, self._m2s = a.clone(), torch.zeros_like(a)
        else:
            d = a - self._ms
            self._ms += d / (t + 1)
            self._m2s += d * (a - self._ms)
        # per-transformation statistics across samples: merge the batch (Chan et al.)
        mb = a.mean(0)
        m2b = ((a - mb) ** 2).sum(0)
        na = self.n
        tot = na + b
        d = mb - self.mean_t[t]
        self.mean_t[t] += d * (b / tot)
        self.m2_t[t] += m2b + d * d * (na * b / tot)
        if t == self.T - 1:
            self.tv_sum += _s(self._m2s, self.T, self.stat).sum(0)
            self.n += b
            self._ms = self._m2s = None

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        tv = self.tv_sum / self.n
        sv = _s(self.m2_t, self.n, self.stat).mean(0)
        return tv, sv


# ------------------------------------------------------------------------------------------- measuring
def _aggregate(a: torch.Tensor, how: str) -> torch.Tensor:
    """[B, ...] -> [B, A] float64: feature maps [B, C, *spatial] reduced per channel unless ``none``."""
    a = a.detach()
    if a.dim() <= 2 or how == "none":
        return a.reshape(a.shape[0], -1).to(torch.float64)
    a = a.to(torch.float64).flatten(2)
    if how == "mean":
        return a.mean(2)
    if how == "sum":
        return a.sum(2)
    return a.amax(2)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """Pixel images as floats: uint8 scaled to [0, 1], floating dtypes kept."""
    return x if x.is_floating_point() else x.float() / 255.0


def _stream_subset(interpreter, nodes, images, transformations, aggregate, stat, batch_size, normalise, device):
    """``{node: (TV, SV)}`` of ``images`` streamed in batches through ``interpreter``."""
    streams = {node: _Stream(len(transformations), stat) for node in nodes}
    N = images.shape[0]
    for start in range(0, N, batch_size):
        xb = _pixels(images[start:start + batch_size].to(device))
        for t, tr in enumerate(transformations):
            def hook(node, value, t=t):
                if isinstance(value, torch.Tensor):
                    streams[node].update(t, _aggregate(value, aggregate))
            interpreter.hook = hook
            interpreter.run(normalise(tr(xb)))
    return {node: streams[node].result() for node in nodes}


@torch.no_grad()
def invariance(model: nn.Module, images: torch.Tensor, transformations: Sequence[Transformation | Callable],
               labels: torch.Tensor | None = None, *, layers: Sequence[str] | None = None,
               stratify: bool = False, aggregate: str = "mean", stat: str = "std", batch_size: int = 64,
               mean=None, std=None, device: str | torch.device | None = None,
               per_activation: bool = False) -> dict[str, pd.DataFrame]:
    """TV, SV and NV of every activation of every layer, streamed over batches.

    Args:
        model: any ``nn.Module`` traceable by ``torch.fx``; evaluated in eval mode (restored after).
        images: [N, C, H, W] in pixel space: uint8 (scaled to [0, 1]) or float (finite: NaN or inf is
            refused). The transformations are applied there, then
            :func:`stabkit.transforms.normalize` with ``mean``, ``std`` (per channel) if given.
        transformations: T >= 2 deterministic transformations (:class:`Transformation` or plain
            callables), the same for every sample, e.g. :func:`rotations`.
        labels: [N] class labels; required when ``stratify``.
        layers: FX node names (default: every node whose value is a floating tensor with the batch axis
            first: the rows of :func:`stabkit.stability.measure` plus the pure reshapes, flagged).
        stratify: compute within each class, then average the per-class measures (equal weights).
        aggregate: ``"none"`` (one activation per position) | ``"mean"`` (default) | ``"sum"`` | ``"max"``
            (per channel over H, W); non-spatial layers are left as they are.
        stat: ``"std"`` (default, the original's unbiased std) | ``"var"`` (unbiased variance).
        batch_size: samples per forward pass (each is repeated for the T transformations).
        mean, std: per-channel normalisation applied after the transformations (None: none).
        device: where to compute: the model's device (``None``, the default, or ``"auto"``), else
            ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device`` (checked, see
            :func:`stabkit.graph.resolve_device`).
        per_activation: also return the per-activation table (for heatmaps).

    Returns:
        ``{"layers": DataFrame}`` with one row per layer: ``layer, depth (1-based position among the
        layers on the depth axis, as in stability.measure: pure reshapes such as view or flatten are not
        on it and get nan), rel_depth (depth / number of such layers; the output is 1), n_activations,
        mean_NV (mean of the finite
        NV), median_NV, n_inf (activations with SV = 0 < TV), mean_TV, mean_SV, stat, aggregate,
        stratified, n_samples, n_transforms, transform, kind`` (module class or function name),
        ``reshape`` (True for nodes that only rearrange the node before them: view, flatten, ...; they
        repeat that layer, are off the depth axis and are left out of the global NV), ``n_finite`` (activations with a finite
        NV); plus ``"activations"`` (``layer, depth, rel_depth, activation, TV, SV, NV``) if
        ``per_activation``.
    """
    check_choice("stat", stat, STATS)
    check_choice("aggregate", aggregate, AGGREGATIONS)
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a tensor [N, C, H, W], got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if images.is_floating_point() and images.numel() and not bool(torch.isfinite(images).all()):
        raise ValueError("images must be finite (no NaN or inf)")
    transformations = list(transformations)
    if len(transformations) < 2:
        raise ValueError(f"transformations must hold at least 2 transformations, got {len(transformations)}")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    N = images.shape[0]
    if stratify:
        if labels is None:
            raise ValueError("stratify=True needs labels [N]")
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).cpu()
        if labels.shape[0] != N:
            raise ValueError(f"labels must have shape [N] = [{N}], got {tuple(labels.shape)}")
    device = graph.measurement_device(model, device)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return normalize(x, mean, std)

    with eval_mode(model):
        gm = trace(model)
        # execution order: the rows of stability.measure(layers="all") plus the pure reshapes (off its depth axis)
        all_nodes = activation_nodes(gm, normalise(_pixels(images[:2].to(device))))
        all_names = [layer_name(n) for n in all_nodes]
        if layers is None:
            nodes = list(all_nodes)
        else:
            wanted = [layers] if isinstance(layers, str) else list(layers)
            unknown = [n for n in wanted if n not in all_names]
            if not wanted or unknown:
                raise ValueError(f"layers must be a non-empty list of node names of layer_names(model, x); "
                                 f"unknown {unknown}, accepted e.g. {all_names[:5]}")
            nodes = [n for n in all_nodes if layer_name(n) in set(wanted)]
        names = [layer_name(n) for n in nodes]
        axis = [n for n in all_nodes if on_depth_axis(n, gm)]  # the depth axis of stability.measure
        depth_of = {layer_name(n): i + 1 for i, n in enumerate(axis)}
        interpreter = LayerInterpreter(gm, nodes=nodes)
        if stratify:
            classes = torch.unique(labels).tolist()
            parts = []
            for c in classes:
                idx = (labels == c).nonzero().squeeze(1)
                if len(idx) < 2:
                    raise ValueError(f"stratify: class {c} has {len(idx)} sample(s); each class needs >= 2")
                parts.append(_stream_subset(interpreter, nodes, images[idx], transformations, aggregate, stat,
                                            batch_size, normalise, device))
            per = {}
            for node in nodes:
                tvs = [p[node][0].cpu().numpy() for p in parts]
                svs = [p[node][1].cpu().numpy() for p in parts]
                nvs = [nv_ratio(tv, sv) for tv, sv in zip(tvs, svs)]
                per[node] = (np.mean(tvs, 0), np.mean(svs, 0), np.mean(nvs, 0))
        else:
            if N < 2:
                raise ValueError(f"images must hold at least 2 samples, got {N}")
            res = _stream_subset(interpreter, nodes, images, transformations, aggregate, stat, batch_size,
                                 normalise, device)
            per = {}
            for node, (tv, sv) in res.items():
                tv, sv = tv.cpu().numpy(), sv.cpu().numpy()
                per[node] = (tv, sv, nv_ratio(tv, sv))
    L = len(depth_of)
    tname = ",".join(sorted({getattr(t, "name", getattr(t, "__name__", "custom")) for t in transformations}))
    rows, acts = [], []
    for node, name in zip(nodes, names):
        tv, sv, nv = per[node]
        finite = np.isfinite(nv)
        depth = depth_of.get(name, float("nan"))  # a pure reshape is off the depth axis
        rel = depth / L
        rows.append(dict(layer=name, depth=depth, rel_depth=rel, n_activations=int(nv.size),
                         mean_NV=float(nv[finite].mean()) if finite.any() else float("nan"),
                         median_NV=float(np.median(nv)) if nv.size else float("nan"),
                         n_inf=int(np.isinf(nv).sum()), mean_TV=float(tv.mean()), mean_SV=float(sv.mean()),
                         stat=stat, aggregate=aggregate, stratified=bool(stratify), n_samples=int(N),
                         n_transforms=len(transformations), transform=tname, kind=node_kind(node, gm),
                         reshape=bool(is_reshape(node, gm)), n_finite=int(finite.sum())))
        if per_activation:
            acts.append(pd.DataFrame(dict(layer=name, depth=depth, rel_depth=rel,
                                          activation=np.arange(nv.size), TV=tv, SV=sv, NV=nv)))
    out = {"layers": pd.DataFrame(rows)}
    if per_activation:
        out["activations"] = pd.concat(acts, ignore_index=True)
    return out
