"""Running a model node by node: FX tracing, a layer-by-layer interpreter, and mode/device helpers.

The layer-wise measurements (:mod:`stabkit.stability`, :mod:`stabkit.invariance`) see a network as the
nodes of its ``torch.fx`` graph, named as torchvision's feature extraction names them
(``get_graph_node_names``), see ``book/methods.md``, section "Stabilities".  This module holds what they
share:

* :func:`trace` -> a :class:`torch.fx.GraphModule` whose nodes carry their torchvision names
  (:func:`layer_name`), and :func:`layer_nodes`, :func:`node_kind`, :func:`is_reshape` to describe them;
* :class:`LayerInterpreter`, a :class:`torch.fx.Interpreter` (values freed after their last use) that hands
  every layer node's value to a hook as soon as it is computed, i.e. before any later in-place operation
  can change it, and :func:`activation_nodes`, the nodes whose values are activations of the batch;
* :func:`eval_mode` (eval mode, or batch-norm batch statistics, restoring every module's own flag),
  :func:`model_device` and :func:`strict_float32` (no TF32 on CUDA).
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .checks import check_device

__all__ = [
    "CONV_CHUNK",
    "LAYER_OPS",
    "LayerInterpreter",
    "activation_nodes",
    "eval_mode",
    "is_activation",
    "measurement_device",
    "is_inplace_relu",
    "is_reshape",
    "layer_name",
    "layer_nodes",
    "model_device",
    "node_kind",
    "on_depth_axis",
    "output_node",
    "resolve_device",
    "strict_float32",
    "tf32_float32",
    "trace",
]

#: FX node kinds that compute something (the candidate layers); placeholders, parameter reads and the
#: output node are not layers.
LAYER_OPS = ("call_module", "call_function", "call_method")

#: On CPU in float64, PyTorch's convolution unfolds the whole batch at once (im2col, ``k*k`` times the
#: input); running convolutions on slices of this many samples bounds that buffer with identical results.
CONV_CHUNK = 32

#: ``node.meta`` key under which :func:`trace` stores torchvision's name of the node.
NAME_KEY = "stabkit_layer_name"

# Operations that only rearrange the values of one tensor (same values, same norms): their nodes repeat
# the node before them and are not layers on the depth axis (book/methods.md, "Stabilities").
_RESHAPE_METHODS = frozenset({"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "contiguous",
                              "squeeze", "unsqueeze", "permute", "transpose", "t", "movedim"})
_RESHAPE_FUNCTIONS = frozenset({torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute,
                                torch.transpose, torch.t, torch.movedim, torch.unflatten})
_RESHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity)


# ---------------------------------------------------------------------------------------- tracing
def _tracer() -> fx.Tracer:
    """torchvision's NodePathTracer with the defaults of ``get_graph_node_names`` (same node names)."""
    from torchvision.models import feature_extraction as fe

    defaults = getattr(fe, "_set_default_tracer_kwargs", None)
    # Without torchvision's (private) defaults, plain FX leaves give the same names on torch.nn modules.
    return fe.NodePathTracer(**(defaults(None) if defaults is not None else {}))


def trace(model: nn.Module) -> fx.GraphModule:
    """The FX graph of ``model`` (traced in eval mode, every module's training flag restored after).

    Returns a :class:`torch.fx.GraphModule` that shares ``model``'s submodules, parameters and buffers (no
    copy); every node carries the name torchvision's ``get_graph_node_names`` gives it (:func:`layer_name`).
    Raises ``ValueError`` when ``model`` is not an ``nn.Module`` or cannot be traced symbolically.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    with eval_mode(model):
        try:
            tracer = _tracer()
            graph = tracer.trace(model)
        except Exception as err:  # symbolic tracing failures are user-facing: say what is needed
            raise ValueError(f"model must be traceable by torch.fx (torchvision feature extraction); "
                             f"tracing failed with {type(err).__name__}: {err}") from err
    for node, name in tracer.node_to_qualname.items():
        node.meta[NAME_KEY] = name
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def layer_name(node: fx.Node) -> str:
    """torchvision's name of a node of a graph made by :func:`trace` (else the FX node name)."""
    return node.meta.get(NAME_KEY, node.name)


