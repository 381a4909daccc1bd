"""Validation of a run against the registries, before anything is trained: the network, its options, the
task's options, the measurements and their options, the augmentations, the probe count and layers, and a
build of the network on the meta device.

:class:`~stabkit.runs.config.RunConfig` checks what needs no torch when it is made (a sweep file reads
torch-free); ``validate()`` is the explicit second step, called by ``run``, ``remeasure``,
``Sweep.validate`` and the command line.
"""
from __future__ import annotations

import functools
import inspect
import json

import torch

from .. import data, nets
from ..stability import layer_names
from .config import RunConfig, plain
from .measurements import MEASUREMENT_FACTS, check_measurements, check_options
from .tasks import check_augment

__all__ = ["validate", "known_nets", "task_option_names", "test_set_size"]


def known_nets() -> tuple[str, ...]:
    """Names a run may train: ``stabkit.nets.list_models()``."""
    return tuple(nets.list_models())


_CIFAR_TEST, _CIFAR_TRAIN = 10_000, 50_000


def task_option_names(task: str) -> list[str]:
    """The ``task_options`` a task accepts: the data set's constructor arguments other than those the
    run sets itself (``ptr``, ``train``, ``seed``, ``testsize``); ``root`` (data folder) for cifar10."""
    if task == "cifar10":
        return ["root"]
    cls = data.TwoPoints if task == "twopoints" else data.ScaleDetection1D
    return [p for p in inspect.signature(cls).parameters if p not in ("ptr", "train", "seed", "testsize")]


@functools.lru_cache(maxsize=64)
def _scale1d_test_size(options: str, ptr: int, test_size: int | None) -> int:
    return len(data.ScaleDetection1D(train=False, ptr=ptr, testsize=test_size, **json.loads(options)).y)


def test_set_size(cfg: RunConfig) -> int:
    """Test samples of a run: ``test_size``, else the task's default (CIFAR-10: 10,000; twopoints:
    ``4 ptr``; scale1d: ``4 ptr`` lowered to what the classes allow). ``ValueError`` if ``test_size``
    (or ``ptr``) exceeds what the task has."""
    if cfg.task == "cifar10":
        for k, n in (("test_size", _CIFAR_TEST), ("ptr", _CIFAR_TRAIN)):
            v = getattr(cfg, k)
            if v is not None and v > n:
                raise ValueError(f"{k}={v} is larger than the CIFAR-10 {k.split('_')[0]} set ({n} images)")
        return cfg.test_size or _CIFAR_TEST
    if cfg.task == "twopoints":
        return cfg.test_size or 4 * cfg.ptr
    return _scale1d_test_size(json.dumps(plain(cfg.task_options), sort_keys=True), cfg.ptr, cfg.test_size)


@functools.lru_cache(maxsize=64)
def _built(net: str, net_options: str, in_channels: int, input_size: int, num_classes: int, width_factor: float,
           graph: bool) -> tuple:
    """Build the network once (on the meta device: no memory, no initialisation cost) so that a bad
    option value or input size fails here; with ``graph``, its node names."""
    opts = json.loads(net_options)
    opts.setdefault("input_size", input_size)
    kw = dict(in_channels=in_channels, num_classes=num_classes, width_factor=width_factor, **opts)
    if not graph:
        try:
            with torch.device("meta"):
                nets.build(net, **kw)
            return ()
        except (TypeError, ValueError):
            raise
        except Exception:  # noqa: BLE001 - an op without a meta kernel: build it for real below
            pass
    model = nets.build(net, **kw)
    if not graph:
        return ()
    return tuple(layer_names(model))


def _build_check(cfg: RunConfig, graph: bool = False) -> list[str]:
    """Build the run's network as the run will (``ValueError`` naming the net if it refuses the task's
    input or an option value); with ``graph``, the node names of its graph."""
    if cfg.task == "cifar10":
        ch, size = 3, 32
    elif cfg.task == "twopoints":
        ch, size = 1, int(cfg.task_options.get("d", 28))
    else:
        ch, size = 1, int(cfg.task_options.get("L", 128))
    try:
        return list(_built(cfg.net, json.dumps(plain(cfg.net_options), sort_keys=True), ch, size,
                           1 if cfg.hinge else 10, cfg.width_factor, graph))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"net {cfg.net} with net_options {dict(cfg.net_options)} on a {size}-pixel "
                         f"{cfg.task} input: {exc}") from None


def validate(cfg: RunConfig, build: bool = True) -> RunConfig:
    """``cfg`` if it passes the checks that need the registries and the data protocol, else ``ValueError``
    naming the field and the accepted values. Called explicitly before anything is trained (``run``,
    ``remeasure``, ``Sweep.validate``, the command line): ``net`` names a network of ``stabkit.nets.list_models()``; ``net_options``
    are options of its builder; ``task_options`` are options of the task's data set; ``measure``
    names registered measurements; ``options`` name registered measurements and hold values they accept
    (``stabkit.runs.measurements.check_options``); ``augment`` names augmentations the task accepts; for the
    probe measurements (``register_measurement(probes=True)``), ``P`` is at most the test-set size and a list of
    ``layers`` names nodes of the network's graph; the network builds for the task's input (on the
    meta device) with its options. ``build=False`` skips the last three (P, layers, build), for a config
    that is an intermediate step (``replace``, the command line's ``train``)."""
    names = known_nets()
    if cfg.net not in names:
        raise ValueError(f"net must be one of stabkit.nets.list_models() {sorted(names)}, got {cfg.net!r}")
    accepted = list(nets.model_info(cfg.net)["options"])
    unknown = sorted(set(cfg.net_options) - set(accepted))
    if unknown:
        raise ValueError(f"net_options {unknown} are no options of {cfg.net}; accepted: {accepted}")
    accepted = task_option_names(cfg.task)
    unknown = sorted(set(cfg.task_options) - set(accepted))
    if unknown:
        raise ValueError(f"task_options {unknown} are no options of task {cfg.task!r}; accepted: {accepted}")
    check_measurements(cfg.measure)
    check_options(cfg.options)  # before hours of training: a bad value would fail the run after it
    check_augment(cfg)
    n_test = test_set_size(cfg)
    if not build:
        return cfg
    probes = cfg.states and any(MEASUREMENT_FACTS[m].probes for m in cfg.measure)
    if probes and cfg.P > n_test:
        raise ValueError(f"P={cfg.P} is larger than the test set ({n_test} samples: test_size, or the "
                         f"task's default); lower P or raise test_size")
    _build_check(cfg)
    if probes and not isinstance(cfg.layers, str):
        graph = _build_check(cfg, graph=True)
        unknown = [n for n in cfg.layers if n not in graph]
        if unknown:
            raise ValueError(f"layers: {unknown} are no nodes of {cfg.net}'s graph; accepted: 'all', "
                             f"'output' or names among {graph}")
    return cfg
