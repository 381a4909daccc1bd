"""Relative stability of a network to diffeomorphisms and to noise, layer by layer.

Definitions: ``book/methods.md``, section "Stabilities".  For a function ``f`` (the network output, or the
flattened activations of one node of its graph) and ``P`` probes ``x_i`` with their deformed versions
``tau x_i`` and noisy versions ``x_i + eta_i`` (``||eta_i|| = ||tau x_i - x_i||``), a probe set
:class:`~stabkit.probes.Probes` made by :func:`~stabkit.probes.draw_probes`:

* ``D = (1/P) sum_i ||f(tau x_i) - f(x_i)||^2``, ``G = (1/P) sum_i ||f(x_i + eta_i) - f(x_i)||^2``;
* ``deno = (1/P^2) sum_{i,j} ||f(x_i) - f(x_j)||^2 + 1e-10`` over all ordered pairs *including* ``i = j``
  (what the paper computed), evaluated exactly as ``2 mean_i ||f_i - c||^2 - 2 ||mean_i (f_i - c)||^2``
  with a shift ``c`` (the mean of the first streamed batch) that removes the cancellation;
* ``D_f = D / deno``, ``G_f = G / deno``, ``R_f = D / G``.

:func:`measure` streams the probes through the network once, node by node of its FX graph
(:mod:`stabkit.graph`), and accumulates these sums per node in float64, so that memory does not grow with
the number of layers or of probes.  :func:`stability` computes the same two numbers from stored outputs
(and the median variant).  :func:`shuffle_channels` makes the channel-shuffled control network
(``book/methods.md``, section "Channel shuffling").
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import pandas as pd
import torch
from torch import fx, nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from .checks import check_choice, check_float, check_int
from .graph import (
    LAYER_OPS,
    LayerInterpreter,
    activation_nodes,
    eval_mode,
    is_activation,
    layer_name,
    layer_nodes,
    model_device,
    node_kind,
    on_depth_axis,
    output_node,
    resolve_device,
    strict_float32,
    trace,
)
from .probes import Probes, as_probes, check_probe_tensor
from .protocol import RELU_CONVENTIONS

__all__ = [
    "COLUMNS",
    "layer_names",
    "measure",
    "shuffle_channels",
    "stability",
]

#: Added to every denominator (as in the paper) so that a constant function gives finite ratios.
EPS = 1e-10

#: Columns of the table returned by :func:`measure`, in order.
COLUMNS = ["layer", "depth", "rel_depth", "kind", "features", "D", "G", "deno", "D_f", "G_f", "R_f", "P"]

LAYER_CHOICES = ("all", "output")


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return math.nan if a == 0 else math.inf


# --------------------------------------------------------------------------------------- stability
def _median0(t: torch.Tensor) -> torch.Tensor:
    """Median over axis 0, midpoint of the two central values when the count is even."""
    v = t.sort(dim=0).values
    m = t.shape[0] // 2
    return v[m] if t.shape[0] % 2 else 0.5 * (v[m - 1] + v[m])


def stability(o: torch.Tensor, op: torch.Tensor, mean: bool = True) -> tuple[float, float]:
    """The paper's two numbers for one function: ``(nume, deno)``.

    Args:
        o: ``[P, ...]`` outputs of the function on the clean probes (any trailing shape; flattened).
        op: ``[P, ...]`` outputs on the perturbed probes (same shape).
        mean: ``True``: ``nume = (1/P) sum_i ||op_i - o_i||^2``.  ``False``: the median variant of the
            2021 paper, ``nume = sum over features of the median over probes of (op - o)^2`` (median =
            midpoint of the two central values for even ``P``).  Only the numerator changes.

    Returns:
        ``(nume, deno)`` as Python floats computed in float64, with
        ``deno = (1/P^2) sum_{i,j} ||o_i - o_j||^2 + 1e-10`` over all ordered pairs including ``i = j``.
        So ``D_f = nume / deno`` for ``op = f(tau x)`` and ``G_f`` likewise for ``op = f(x + eta)``.
    """
    o = check_probe_tensor(o, "o")
    op = check_probe_tensor(op, "op")
    if o.shape != op.shape:
        raise ValueError(f"o and op must have the same shape; got {tuple(o.shape)} and {tuple(op.shape)}")
    P = o.shape[0]
    o = o.reshape(P, -1).to(torch.float64)
    op = op.reshape(P, -1).to(torch.float64)
    d2 = (op - o).abs().pow(2)
    nume = d2.sum(1).mean() if mean else _median0(d2).sum()
    oc = o - o.mean(0)
    # (1/P^2) sum_ij ||o_i - o_j||^2 = 2 mean ||o_i||^2 - 2 ||mean o||^2 ; centred: the second term is 0.
    deno = 2.0 * oc.abs().pow(2).sum(1).mean() + EPS
    return float(nume), float(deno)


# ---------------------------------------------------------------------------------------- shuffling
def shuffle_channels(model: nn.Module, mode: int = 1, generator: torch.Generator | None = None) -> nn.Module:
    """Channel-shuffling control (``book/methods.md``, "Channel shuffling"): a deep copy of ``model`` with permuted conv filters.

    For every parameter with 3 or more dimensions (conv weights ``[C_out, C_in, k, k]``, 1-D conv
    ``[C_out, C_in, k]``, 3-D conv), in ``model.modules()`` order: ``mode=1`` permutes the input-channel
    axis with one random permutation per parameter; ``mode=2`` also permutes the output-channel axis with
    an independent permutation (drawn after the input one).  For ``ConvTranspose`` weights
    (``[C_in, C_out/groups, ...]``) the axes are swapped accordingly.  Biases, batch-norm and linear layers
    are untouched; ``mode=0`` returns an unchanged copy.  The original ``model`` is not modified.

    Mode 1 preserves, for every output channel, the multiset of its ``k x k`` filters and hence their sum
    over input channels (spatial pooling survives, channel pooling does not).  Permutations come from
    ``torch.randperm(..., generator=generator)`` on the generator's device (global CPU RNG if ``None``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(mode, bool) or mode not in (0, 1, 2):
        raise ValueError(f"mode must be 0 (no shuffle), 1 (input channels) or 2 (input and output "
                         f"channels); got {mode!r}")
    new = copy.deepcopy(model)
    if mode == 0:
        return new
    gen_device = generator.device if generator is not None else torch.device("cpu")
    seen: set[int] = set()
    with torch.no_grad():
        for module in new.modules():
            transposed = isinstance(module, _ConvTransposeNd)
            for _, param in module.named_parameters(recurse=False):
                if param.ndim < 3 or id(param) in seen:
                    continue
                seen.add(id(param))
                in_axis, out_axis = (0, 1) if transposed else (1, 0)
                axes = [in_axis] if mode == 1 else [in_axis, out_axis]
                for axis in axes:
                    perm = torch.randperm(param.shape[axis], generator=generator, device=gen_device)
                    param.copy_(param.index_select(axis, perm.to(param.device)))
    return new