def layer_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The nodes that compute something (module, function and method calls), in execution order."""
    return [n for n in gm.graph.nodes if n.op in LAYER_OPS]


def output_node(gm: fx.GraphModule) -> fx.Node | None:
    """The node whose value ``forward`` returns, or ``None`` when it returns something else (a tuple...)."""
    arg = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    return arg if isinstance(arg, fx.Node) and arg.op in LAYER_OPS else None


def node_kind(node: fx.Node, gm: nn.Module) -> str:
    """Module class name (``Conv2d``), or function / method name (``add``, ``flatten``) of a node."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def is_reshape(node: fx.Node, gm: nn.Module) -> bool:
    """Whether ``node`` only rearranges the values of its input (view, reshape, flatten, contiguous,
    squeeze, permute, ``nn.Flatten``, ``nn.Identity``...): its value has the same entries as the node
    before it, so it is not a layer on the depth axis."""
    if node.op == "call_method":
        return node.target in _RESHAPE_METHODS
    if node.op == "call_function":
        return node.target in _RESHAPE_FUNCTIONS
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _RESHAPE_MODULES)
    return False


def on_depth_axis(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether a layer node counts on the depth axis (``depth``, ``rel_depth`` of the layer tables): every
    node except the pure reshapes (:func:`is_reshape`), which repeat the node before them; the output node
    always counts (it is the network's function whatever op makes it)."""
    return node is output_node(gm) or not is_reshape(node, gm)


def is_inplace_relu(node: fx.Node, gm: nn.Module) -> bool:
    """Whether ``node`` is a ReLU that overwrites its input: ``nn.ReLU(inplace=True)``,
    ``F.relu(x, inplace=True)``, ``torch.relu_``, ``F.relu_`` or ``x.relu_()``."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return isinstance(module, nn.ReLU) and bool(module.inplace)
    if node.op == "call_function":
        if node.target in (torch.relu_, F.relu_):
            return True
        if node.target is F.relu:
            return bool(node.kwargs.get("inplace", node.args[1] if len(node.args) > 1 else False))
        return False
    return node.op == "call_method" and node.target == "relu_"


# ------------------------------------------------------------------------------------ interpreter
def _to_float64(obj: Any) -> Any:
    """Floating tensors inside nested tuples/lists/dicts promoted to float64."""
    if isinstance(obj, torch.Tensor):
        return obj.double() if obj.dtype.is_floating_point else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_float64(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_float64(v) for k, v in obj.items()}
    return obj


def _batch_norm_per_part(module: _BatchNorm, x: torch.Tensor, parts: int) -> torch.Tensor:
    """Batch-norm with batch statistics computed separately on each of ``parts`` equal slices of the
    batch, running statistics neither used nor updated."""
    out = [F.batch_norm(chunk, None, None, module.weight, module.bias, True, 0.0, module.eps)
           for chunk in x.chunk(parts)]
    return torch.cat(out)


Hook = Callable[[fx.Node, Any], None]


class LayerInterpreter(fx.Interpreter):
    """Runs a :func:`trace`'d graph and calls ``hook(node, value)`` for every layer node.

    The hook sees each value right after the node computed it (before a later in-place op such as
    ``nn.ReLU(inplace=True)`` can overwrite it: the "true" value), and values are freed after their last
    use (``garbage_collect_values=True``), so that only live activations are held.  Run it with
    ``interpreter.run(x)``; ``interpreter.hook`` may be replaced between runs.

    Args:
        gm: a graph module made by :func:`trace`.  Modes are not touched: use :func:`eval_mode`.
        hook: ``hook(node, value)``, called for every node of :func:`layer_nodes` (or only ``nodes``),
            whatever its value (tensor or not).  ``value`` is the live tensor: clone it to keep it (a
            later in-place op may overwrite it).  ``None``: no hook.
        nodes: restrict the hook to these nodes (default: all layer nodes).
        batch_stats_parts: ``k > 0``: every batch-norm module uses batch statistics computed separately on
            each of ``k`` equal slices of the batch (e.g. clean, deformed and noisy probes concatenated),
            running statistics neither used nor updated.  ``0``: the modules as they are.
        float64_nodes: nodes computed in float64 whatever the input dtype (floating inputs promoted,
            modules run as float64 copies made once).
        inplace_relu: report at every node overwritten by an in-place ReLU (:func:`is_inplace_relu`) the
            post-ReLU value instead of its own (the convention of a feature extraction that stores
            references, as the original code's did): its hook is called when the ReLU has run.
        conv_chunk: on CPU in float64, convolutions over more samples run on slices of this many samples
            (identical results, bounded im2col buffer); ``0`` disables.
    """

    def __init__(self, gm: fx.GraphModule, hook: Hook | None = None, *, nodes: Iterable[fx.Node] | None = None,
                 batch_stats_parts: int = 0, float64_nodes: Iterable[fx.Node] = (), inplace_relu: bool = False,
                 conv_chunk: int = CONV_CHUNK) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.hook = hook
        self.nodes = None if nodes is None else set(nodes)
        self.parts = int(batch_stats_parts)
        self.float64_nodes = set(float64_nodes)
        self.conv_chunk = int(conv_chunk)
        self._modules64: dict[str, nn.Module] = {}
        # in-place convention: node -> the nodes whose report waits for it (their value is overwritten by it)
        self._deferred: set[fx.Node] = set()
        self._report_at: dict[fx.Node, list[fx.Node]] = {}
        if inplace_relu:
            for node in gm.graph.nodes:
                if node.op in LAYER_OPS and is_inplace_relu(node, gm):
                    src = node.args[0] if node.args else None
                    if isinstance(src, fx.Node) and src.op in LAYER_OPS:
                        self._deferred.add(src)
                        waiting = self._report_at.pop(src, [])  # a chain of in-place ops: report at its end
                        self._report_at.setdefault(node, []).extend([src, *waiting])

    def placeholder(self, target: str, args: tuple, kwargs: dict) -> Any:
        try:
            return super().placeholder(target, args, kwargs)
        except RuntimeError:
            raise ValueError(f"model.forward must take a single required input; argument {target!r} has no "
                             f"default") from None

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        if self._promote:
            if target not in self._modules64:
                self._modules64[target] = copy.deepcopy(module).to(torch.float64)
            module = self._modules64[target]
        if self.parts and isinstance(module, _BatchNorm):
            return _batch_norm_per_part(module, *args, parts=self.parts)
        if (self.conv_chunk and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and len(args) == 1
                and not kwargs and args[0].device.type == "cpu" and args[0].dtype == torch.float64
                and args[0].shape[0] > self.conv_chunk):
            return torch.cat([module(part) for part in args[0].split(self.conv_chunk)])
        return module(*args, **kwargs)

    def run_node(self, n: fx.Node) -> Any:
        self._promote = n in self.float64_nodes
        if self._promote:
            with self._set_current_node(n):
                args, kwargs = _to_float64(self.fetch_args_kwargs_from_env(n))
                value = getattr(self, n.op)(n.target, args, kwargs)
        else:
            value = super().run_node(n)
        self._promote = False
        if self.hook is not None and n.op in LAYER_OPS:
            for src in self._report_at.get(n, ()):
                if self.nodes is None or src in self.nodes:
                    self.hook(src, value)
            if n not in self._deferred and (self.nodes is None or n in self.nodes):
                self.hook(n, value)
        return value

    _promote = False


def is_activation(value: Any, batch: int) -> bool:
    """Whether a node's value is an activation of ``batch`` inputs: a floating tensor with the batch axis first
    (a layer of the layer tables; shapes, sizes and integer tensors are not)."""
    return (isinstance(value, torch.Tensor) and value.dtype.is_floating_point and value.ndim >= 1
            and value.shape[0] == batch)


def activation_nodes(gm: fx.GraphModule, example: torch.Tensor) -> list[fx.Node]:
    """The layer nodes whose value on ``example`` (``[B, ...]``, run once in the dtype and on the device of the
    graph's parameters) is an activation (:func:`is_activation`), in execution order, pure reshapes included.
    Modes and gradients are the caller's (:func:`eval_mode`, ``torch.no_grad()``)."""
    keep = []

    def hook(node, value):
        if is_activation(value, example.shape[0]):
            keep.append(node)

    floats = [p for p in gm.parameters() if p.dtype.is_floating_point]
    if floats:  # run in the model's dtype and on its device
        example = example.to(device=floats[0].device, dtype=floats[0].dtype)
    LayerInterpreter(gm, hook).run(example)
    return keep


# --------------------------------------------------------------------------------- modes and devices
@contextlib.contextmanager
def eval_mode(model: nn.Module, *, batch_stats: bool = False) -> Iterator[nn.Module]:
    """Context manager: ``model`` in eval mode; on exit every module gets back its own training flag
    (a model whose modules are in mixed train/eval modes comes back exactly as it was).

    With ``batch_stats=True`` the batch-norm modules (``nn.BatchNorm*``) use the statistics of the current
    batch instead of their running statistics (the paper's "at initialisation" convention,
    ``book/methods.md``, "Stabilities"), without updating them: they run in train mode with
    ``track_running_stats`` switched off for the duration.  Everything else is in eval mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    tracking = [(m, m.track_running_stats) for m in model.modules() if isinstance(m, _BatchNorm)]
    try:
        model.eval()
        if batch_stats:
            for m, _ in tracking:
                m.train()
                m.track_running_stats = False
        yield model
    finally:
        for m, flag in modes:
            m.training = flag
        for m, flag in tracking:
            m.track_running_stats = flag


def model_device(model: nn.Module, default: torch.device | str | None = None) -> torch.device | None:
    """Device of ``model``'s first parameter (else first buffer); ``default`` for a model without tensors."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device(default) if default is not None else None


def resolve_device(device: str | torch.device, *, name: str = "device") -> torch.device:
    """A checked device (:func:`stabkit.checks.check_device` forms): ``"auto"`` is CUDA when available,
    else CPU; a CUDA or MPS device that is not present here is refused with a ``ValueError`` naming
    ``name``."""
    check_device(name, device)
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={str(device)!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{name}={str(device)!r} asked for, but only {torch.cuda.device_count()} CUDA "
                         f"device(s) are present")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{name}='mps' asked for, but MPS is not available here; use 'cpu' or 'auto'")
    return device


def measurement_device(model: nn.Module, device: str | torch.device | None = None, *,
                       name: str = "device") -> torch.device:
    """Where a measurement of ``model`` runs: the model's own device for ``None`` and ``"auto"`` (CPU for a
    model without tensors), else ``device`` checked by :func:`resolve_device`."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return model_device(model, default="cpu")
    return resolve_device(device, name=name)


def _fp32_flags() -> list[tuple[Any, str, Any]]:
    """(object, attribute, TF32-free value) of the float32 precision switches of cuBLAS and cuDNN."""
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision") and hasattr(b.cudnn, "conv"):  # torch >= 2.9: new API only
        # (reading the legacy allow_tf32 flags after a new-API write raises, so never mix the two)
        return [(b.cuda.matmul, "fp32_precision", "ieee"), (b.cudnn.conv, "fp32_precision", "ieee")]
    return [(b.cuda.matmul, "allow_tf32", False), (b.cudnn, "allow_tf32", False)]


@contextlib.contextmanager
def tf32_float32() -> Iterator[None]:
    """Context manager: float32 matmuls and cuDNN convolutions may use TF32 on CUDA (both of them, whatever
    torch's defaults), the previous settings restored on exit."""
    on = {"fp32_precision": "tf32", "allow_tf32": True}
    flags = _fp32_flags()
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in flags]
    try:
        for obj, attr, _ in flags:
            setattr(obj, attr, on[attr])
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


@contextlib.contextmanager
def strict_float32(enabled: bool = True) -> Iterator[None]:
    """Context manager: float32 matmuls and cuDNN convolutions in full float32 (TF32 off) on CUDA, the
    previous settings restored on exit.  TF32 (on by default for cuDNN convolutions) rounds the inputs
    to 10 mantissa bits, a relative error of about 1e-4 .. 1e-3; ``enabled=False`` does nothing."""
    if not enabled:
        yield
        return
    flags = _fp32_flags()
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in flags]
    try:
        for obj, attr, value in flags:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)
