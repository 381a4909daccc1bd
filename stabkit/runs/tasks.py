"""From a configuration to tensors: task data, loaders, normalisation, the network, the probe set.

Everything a run needs besides training and measuring, built on the CPU from the configuration alone
(so that ``init`` is reproducible from a finished run folder), and :class:`RunContext`, what a measurement
receives besides the model. Tasks and probe sets: ``book/methods.md``, sections "Tasks, networks and
training" and "Random diffeomorphisms"; the Fig. 1 corruption (``noise_std``) is the one of
:class:`stabkit.transforms.GaussianNoiseCorruption`, applied by the loaders after normalisation.

The core modules (data, nets, stability, transforms, train) are imported in the functions that use them:
they import torch, and this package is imported while a sweep loads, which must not import torch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig
from .measurements import AUGMENTATIONS, BUILTIN_AUGMENT, load_plugins

__all__ = ["TaskData", "RunContext", "task_data", "loader", "check_augment", "augment_fn", "build_net", "normalize",
           "probe_set", "probe_kinds", "corruption_generator", "PROBE_KINDS", "CORRUPTION_SEED_OFFSET"]


@dataclass
class TaskData:
    """Tensors of one task, as the loaders and probes need them (built by :func:`task_data`)."""
    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any
    in_channels: int
    input_size: int
    mean: Any = None
    std: Any = None
    test_positions: Any = None   # twopoints / scale1d: positions of the test samples (for probes)
    dataset: Any = None          # the task object (TwoPoints / ScaleDetection1D) when there is one


def _subset(x, y, n: int | None, seed: int, name: str):
    import torch
    if n is None or n >= len(y):
        if n is not None and n > len(y):
            raise ValueError(f"{name}={n} is larger than the {len(y)} available samples")
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def task_data(cfg: RunConfig) -> TaskData:
    """Load/generate the data of ``cfg`` on the CPU (``stabkit.data``): the ``ptr`` training samples
    drawn with ``data_seed``, the ``test_size`` test samples drawn with seed 0 (the same for every seed)."""
    from .. import data  # torch: see the module docstring
    opts = dict(cfg.task_options)
    if cfg.task == "cifar10":
        root = opts.pop("root", None)
        if opts:
            raise ValueError(f"task_options for cifar10 accept only 'root', got {sorted(opts)}")
        tr_x, tr_y = data.cifar10_tensors(root=root, train=True)
        te_x, te_y = data.cifar10_tensors(root=root, train=False)
        tr_x, tr_y = _subset(tr_x, tr_y, cfg.ptr, cfg.data_seed, "ptr")
        te_x, te_y = _subset(te_x, te_y, cfg.test_size, 0, "test_size")  # same test subset for every seed
        return TaskData(tr_x, tr_y, te_x, te_y, 3, int(tr_x.shape[-1]), data.CIFAR10_MEAN, data.CIFAR10_STD)
    # the two-pixel tasks share one dataset protocol (data.PairTask)
    task_cls = data.TwoPoints if cfg.task == "twopoints" else data.ScaleDetection1D
    kw = dict(opts, ptr=cfg.ptr, seed=cfg.data_seed)
    if cfg.test_size is not None:
        kw.setdefault("testsize", cfg.test_size)
    tr, te = task_cls(train=True, **kw), task_cls(train=False, **kw)
    return TaskData(tr.x, tr.y, te.x, te.y, int(tr.x.shape[1]), int(tr.x.shape[-1]),
                    test_positions=te.positions, dataset=te)


def loader(cfg: RunConfig, d: TaskData, device: str, *, train: bool, noise_std: float = 0.0, seed: int = 0):
    """A ``stabkit.data.DeviceLoader`` over the training or test tensors: batches of ``cfg.batch_size``
    (test: :func:`stabkit.data.default_eval_batch_size`), crop/flip and registered augmentations when training, normalisation, then the
    Fig. 1 corruption of norm ``noise_std``."""
    from .. import data  # torch: see the module docstring
    x, y = (d.train_x, d.train_y) if train else (d.test_x, d.test_y)
    if train:
        check_augment(cfg)
    aug = [a for a in cfg.augment if a in BUILTIN_AUGMENT] if train else []
    return data.DeviceLoader(x, y, cfg.batch_size if train else data.default_eval_batch_size(cfg.batch_size, device), shuffle=train,
                             augment=bool(aug), mean=d.mean, std=d.std, noise_std=noise_std, device=device,
                             seed=seed, extra_augment=augment_fn(cfg) if train else None)


def check_augment(cfg: RunConfig) -> None:
    """``ValueError`` unless the loader can do ``cfg.augment``: ``crop`` and ``flip`` together (the loader does
    both) and only for cifar10, the others registered augmentations (after ``$STABKIT_PLUGINS`` is loaded)."""
    builtin = [a for a in cfg.augment if a in BUILTIN_AUGMENT]
    if builtin and cfg.task != "cifar10":
        raise ValueError(f"augment {builtin} (crop/flip) is only defined for cifar10, not {cfg.task!r}")
    if builtin and sorted(builtin) != ["crop", "flip"]:
        raise ValueError(f"augment: 'crop' and 'flip' go together (the loader does both), got {list(cfg.augment)}")
    load_plugins()
    unknown = [a for a in cfg.augment if a not in BUILTIN_AUGMENT and a not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"augment: unknown augmentation(s) {unknown}; accepted: "
                         f"{list(BUILTIN_AUGMENT) + sorted(AUGMENTATIONS)}")


def augment_fn(cfg: RunConfig) -> Callable | None:
    """The registered augmentations of ``cfg.augment`` (other than crop/flip) chained, or None."""
    extra = [a for a in cfg.augment if a not in BUILTIN_AUGMENT]
    if not extra:
        return None
    check_augment(cfg)
    fns = [AUGMENTATIONS[a] for a in extra]

    def apply(x, gen):
        for fn in fns:
            x = fn(x, gen)
        return x
    return apply


def build_net(cfg: RunConfig, d: TaskData):
    """The network of ``cfg`` with its initial weights (``torch.manual_seed(cfg.seed)`` first), on the CPU."""
    from .. import nets  # torch: see the module docstring
    import torch
    torch.manual_seed(cfg.seed)
    opts = dict(cfg.net_options)
    opts.setdefault("input_size", d.input_size)
    return nets.build(cfg.net, in_channels=d.in_channels, num_classes=1 if cfg.hinge else 10,
                      width_factor=cfg.width_factor, **opts)


def normalize(x, mean: Sequence[float] | None, std: Sequence[float] | None, device: str = "cpu"):
    """Raw images -> network input, float32 on ``device``: uint8 scaled to [0, 1], then ``(x - mean) /
    std`` per channel when ``mean`` is given (``[B, C, H, W]``)."""
    import torch
    x = torch.as_tensor(x).to(device)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if mean is not None:
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - m) / s
    return x


#: The probe sets a run measures (column ``probes`` of the ``output`` and ``layers`` tables): ``"corrupted"``
#: (Fig. 1: test images corrupted with the network's own training noise, as the paper measures a
#: noise-trained network) and ``"clean"`` (the test images themselves).
PROBE_KINDS = ("corrupted", "clean")
#: Offset of the corruption generator's seed (``probe_seed * 1_000_003 + offset``): a stream of its own, so
#: that the clean probes stay exactly those of ``probe_seed`` and every net of a sweep shares the corruption.
CORRUPTION_SEED_OFFSET = 7919


def probe_kinds(cfg: RunConfig) -> tuple[str, ...]:
    """The probe sets a run measures, the paper's first: ``("corrupted", "clean")`` for a CIFAR-10 run
    trained with noise corruption (``noise_std > 0``), else ``("clean",)`` (at ``noise_std = 0`` the
    corrupted images are the clean ones)."""
    return PROBE_KINDS if (cfg.task == "cifar10" and cfg.noise_std > 0) else ("clean",)


def corruption_generator(cfg: RunConfig):
    """The CPU generator of the probe images' corruption: seeded from ``probe_seed`` only, so every net of
    a noise level sees the same corrupted images (and every level the same direction ``z``)."""
    import torch
    return torch.Generator().manual_seed(int(cfg.probe_seed) * 1_000_003 + CORRUPTION_SEED_OFFSET)


def probe_set(cfg: RunConfig, d: TaskData, kind: str | None = None):
    """Probe set ``(x, x_tau, x_eta)`` of a run on the CPU, float64: depends only on task/data options,
    ``P``, ``probe_seed``, ``delta``, ``cut`` and, for ``kind="corrupted"``, ``noise_std`` (so every net
    of a sweep, or of one noise level, sees the same probes).

    ``kind``: ``"clean"`` (the test images) or ``"corrupted"`` (CIFAR-10 only: the normalised test images
    corrupted once with :class:`stabkit.transforms.GaussianNoiseCorruption` of the run's ``noise_std``,
    the training corruption, drawn from :func:`~stabkit.runs.tasks.corruption_generator`; then ``x_tau`` and ``x_eta``
    are drawn from the corrupted images, as the paper does: ``book/methods.md``, "Parity with the original
    code"). Default (``None``): the first of :func:`~stabkit.runs.tasks.probe_kinds`. Both kinds use the same images,
    the same diffeomorphisms and the same noise directions (the same generator draws).
    """
    import torch
    from .. import data  # torch: see the module docstring
    kinds = probe_kinds(cfg)
    kind = kinds[0] if kind is None else kind
    if kind not in PROBE_KINDS:
        raise ValueError(f"kind must be one of {PROBE_KINDS} or None, got {kind!r}")
    if kind == "corrupted" and kind not in kinds:
        raise ValueError(f"kind='corrupted' needs a cifar10 run with noise_std > 0 (task {cfg.task!r}, "
                         f"noise_std {cfg.noise_std})")
    gen = torch.Generator().manual_seed(cfg.probe_seed)
    if cfg.task == "cifar10":
        from ..probes import draw_probes  # torch: see the module docstring
        n = len(d.test_y)
        if cfg.P > n:
            raise ValueError(f"P={cfg.P} is larger than the test set ({n} images)")
        idx = torch.randperm(n, generator=gen)[: cfg.P]
        x = normalize(d.test_x[idx], d.mean, d.std)
        if kind == "corrupted":
            from ..transforms import GaussianNoiseCorruption  # torch: see the module docstring
            x = GaussianNoiseCorruption(cfg.noise_std, corruption_generator(cfg))(x.double())
        return tuple(draw_probes(x, delta=cfg.delta, cut=cfg.cut, generator=gen))  # float64, CPU
    if cfg.task == "twopoints":
        return tuple(data.twopoints_probes(d.test_positions, d.input_size, cfg.P, gen))
    return tuple(data.scale1d_probes(d.dataset, P=cfg.P, generator=gen))


@dataclass
class RunContext:
    """What a measurement gets besides the model and the config.

    Attributes: ``cfg``, ``state`` ("init" | "trained"), ``device`` (str), ``run_dir`` (Path), ``data``
    (``TaskData``, CPU tensors: ``test_x`` raw as the task stores it, e.g. uint8 CIFAR images),
    ``train`` (``stabkit.train.TrainResult`` or None), ``batch_stats`` (True at init), ``cache`` (dict
    shared by the measurements of the run). Methods: ``probes(kind=None)`` -> ``(x, x_tau, x_eta)``
    normalised, on the device (the same for every net of a sweep; ``kind`` "corrupted" or "clean", default
    the paper's: corrupted with the run's own training noise for a noise-trained CIFAR-10 run); ``test_loader(noise_std=0.0)``;
    ``evaluate(model, loader=None) -> (loss, err)``; ``normalize(x)`` (raw images -> network input on the
    device); ``build_net()`` (fresh, same init seed); ``generator(offset=0)`` (CPU generator seeded from
    ``probe_seed``); ``probe_kinds()`` (the probe sets of the run, :func:`~stabkit.runs.tasks.probe_kinds`).
    """
    cfg: RunConfig
    state: str
    device: str
    run_dir: Path
    data: Any
    train: Any = None
    cache: dict = field(default_factory=dict)

    @property
    def batch_stats(self) -> bool:
        """Whether batch norm uses batch statistics (``True`` at initialisation, the paper's convention)."""
        return self.state == "init"

    def generator(self, offset: int = 0):
        import torch
        return torch.Generator().manual_seed(int(self.cfg.probe_seed) * 1_000_003 + int(offset))

    def normalize(self, x):
        return normalize(x, self.data.mean, self.data.std, self.device)

    def test_loader(self, noise_std: float = 0.0):
        return loader(self.cfg, self.data, self.device, train=False, noise_std=noise_std,
                      seed=self.cfg.data_seed + 1)

    def evaluate(self, model, loader=None) -> tuple[float, float]:
        from ..train import evaluate  # torch: see the module docstring
        return evaluate(model, loader if loader is not None else self.test_loader(), self.cfg.loss)

    def build_net(self):
        return build_net(self.cfg, self.data).to(self.device)

    def probe_kinds(self) -> tuple[str, ...]:
        """The probe sets this run measures, the paper's first (:func:`~stabkit.runs.tasks.probe_kinds`)."""
        return probe_kinds(self.cfg)

    def probes(self, kind: str | None = None):
        """``(x, x_tau, x_eta)``, float64 ``[P, C, ...]`` on the device, cached per run. ``kind``:
        ``"corrupted"`` or ``"clean"`` (:func:`probe_set`); default the paper's
        (:func:`~stabkit.runs.tasks.probe_kinds`)."""
        kind = probe_kinds(self.cfg)[0] if kind is None else kind
        key = "probes" if kind == "clean" else f"probes_{kind}"
        if key not in self.cache:
            self.cache[key] = tuple(t.to(self.device) for t in probe_set(self.cfg, self.data, kind))
        return self.cache[key]