class _Scratch:
    """Float64 work buffers reused across nodes and batches (on CPU, a fresh allocation of a large
    temporary is paid in page faults at every node)."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, key: str, numel: int, device: torch.device) -> torch.Tensor:
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < numel or buf.device != device:
            buf = self.buffers[key] = torch.empty(numel, dtype=torch.float64, device=device)
        return buf[:numel]


class _Accumulator:
    """Float64 running sums for one node: sum ||f(tau x)-f(x)||^2, sum ||f(x+eta)-f(x)||^2,
    sum (f - c), sum ||f - c||^2, with the shift ``c`` = mean of the first batch's clean outputs."""

    __slots__ = ("c", "features", "n", "s1", "s2", "sD", "sG")

    def __init__(self) -> None:
        self.sD = self.sG = self.s2 = 0.0
        self.s1 = self.c = None
        self.n = 0

    def add(self, value: torch.Tensor, b: int, scratch: _Scratch) -> None:
        value = value.detach().reshape(3 * b, -1)
        F_ = value.shape[1]
        n = b * F_
        if value.dtype == torch.float64:
            f = value
        else:  # convert into a reused buffer (fresh large allocations cost page faults on CPU)
            f = scratch.get("f", 3 * n, value.device).view(3 * b, F_)
            f.copy_(value)
        o = f[:b]
        if self.c is None:
            self.c = o.mean(0)
            self.s1 = torch.zeros_like(self.c)
            self.features = F_
        elif F_ != self.features:
            raise ValueError(f"a node changed its number of features between batches "
                             f"({self.features} -> {F_})")
        # Squared norms as BLAS dot products (one pass, no squared temporary); the sums stay on the
        # device (no host synchronisation per node and batch).
        d = scratch.get("d", 2 * n, f.device).view(2, n)
        torch.sub(f[b:].reshape(2, n), o.reshape(1, n), out=d)
        self.sD = self.sD + torch.dot(d[0], d[0])
        self.sG = self.sG + torch.dot(d[1], d[1])
        oc = d.view(-1)[:n].view(b, F_)
        torch.sub(o, self.c, out=oc)
        self.s1 += oc.sum(0)
        oc = oc.view(-1)
        self.s2 = self.s2 + torch.dot(oc, oc)
        self.n += b

    def result(self) -> dict:
        P = self.n
        D = float(self.sD) / P
        G = float(self.sG) / P
        mean = self.s1 / P
        deno = 2.0 * float(self.s2) / P - 2.0 * float(mean.dot(mean)) + EPS
        return {"features": self.features, "D": D, "G": G, "deno": deno, "D_f": D / deno,
                "G_f": G / deno, "R_f": _ratio(D, G), "P": P}


