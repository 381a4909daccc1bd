"""Relative stability of a network to diffeomorphisms and to noise, layer by layer (METHODS.md §3).

For a function ``f`` (the network output, or the flattened activations of one node of its graph) and
``P`` probes ``x_i`` with their deformed versions ``tau x_i`` and noisy versions ``x_i + eta_i``
(``||eta_i|| = ||tau x_i - x_i||``):

* ``D = (1/P) sum_i ||f(tau x_i) - f(x_i)||^2``, ``G = (1/P) sum_i ||f(x_i + eta_i) - f(x_i)||^2``;
* ``deno = (1/P^2) sum_{i,j} ||f(x_i) - f(x_j)||^2 + 1e-10`` over all ordered pairs *including* ``i = j``
  (what the paper computed), evaluated exactly as ``2 mean_i ||f_i - c||^2 - 2 ||mean_i (f_i - c)||^2``
  with a shift ``c`` (the mean of the first streamed batch) that removes the cancellation;
* ``D_f = D / deno``, ``G_f = G / deno``, ``R_f = D / G``.

:func:`measure` streams the probes through the network once, node by node of its FX graph, and
accumulates these sums per node in float64, so that memory does not grow with the number of layers or of
probes.  :func:`stability` computes the same two numbers from stored outputs (and the median variant).
"""
from __future__ import annotations

import copy
import math
import numbers
from typing import Callable, Optional, Sequence, Union

import pandas as pd
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvTransposeNd

from .transforms.diffeo import deform, diffeo_batch
from .transforms.noise import noisy_batch

__all__ = ["stability", "measure", "shuffle_channels", "layer_names", "draw_probes", "COLUMNS"]

#: Added to every denominator (as in the paper) so that a constant function gives finite ratios.
EPS = 1e-10

#: Columns of the table returned by :func:`measure`, in order.
COLUMNS = ["layer", "depth", "rel_depth", "kind", "features", "D", "G", "deno", "D_f", "G_f", "R_f", "P"]

LAYER_CHOICES = ("all", "output")

#: On CPU in float64, PyTorch's convolution unfolds the whole batch at once (im2col, ``k*k`` times the
#: input); running convolutions on slices of this many samples bounds that buffer with identical results.
CONV_CHUNK = 32