def _needs_copy(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> bool:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device != device or (dtype is not None and t.dtype.is_floating_point and t.dtype != dtype):
            return True
    return False


def _after_last_conv(gm: fx.GraphModule) -> set:
    """Nodes that come after the last convolution: for CNNs the cheap dense head."""
    nodes = list(gm.graph.nodes)
    convs = [i for i, n in enumerate(nodes) if n.op == "call_module" and isinstance(gm.get_submodule(n.target), _ConvNd)]
    if not convs:
        return set()
    return {n for n in nodes[convs[-1] + 1:] if n.op in LAYER_OPS}


def _depth_nodes(gm: fx.GraphModule) -> set:
    """Layer nodes that are not on the depth axis (pure reshapes other than the output)."""
    return {n for n in layer_nodes(gm) if not on_depth_axis(n, gm)}


def _check_fits(gm: fx.GraphModule, x: torch.Tensor, name: str) -> None:
    """Refuse, naming ``name``, an input whose channels do not match a convolution that reads it directly."""
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        for user in node.users:
            if user.op == "call_module":
                module = gm.get_submodule(user.target)
                if isinstance(module, _ConvNd) and x.ndim >= 2 and x.shape[1] != module.in_channels:
                    raise ValueError(f"{name} has {x.shape[1]} channels (shape {tuple(x.shape)}) but the model's "
                                     f"first convolution {layer_name(user)!r} takes {module.in_channels}")
        return  # only the first input is the probes


def layer_names(model: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Names of the nodes of ``model``'s FX graph (eval mode), in execution order, as torchvision's
    ``get_graph_node_names`` names them, without the input placeholder and parameter reads.

    Without ``x`` the list is static: every node, including those whose value is not a tensor (e.g.
    ``x.size(0)``) and pure reshapes (view, flatten...).  With an example input ``x`` (``[P, ...]``, run once
    in eval mode, without gradients, after conversion to the model's dtype and device) only the layers are
    kept: the nodes whose value is a floating tensor with the batch axis first, less the pure reshapes
    (except the output): exactly the rows of ``measure(model, ..., layers="all")``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    gm = trace(model)
    nodes = layer_nodes(gm)
    if x is None:
        return [layer_name(n) for n in nodes]
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise ValueError(f"x must be a tensor [P, ...]; got {type(x).__name__}")
    skip = _depth_nodes(gm)
    with eval_mode(model), torch.no_grad():
        return [layer_name(n) for n in activation_nodes(gm, x) if n not in skip]


# ------------------------------------------------------------------------------------------ measure
def measure(model: nn.Module, probes: Probes | Sequence[torch.Tensor] | torch.Tensor, /, *,
            layers: str | Sequence[str] = "all", batch_size: int | None = None,
            dtype: torch.dtype | None = torch.float64, device: str | torch.device | None = None,
            batch_stats: bool = False, relu_convention: str = "true", delta: float | None = None,
            cut: int | None = None, interpolation: str | None = None, seed: int | None = None) -> pd.DataFrame:
    """Diffeomorphism and noise stabilities of every layer of ``model``'s computation graph
    (``book/methods.md``, section "Stabilities").

    Args:
        model: any ``nn.Module`` traceable by ``torch.fx`` with one required input.  It is run in eval
            mode; the training flags of all its modules are restored afterwards, its parameters and
            buffers are never modified (a deep copy is used when converting dtype/device).
        probes: a :class:`~stabkit.probes.Probes` ``(x, x_tau, x_eta)`` (e.g. from
            :func:`~stabkit.probes.draw_probes`, or made elsewhere: the pixel moves of the scale-detection
            task, 1-D inputs), three floating tensors ``[P, ...]`` of equal shapes, ``P >= 2``.  Or images
            ``x`` ``[P, C, n, n]``: then the probes are drawn with ``draw_probes(x, delta=delta, cut=cut,
            interpolation=interpolation, seed=seed)`` (defaults 1, 3, "bilinear", 0), so that several networks
            measured with the same ``x`` and ``seed`` share one probe set.  ``delta``, ``cut``,
            ``interpolation`` are refused with a :class:`~stabkit.probes.Probes`.
            Inputs are the network's own (normalised floats): uint8 images are refused.
        layers: ``"all"`` (every layer: every node whose value is a floating tensor ``[P, ...]``, in
            execution order, less the input and the pure reshapes such as view or flatten, which repeat
            the node before them; the output is always a layer), ``"output"`` (the node the model
            returns), or a list of layer names as in ``layer_names(model, x)``.
        batch_size: probes per forward chunk (each forward holds ``3 * batch_size`` inputs).  Default:
            ``min(P, 64)``, or ``P`` with ``batch_stats`` (batch statistics over all ``P`` probes; a smaller
            ``batch_size`` makes them per chunk).  Peak memory is about the few largest live activations
            of ``3 * batch_size`` inputs in ``dtype`` (VGG11 / CIFAR ResNet18 at 32x32, float64, default:
            well under 2 GB; with ``batch_stats`` and ``P = 500`` several GB on CPU: pass ``batch_size``
            to trade exactness of the batch statistics for memory).
        dtype: dtype of the forward pass (default float64, the reference).  Accumulation is always in
            float64.  ``torch.float32`` is faster on CPU and GPU; its relative error on ``D_f, G_f, R_f``
            is typically 1e-8 .. 1e-6 (rounding of the activations relative to their differences); on CUDA
            TF32 is switched off for the duration (:func:`stabkit.graph.strict_float32`).  With a dtype
            below float64, the nodes after the last convolution (the cheap dense head of a CNN) run in
            float64, because rounding the nearly constant outputs of a head at ``eps * |f|`` would swamp
            their small differences.  ``None`` keeps the model's dtype.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"`` (CUDA if available) or a
            ``torch.device``: where the network runs (default: the model's device, else the probes').
        batch_stats: batch-norm layers (``nn.BatchNorm*`` modules) use the statistics of the current
            batch instead of their running statistics (the paper's "at initialisation" convention),
            computed separately for the clean, deformed and noisy probes (as three separate forwards
            would); running statistics are not updated.  Everything else stays in eval mode.
        relu_convention: ``"true"`` (default): every layer's own value.  ``"inplace"``: at every node
            overwritten by an in-place ReLU of the model (``nn.ReLU(inplace=True)``, ``F.relu(...,
            inplace=True)``, ``relu_``), the post-ReLU value, as the original code's feature extraction
            reported it (its VGG and AlexNet use in-place ReLUs: conv nodes, or batch-norm nodes with batch
            norm, then show the ReLU's value).  Models without in-place ReLUs give the same table.
        delta, cut, interpolation, seed: see ``probes`` (images only).

    Returns:
        ``pandas.DataFrame``, one row per layer in execution order, columns :data:`COLUMNS`:
        ``layer`` (node name), ``depth`` (1-based position among all layers, as in ``layers="all"``),
        ``rel_depth`` (``depth / number of layers``, so the output is 1), ``kind`` (module class such as
        ``Conv2d``, or function / method name such as ``add``), ``features`` (values per probe), ``D``,
        ``G``, ``deno``, ``D_f``, ``G_f``, ``R_f`` and ``P``.

    Only the mean numerators are streamed; for the median variant store the outputs and call
    :func:`stability` with ``mean=False``.  The clean, deformed and noisy chunks go through the network
    in one forward (concatenated along the batch axis).  The channel-shuffled control is measured as
    ``measure(shuffle_channels(model, k, generator), probes)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(layers, str):
        if layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be 'all', 'output' or a list of node names; got {layers!r}")
    elif not (isinstance(layers, (list, tuple)) and layers and all(isinstance(s, str) for s in layers)):
        raise ValueError(f"layers must be 'all', 'output' or a non-empty list of node names; got {layers!r}")
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype or None; got {dtype!r}")
    if batch_stats not in (True, False):
        raise TypeError(f"batch_stats must be True or False, got {batch_stats!r}")
    check_choice("relu_convention", relu_convention, RELU_CONVENTIONS)
    if delta is not None:
        check_float("delta", delta, minimum=0.0)

    # ---- device and probes
    if device is None:
        device = model_device(model)
        if device is None:
            first = probes if isinstance(probes, torch.Tensor) else (probes[0] if isinstance(probes, (tuple, list))
                                                                    and probes else None)
            device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
    device = resolve_device(device)
    (x0, x_tau, x_eta), xname = as_probes(probes, delta, cut, interpolation, seed, device)
    if seed is not None and xname != "x":
        raise ValueError("seed applies only when measure is given images x to draw probes from")
    P = x0.shape[0]
    b = batch_size if batch_size is not None else (P if batch_stats else min(P, 64))
    b = min(int(b), P)

    # ---- model (never modified: copy when something must change)
    if _needs_copy(model, device, dtype):
        work = copy.deepcopy(model)
        work = work.to(device=device, dtype=dtype) if dtype is not None else work.to(device)
    else:
        work = model
    in_dtype = dtype
    if in_dtype is None:
        floats = [p.dtype for p in work.parameters() if p.dtype.is_floating_point]
        in_dtype = floats[0] if floats else x0.dtype
    with eval_mode(work), strict_float32(device.type == "cuda"), torch.no_grad():
        gm = trace(work)
        candidates = layer_nodes(gm)
        skip = _depth_nodes(gm)
        position = {n: i for i, n in enumerate(gm.graph.nodes)}
        by_name = {layer_name(n): n for n in candidates}
        if layers == "output":
            out = output_node(gm)
            if out is None:
                raise ValueError("layers='output' needs a model whose forward returns one computed tensor")
            selected = {out}
        elif layers == "all":
            selected = set(candidates) - skip
        else:
            unknown = [s for s in layers if s not in by_name]
            if unknown:
                raise ValueError(f"layers contains unknown node names {unknown}; accepted: 'all', 'output' "
                                 f"or names from layer_names(model, x), e.g. {list(by_name)[:5]}")
            reshapes = [s for s in layers if by_name[s] in skip]
            if reshapes:
                raise ValueError(f"layers contains pure reshape nodes {reshapes}: they repeat the node before "
                                 f"them and are not layers; accepted: names from layer_names(model, x)")
            selected = {by_name[s] for s in layers}
        _check_fits(gm, x0, xname)

        # A lower-precision forward rounds the (often nearly constant, bias-dominated) outputs of the dense
        # head at eps * |f|, which swamps their small differences: run the cheap head in float64.
        head64 = _after_last_conv(gm) if torch.finfo(in_dtype).bits < 64 else set()
        interpreter = LayerInterpreter(gm, batch_stats_parts=3 if batch_stats else 0, float64_nodes=head64,
                                       inplace_relu=relu_convention == "inplace")
        accs: dict[fx.Node, _Accumulator] = {}
        scratch = _Scratch()
        order: list[fx.Node] = []  # the layers (tensor-valued, not reshapes), seen in the first chunk

        for start in range(0, P, b):
            stop = min(start + b, P)
            bb = stop - start
            batch = torch.cat([t[start:stop].to(device=device, dtype=in_dtype) for t in (x0, x_tau, x_eta)])
            first = start == 0

            def hook(node, value, bb=bb, first=first):
                if first:
                    if node in skip or not is_activation(value, 3 * bb):
                        return
                    order.append(node)
                    if node in selected:
                        accs[node] = _Accumulator()
                if node in accs:
                    accs[node].add(value, bb, scratch)

            interpreter.hook = hook
            if not first:
                interpreter.run(batch)
                continue
            try:
                interpreter.run(batch)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as err:  # a shape or dtype mismatch inside the network: say which input
                msg = str(err).split("\n\nWhile executing")[0]
                raise ValueError(f"{xname} (shape {tuple(x0.shape)}) does not fit the model: {msg}") from err

    if isinstance(layers, (list, tuple)) or layers == "output":
        missing = [layer_name(n) for n in selected if n not in accs]
        if missing:
            raise ValueError(f"layers {missing} do not produce a floating tensor with the batch axis first")
    order.sort(key=position.__getitem__)  # an in-place ReLU reports the node it overwrote after itself
    total = len(order)
    rows = []
    for depth, node in enumerate(order, start=1):
        if node not in accs:
            continue
        row = {"layer": layer_name(node), "depth": depth, "rel_depth": depth / total, "kind": node_kind(node, gm)}
        row.update(accs[node].result())
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