# ------------------------------------------------------------------------------------------ checks
def _check_outputs(t, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [P, ...]; got {type(t).__name__}")
    if t.ndim < 1 or t.shape[0] < 2:
        raise ValueError(f"{name} must have shape [P, ...] with at least P = 2 probes; "
                         f"got shape {tuple(t.shape)}")
    if not (t.dtype.is_floating_point or t.dtype.is_complex):
        t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must not contain NaN or inf")
    return t


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
    o = _check_outputs(o, "o")
    op = _check_outputs(op, "op")
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


# -------------------------------------------------------------------------------------- FX tracing
def _tracer():
    """torchvision's NodePathTracer with the defaults of ``get_graph_node_names`` (same node names)."""
    from torchvision.models import feature_extraction as fe

    try:
        kwargs = fe._set_default_tracer_kwargs(None)
    except AttributeError:  # private helper moved: fall back to plain FX leaves (same names on torch.nn)
        kwargs = {}
    return fe.NodePathTracer(**kwargs)


def _trace(model: nn.Module) -> tuple[fx.Graph, dict]:
    """Trace ``model`` in eval mode; return its graph and ``{node: torchvision node name}``."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        tracer = _tracer()
        graph = tracer.trace(model)
    except Exception as err:  # symbolic tracing failures are user-facing: say what is needed
        raise ValueError(f"model must be traceable by torch.fx (torchvision feature extraction); "
                         f"tracing failed with {type(err).__name__}: {err}") from err
    finally:
        for m, flag in modes:
            m.training = flag
    return graph, dict(tracer.node_to_qualname)


def _kind(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return type(root.get_submodule(node.target)).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def _fetch_attr(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _batch_norm_per_part(module: _BatchNorm, x: torch.Tensor, parts: int) -> torch.Tensor:
    """Batch-norm with batch statistics computed separately on each of ``parts`` equal slices of the
    batch (clean, deformed, noisy), running statistics neither used nor updated."""
    out = [F.batch_norm(chunk, None, None, module.weight, module.bias, True, 0.0, module.eps)
           for chunk in x.chunk(parts)]
    return torch.cat(out)


class _GraphRunner:
    """Executes an FX graph node by node, hands every node value to a callback, and frees each value
    after its last use (so that only live activations are held, and each node is seen before any
    in-place op of a later node can modify it)."""

    def __init__(self, root: nn.Module, graph: fx.Graph, batch_stats_parts: int = 0,
                 float64_nodes: Optional[set] = None) -> None:
        self.root = root
        self.nodes = list(graph.nodes)
        self.parts = batch_stats_parts
        # Nodes computed in float64 whatever the forward dtype (their tensor inputs are promoted and
        # their modules run as float64 copies, made once).
        self.float64_nodes = float64_nodes or set()
        self.modules64: dict[str, nn.Module] = {}
        last_use: dict[fx.Node, fx.Node] = {}
        for node in self.nodes:
            for inp in node.all_input_nodes:
                last_use[inp] = node
        self.free_after: dict[fx.Node, list] = {}
        for inp, user in last_use.items():
            self.free_after.setdefault(user, []).append(inp)

    def run(self, x: torch.Tensor, callback: Callable[[fx.Node, object], None]):
        env: dict[fx.Node, object] = {}
        first = True
        result = None
        for node in self.nodes:
            if node.op == "placeholder":
                if first:
                    value, first = x, False
                elif node.args:  # extra forward() arguments keep their defaults
                    value = node.args[0]
                else:
                    raise ValueError(f"model.forward must take a single required input; "
                                     f"argument {node.target!r} has no default")
            elif node.op == "output":
                result = fx.node.map_arg(node.args[0], lambda n: env[n])
                break
            elif node.op == "get_attr":
                value = _fetch_attr(self.root, node.target)
            else:
                args = fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
                promote = node in self.float64_nodes
                if promote:
                    args, kwargs = _to_float64((args, kwargs))
                if node.op == "call_function":
                    value = node.target(*args, **kwargs)
                elif node.op == "call_method":
                    value = getattr(args[0], node.target)(*args[1:], **kwargs)
                else:  # call_module
                    module = self.root.get_submodule(node.target)
                    if promote:
                        if node.target not in self.modules64:
                            self.modules64[node.target] = copy.deepcopy(module).to(torch.float64)
                        module = self.modules64[node.target]
                    if self.parts and isinstance(module, _BatchNorm):
                        value = _batch_norm_per_part(module, *args, parts=self.parts)
                    elif (isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and len(args) == 1 and not kwargs
                          and args[0].device.type == "cpu" and args[0].dtype == torch.float64
                          and args[0].shape[0] > CONV_CHUNK):
                        value = torch.cat([module(part) for part in args[0].split(CONV_CHUNK)])
                    else:
                        value = module(*args, **kwargs)
            callback(node, value)
            if node.users:
                env[node] = value
            for dead in self.free_after.get(node, ()):
                env.pop(dead, None)
        return result


def _to_float64(obj):
    """Floating tensors inside nested tuples/lists/dicts promoted to float64."""
    if isinstance(obj, torch.Tensor):
        return obj.double() if obj.dtype.is_floating_point else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_float64(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_float64(v) for k, v in obj.items()}
    return obj


def _after_last_conv(graph: fx.Graph, root: nn.Module) -> set:
    """Nodes that come after the last convolution: for CNNs the cheap dense head."""
    nodes = list(graph.nodes)
    convs = [i for i, n in enumerate(nodes) if n.op == "call_module"
             and isinstance(root.get_submodule(n.target), nn.modules.conv._ConvNd)]
    if not convs:
        return set()
    return {n for n in nodes[convs[-1] + 1:] if n.op in ("call_module", "call_function", "call_method")}


def _is_activation(value, batch: int) -> bool:
    return (isinstance(value, torch.Tensor) and value.dtype.is_floating_point and value.ndim >= 1
            and value.shape[0] == batch)


def _candidate_nodes(graph: fx.Graph) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op in ("call_module", "call_function", "call_method")]


def layer_names(model: nn.Module, x: Optional[torch.Tensor] = None) -> list[str]:
    """Names of the nodes of ``model``'s FX graph (eval mode), in execution order, as torchvision's
    ``get_graph_node_names`` names them, without the input placeholder and parameter reads.

    Without ``x`` the list is static and may contain nodes whose value is not a tensor (e.g.
    ``x.size(0)``); with an example input ``x`` (``[P, ...]``, run once in eval mode, without gradients,
    after conversion to the model's dtype and device)
    only the nodes whose value is a floating tensor with the batch axis first are kept: exactly the rows
    of ``measure(model, x, layers="all")``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    graph, qual = _trace(model)
    nodes = _candidate_nodes(graph)
    if x is None:
        return [qual[n] for n in nodes]
    keep: list[str] = []
    wanted = set(nodes)

    def callback(node, value):
        if node in wanted and _is_activation(value, x.shape[0]):
            keep.append(qual[node])

    floats = [p for p in model.parameters() if p.dtype.is_floating_point]
    if floats:  # run in the model's dtype and on its device
        x = x.to(device=floats[0].device, dtype=floats[0].dtype)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            _GraphRunner(model, graph).run(x, callback)
    finally:
        for m, flag in modes:
            m.training = flag
    return keep


# ---------------------------------------------------------------------------------------- shuffling
def shuffle_channels(model: nn.Module, mode: int = 1, generator: Optional[torch.Generator] = None) -> nn.Module:
    """Channel-shuffling control (METHODS.md §3): a deep copy of ``model`` with permuted conv filters.

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
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
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


# ------------------------------------------------------------------------------------------- probes
def draw_probes(x: torch.Tensor, *, delta: float = 1.0, cut: int = 3, interp: str = "linear",
                seed: int = 0, generator: Optional[torch.Generator] = None,
                device: Union[str, torch.device, None] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The probe set used by :func:`measure`: ``(x0, x_tau, x_eta)``, float64, on ``device`` (default:
    ``x``'s).

    ``x_tau = diffeo_batch(x, delta, cut, interp)`` (one field per image), then
    ``x_eta = noisy_batch(x0, x_tau)`` (per-image noise of norm ``||x_tau_i - x0_i||``), both drawn in this
    order from ``generator`` (default: a CPU generator seeded with ``seed``), so the same seed gives the
    same probes bit for bit on any device.  ``x0 = x`` except for ``interp="gaussian"``, whose kernel blurs:
    then ``x0 = deform(x, 0, cut, "gaussian")`` so that clean and deformed probes are blurred alike.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be images [P, C, n, n] to draw diffeomorphisms; got {shape} "
                         f"(for other inputs pass probes=(x, x_tau, x_eta) to measure)")
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 probes (P >= 2); got P = {x.shape[0]}")
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))
    x64 = x.to(device=device if device is not None else x.device, dtype=torch.float64)
    x_tau = diffeo_batch(x64, delta=delta, cut=cut, interp=interp, generator=generator)
    x0 = deform(x64, 0.0, cut, interp="gaussian") if interp == "gaussian" else x64
    x_eta = noisy_batch(x0, x_tau, generator=generator)
    return x0, x_tau, x_eta


# ------------------------------------------------------------------------------------------ measure
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

    __slots__ = ("sD", "sG", "s1", "s2", "c", "n", "features")

    def __init__(self) -> None:
        self.sD = self.sG = self.s2 = 0.0
        self.s1 = self.c = None
        self.n = 0

    def add(self, value: torch.Tensor, b: int, scratch: "_Scratch") -> None:
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


def _model_device(model: nn.Module) -> Optional[torch.device]:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return None


def _needs_copy(model: nn.Module, device: torch.device, dtype: Optional[torch.dtype]) -> bool:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device != device or (dtype is not None and t.dtype.is_floating_point and t.dtype != dtype):
            return True
    return False


def measure(model: nn.Module, x: Optional[torch.Tensor], *, delta: float = 1.0, cut: int = 3,
            interp: str = "linear", layers: Union[str, Sequence[str]] = "all", shuffle_channels: int = 0,
            seed: int = 0, probes: Optional[Sequence[torch.Tensor]] = None, batch_size: Optional[int] = None,
            device: Union[str, torch.device, None] = None, dtype: Optional[torch.dtype] = torch.float64,
            batch_stats: bool = False) -> pd.DataFrame:
    """Diffeomorphism and noise stabilities of every node of ``model``'s computation graph.

    Args:
        model: any ``nn.Module`` traceable by ``torch.fx`` with one required input.  It is run in eval
            mode; the training flags of all its modules are restored afterwards, its parameters and
            buffers are never modified (a deep copy is used when shuffling or converting dtype/device).
        x: ``[P, C, n, n]`` clean probes (``P >= 2``, float).  May be ``None`` when ``probes`` is given.
        delta, cut, interp: the diffeomorphisms (typical displacement in pixels, mode cut-off,
            interpolation), see :func:`stabkit.transforms.diffeo_batch`.  With ``interp="gaussian"`` the
            clean probes are blurred by the same kernel (``deform(x, 0, cut, "gaussian")``).
        layers: ``"all"`` (every node whose value is a floating tensor ``[P, ...]``, in execution order,
            the input placeholder excluded), ``"output"`` (the node the model returns), or a list of node
            names as in :func:`layer_names` / torchvision's ``get_graph_node_names``.
        shuffle_channels: 0, 1 or 2: measure ``shuffle_channels(model, mode=k, generator)`` instead, with
            a CPU generator seeded with ``seed`` (independent of the probe generator).
        seed: seed of the probe draws (:func:`draw_probes`): the same seed gives the same probes, so
            several networks measured with the same ``x`` and ``seed`` share one probe set.
        probes: ``(x, x_tau, x_eta)``, three tensors ``[P, ...]`` made elsewhere (e.g. the pixel moves of
            the scale-detection task, or 1-D inputs); then nothing is drawn.
        batch_size: probes per forward chunk (each forward holds ``3 * batch_size`` inputs).  Default:
            ``min(P, 64)``, or ``P`` with ``batch_stats`` (batch statistics over all ``P`` probes; a smaller
            ``batch_size`` makes them per chunk).  Peak memory is about the few largest live activations
            of ``3 * batch_size`` inputs in ``dtype`` (VGG11 / CIFAR ResNet18 at 32x32, float64, default:
            well under 2 GB; with ``batch_stats`` and ``P = 500`` several GB on CPU: pass ``batch_size``
            to trade exactness of the batch statistics for memory).
        device: where the network runs (default: the model's device, else ``x``'s).
        dtype: dtype of the forward pass (default float64, the reference).  Accumulation is always in
            float64.  ``torch.float32`` is faster on CPU and GPU; its relative error on ``D_f, G_f, R_f``
            is typically 1e-8 .. 1e-6 (rounding of the activations relative to their differences). With a
            dtype below float64, the nodes after the last convolution (the cheap dense head of a CNN) run
            in float64, because rounding the nearly constant outputs of a head at ``eps * |f|`` would
            swamp their small differences.
            ``None`` keeps the model's dtype.
        batch_stats: batch-norm layers (``nn.BatchNorm*`` modules) use the statistics of the current
            batch instead of their running statistics (the paper's "at initialisation" convention),
            computed separately for the clean, deformed and noisy probes (as three separate forwards
            would); running statistics are not updated.  Everything else stays in eval mode.

    Returns:
        ``pandas.DataFrame``, one row per node in execution order, columns :data:`COLUMNS`:
        ``layer`` (node name), ``depth`` (1-based position among all tensor-valued nodes), ``rel_depth``
        (``depth / number of tensor-valued nodes``, so the output is 1), ``kind`` (module class such as
        ``Conv2d``, or function / method name such as ``add``, ``flatten``), ``features`` (values per
        probe), ``D``, ``G``, ``deno``, ``D_f``, ``G_f``, ``R_f`` and ``P``.

    Only the mean numerators are streamed; for the median variant store the outputs and call
    :func:`stability` with ``mean=False``.  The clean, deformed and noisy chunks go through the network
    in one forward (concatenated along the batch axis).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(layers, str):
        if layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be 'all', 'output' or a list of node names; got {layers!r}")
    elif not (isinstance(layers, (list, tuple)) and layers and all(isinstance(s, str) for s in layers)):
        raise ValueError(f"layers must be 'all', 'output' or a non-empty list of node names; got {layers!r}")
    if isinstance(shuffle_channels, bool) or shuffle_channels not in (0, 1, 2):
        raise ValueError(f"shuffle_channels must be 0, 1 or 2; got {shuffle_channels!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be None or an integer >= 1; got {batch_size!r}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype or None; got {dtype!r}")

    # ---- device and probes
    if device is None:
        device = _model_device(model)
        if device is None:
            device = (probes[0] if probes is not None else x).device
    device = torch.device(device)
    if probes is None:
        if x is None:
            raise ValueError("x must be a tensor [P, C, n, n] (or give probes=(x, x_tau, x_eta))")
        _check_outputs(x, "x")
        x0, x_tau, x_eta = draw_probes(x, delta=delta, cut=cut, interp=interp, seed=seed, device=device)
    else:
        if not (isinstance(probes, (list, tuple)) and len(probes) == 3):
            raise ValueError("probes must be a tuple (x, x_tau, x_eta) of three tensors [P, ...]")
        x0, x_tau, x_eta = (_check_outputs(t, name) for t, name in zip(probes, ("probes[0]", "probes[1]",
                                                                                 "probes[2]")))
        if not (x0.shape == x_tau.shape == x_eta.shape):
            raise ValueError(f"probes must have equal shapes; got {tuple(x0.shape)}, {tuple(x_tau.shape)}, "
                             f"{tuple(x_eta.shape)}")
        if x is not None and x is not probes[0] and (x.shape != x0.shape or not torch.equal(x, x0)):
            raise ValueError("x and probes[0] differ: pass x=None together with probes")
    P = x0.shape[0]
    b = batch_size if batch_size is not None else (P if batch_stats else min(P, 64))
    b = min(int(b), P)

    # ---- model (never modified: copy when something must change)
    if shuffle_channels:
        work = shuffle_channels_(model, mode=shuffle_channels, generator=torch.Generator().manual_seed(int(seed)))
        work = work.to(device=device, dtype=dtype) if dtype is not None else work.to(device)
    elif _needs_copy(model, device, dtype):
        work = copy.deepcopy(model)
        work = work.to(device=device, dtype=dtype) if dtype is not None else work.to(device)
    else:
        work = model
    in_dtype = dtype
    if in_dtype is None:
        floats = [p.dtype for p in work.parameters() if p.dtype.is_floating_point]
        in_dtype = floats[0] if floats else x0.dtype
    modes = [(m, m.training) for m in work.modules()]
    work.eval()
    try:
        graph, qual = _trace(work)
        candidates = _candidate_nodes(graph)
        by_name = {qual[n]: n for n in candidates}
        output_arg = next(n for n in graph.nodes if n.op == "output").args[0]
        if layers == "output":
            if not isinstance(output_arg, fx.Node) or output_arg not in by_name.values():
                raise ValueError("layers='output' needs a model whose forward returns one computed tensor")
            selected = {output_arg}
        elif layers == "all":
            selected = set(candidates)
        else:
            unknown = [s for s in layers if s not in by_name]
            if unknown:
                raise ValueError(f"layers contains unknown node names {unknown}; accepted: 'all', 'output' "
                                 f"or names from layer_names(model), e.g. {list(by_name)[:5]}")
            selected = {by_name[s] for s in layers}

        # A lower-precision forward rounds the (often nearly constant, bias-dominated) outputs of the dense
        # head at eps * |f|, which swamps their small differences: run the cheap head in float64.
        head64 = (_after_last_conv(graph, work)
                  if in_dtype.is_floating_point and torch.finfo(in_dtype).bits < 64 else set())
        runner = _GraphRunner(work, graph, batch_stats_parts=3 if batch_stats else 0, float64_nodes=head64)
        accs: dict[fx.Node, _Accumulator] = {}
        scratch = _Scratch()
        order: list[fx.Node] = []  # tensor-valued nodes, execution order (from the first chunk)

        with torch.no_grad():
            for start in range(0, P, b):
                stop = min(start + b, P)
                bb = stop - start
                batch = torch.cat([t[start:stop].to(device=device, dtype=in_dtype)
                                   for t in (x0, x_tau, x_eta)])
                first = start == 0

                def callback(node, value, bb=bb, first=first):
                    if node.op not in ("call_module", "call_function", "call_method"):
                        return
                    if first:
                        if not _is_activation(value, 3 * bb):
                            return
                        order.append(node)
                        if node in selected:
                            accs[node] = _Accumulator()
                    if node in accs:
                        accs[node].add(value, bb, scratch)

                runner.run(batch, callback)
    finally:
        for m, flag in modes:
            m.training = flag

    if isinstance(layers, (list, tuple)) or layers == "output":
        missing = [qual[n] for n in selected if n not in accs]
        if missing:
            raise ValueError(f"layers {missing} do not produce a floating tensor with the batch axis first")
    total = len(order)
    rows = []
    for depth, node in enumerate(order, start=1):
        if node not in accs:
            continue
        row = {"layer": qual[node], "depth": depth, "rel_depth": depth / total, "kind": _kind(node, work)}
        row.update(accs[node].result())
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


# ``measure`` has a parameter called ``shuffle_channels``: keep a second name for the function.
shuffle_channels_ = shuffle_channels
