"""Sweeps: a YAML file of run configurations at several scales (torch-free).

:func:`~stabkit.sweeps.load_sweep` expands a file of ``sweeps/`` (grammar in its docstring) into the unique
:class:`~stabkit.runs.config.RunConfig` objects of one scale. Reading a sweep never imports torch: the
network-registry checks are ``Sweep.validate()``, which :func:`stabkit.sweeps.sweep` calls before it
trains anything.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runs.config import RunConfig
from ..runs.paths import sweeps_dir

__all__ = ["SCALES", "Sweep", "Stage", "Campaign", "SweepFacts", "load_sweep", "as_sweep", "sweep_path",
           "sweep_scales", "sweep_facts", "load_yaml"]

#: The scales of the figure sweeps, smallest first: ``tiny`` (tests), ``small`` (book default on a CPU),
#: ``cpu`` (the paper's protocol on the subset 2 CPU cores finish), ``gpu`` (the paper's grid, fewer
#: seeds), ``paper`` (everything). A sweep file may define any subset, or other names.
SCALES = ("tiny", "small", "cpu", "gpu", "paper")
_TOP_KEYS = ("name", "description", "include", "base", "grid", "scales", "paper", "campaign")
_STAGE_KEYS = ("label", "priority", "where", "unless", "unless_nets_of_scale")
_CAMPAIGN_KEYS = ("stages", "smoke", "zero_loss_epochs")
_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


@dataclass(frozen=True)
class Stage:
    """One stage of the campaign's priority order (a sweep file's ``campaign.stages``): the runs of the sweep
    that every ``where`` field admits (``{field: [values]}``), no ``unless`` field names (one match excludes
    the run) and whose network the sweep's scale ``unless_nets_of_scale`` lacks; stages of every sweep file
    are planned by ascending ``priority``."""
    label: str
    priority: float
    where: Mapping[str, list] = field(default_factory=dict)
    unless: Mapping[str, list] = field(default_factory=dict)
    unless_nets_of_scale: str | None = None

    def selects(self, cfg: RunConfig, nets_of_scale: frozenset[str] = frozenset()) -> bool:
        """Whether ``cfg`` is a run of this stage; ``nets_of_scale``: the networks of the sweep's grid at
        :attr:`unless_nets_of_scale` (the caller loads them)."""
        return (all(_matches(getattr(cfg, k), v, k) for k, v in self.where.items())
                and not any(_matches(getattr(cfg, k), v, k) for k, v in self.unless.items())
                and not (self.unless_nets_of_scale and cfg.net in nets_of_scale))


@dataclass(frozen=True)
class Campaign:
    """A sweep file's ``campaign:`` block: its ``stages`` (:class:`Stage`), ``smoke`` (the smoke test runs
    the first ``tiny`` configuration of this sweep, in ascending ``smoke`` order over the sweep files;
    ``None``: not a smoke run) and ``zero_loss_epochs`` (network -> epochs a run that stops at zero training
    loss is assumed to take until the campaign's own runs say; the time model's assumption)."""
    stages: tuple[Stage, ...] = ()
    smoke: float | None = None
    zero_loss_epochs: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepFacts:
    """What a sweep file says of its figure, at every scale: ``paper`` (the paper's protocol, ``{RunConfig
    field: [values]}``, compared with a page's runs; ``None`` for a sweep that is no figure of the paper) and
    ``campaign`` (:class:`Campaign`; ``None`` without a ``campaign:`` block)."""
    name: str
    paper: Mapping[str, list] | None = None
    campaign: Campaign | None = None


@dataclass
class Sweep:
    """A sweep at one scale: ``name`` (file stem), ``scale``, ``configs`` (unique, in grid order), and the
    file's ``paper`` protocol and ``campaign`` block (``SweepFacts``)."""
    name: str
    scale: str
    configs: list[RunConfig]
    path: Path | None = None
    description: str = ""
    paper: Mapping[str, list] | None = None
    campaign: Campaign | None = None

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.configs]

    def validate(self) -> Sweep:
        """Run the checks that need the registries (imports torch) on every configuration
        (:func:`stabkit.runs.validate`: net, options, measurements, augmentations, P, layers);
        raises one ``ValueError`` naming the sweep, the scale, and each bad run with its problem (the
        first five). Returns ``self``."""
        from ..runs.validation import validate  # here, not above: reading a sweep file stays torch-free
        bad = []
        for c in self.configs:
            try:
                validate(c)
            except (TypeError, ValueError) as exc:
                bad.append(f"run {c.key} ({c.net}): {exc}")
        if bad:
            more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise ValueError(f"sweep {self.name!r}, scale {self.scale!r}: {len(bad)} of {len(self)} run(s) "
                             f"refused: " + "; ".join(bad[:5]) + more)
        return self


def sweep_path(spec: str | Path) -> Path:
    """The YAML file of ``spec``: a path, or a name under :func:`~stabkit.runs.sweeps_dir`."""
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ValueError(f"sweep file {p} does not exist")
        return p
    cand = sweeps_dir() / f"{spec}.yaml"
    if not cand.is_file():
        avail = sorted(q.stem for q in sweeps_dir().glob("*.yaml")) if sweeps_dir().is_dir() else []
        raise ValueError(f"unknown sweep {spec!r}: no file {cand}; available: {avail}")
    return cand


def load_yaml(path: str | Path, what: str = "file") -> Any:
    """The YAML document of ``path`` (``ValueError`` naming ``what`` and the file when it is not UTF-8, not
    valid YAML, or when a mapping lists a key twice: YAML would keep the last value silently). Keys that a
    merge (``<<: *anchor``) brings in may be overridden, as YAML intends."""
    import yaml

    class _UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                    seen.setdefault(key, line)
                except TypeError:
                    continue  # an unhashable key: the base loader reports it
                if first is not None:
                    raise ValueError(f"{what} {path}: key {key!r} is given twice (lines {first} and {line}); "
                                     f"YAML would keep only the last")
            return super().construct_mapping(node, deep=deep)

    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {path}: invalid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ValueError(f"{what} {path}: nested too deeply") from None


#: Parsed sweep files by (path, modification time, size): a page that tries several scales, or a sweep that
#: includes another at each of them, parses every file once per process; an edited file is read again.
_PARSED: dict[tuple[str, int, int], dict] = {}


def _read(spec: str | Path | Mapping) -> tuple[dict, Path | None]:
    if isinstance(spec, Mapping):
        return dict(spec), None
    path = sweep_path(spec)
    st = path.stat()
    ident = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if ident not in _PARSED:
        doc = load_yaml(path, "sweep file") or {}
        if not isinstance(doc, Mapping):
            raise ValueError(f"sweep file {path}: the top level must be a mapping of {_TOP_KEYS}, got "
                             f"{type(doc).__name__}")
        if len(_PARSED) >= 64:
            _PARSED.clear()
        _PARSED[ident] = dict(doc)
    return copy.deepcopy(_PARSED[ident]), path  # callers may edit their copy


def sweep_scales(spec: str | Path | Mapping) -> list[str]:
    """The scale names a sweep file defines, in file order."""
    doc, path = _read(spec)
    return list(_mapping(doc.get("scales"), "scales", _where(doc, path)))


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # the results store's grammar (it names its folders)


def _where(doc: Mapping, path: Path | None) -> str:
    return f"sweep file {path}" if path is not None else f"sweep {doc.get('name', 'sweep')!r}"


def _mapping(value: Any, field_name: str, where: str) -> dict:
    """``value`` as a dict (``None`` -> ``{}``), else ``ValueError`` naming the field."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: {field_name} must be a mapping (key: value), got {type(value).__name__} "
                         f"{value!r}"[:300])
    return dict(value)


def _sweep_name(doc: Mapping, path: Path | None) -> str:
    """The sweep's name: ``name:`` or the file stem; a plain name (it names folders under results/)."""
    name = doc.get("name")
    if name is None or name == "":
        return path.stem if path else "sweep"
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{_where(doc, path)}: name must be a plain name (a letter or digit, then letters, "
                         f"digits, '_', '-', '.'; no path separator, no '..'), got {name!r}")
    return name


def _grid_blocks(grid: Any, where: str) -> list[dict]:
    blocks = [grid] if isinstance(grid, Mapping) else list(grid or [{}])
    for b in blocks:
        if not isinstance(b, Mapping):
            raise ValueError(f"{where}: grid must be a mapping of lists or a list of such mappings, got {b!r}")
        for k, v in b.items():
            if not isinstance(v, list):
                raise ValueError(f"{where}: grid value of {k!r} must be a list (of values to sweep), got {v!r}")
            if not v:  # the product would be empty: a sweep of 0 runs that "succeeds"
                raise ValueError(f"{where}: grid value of {k!r} is an empty list (no run); give at least one value")
    return [dict(b) for b in blocks] or [{}]


def _field_values(value: Any, what: str, where: str) -> dict[str, list]:
    """``{RunConfig field: [values]}`` (one value becomes a list of one), else ``ValueError`` naming ``what``."""
    out = {}
    for k, v in _mapping(value, what, where).items():
        if k not in _FIELDS:
            raise ValueError(f"{where}: {what} has unknown RunConfig field {k!r}; accepted: {sorted(_FIELDS)}")
        v = v if isinstance(v, list) else [v]
        if not v:
            raise ValueError(f"{where}: {what}.{k} is an empty list; give at least one value")
        out[k] = v
    return out


def _number(value: Any, what: str, where: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ValueError(f"{where}: {what} must be a number >= {minimum:g}, got {value!r}")
    return value


def _stage(value: Any, i: int, where: str) -> Stage:
    what = f"campaign.stages[{i}]"
    d = _mapping(value, what, where)
    unknown = sorted(set(d) - set(_STAGE_KEYS))
    if unknown:
        raise ValueError(f"{where}: {what}: unknown key(s) {unknown}; accepted: {list(_STAGE_KEYS)}")
    label = d.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{where}: {what}.label must be a non-empty string (the stage's name in the campaign's "
                         f"log), got {label!r}")
    if "priority" not in d:
        raise ValueError(f"{where}: {what}.priority is missing: a number, lower runs first")
    scale = d.get("unless_nets_of_scale")
    if scale is not None and not isinstance(scale, str):
        raise ValueError(f"{where}: {what}.unless_nets_of_scale must be a scale name, got {scale!r}")
    return Stage(label, _number(d["priority"], f"{what}.priority", where),
                 _field_values(d.get("where"), f"{what}.where", where),
                 _field_values(d.get("unless"), f"{what}.unless", where), scale)


def _campaign(value: Any, where: str) -> Campaign | None:
    if value is None:
        return None
    d = _mapping(value, "campaign", where)
    unknown = sorted(set(d) - set(_CAMPAIGN_KEYS))
    if unknown:
        raise ValueError(f"{where}: campaign: unknown key(s) {unknown}; accepted: {list(_CAMPAIGN_KEYS)}")
    stages = d.get("stages") or []
    if not isinstance(stages, list):
        raise ValueError(f"{where}: campaign.stages must be a list of {{label, priority, where, unless, "
                         f"unless_nets_of_scale}}, got {stages!r}")
    smoke = d.get("smoke")
    epochs = {}
    for net, n in _mapping(d.get("zero_loss_epochs"), "campaign.zero_loss_epochs", where).items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{where}: campaign.zero_loss_epochs.{net} must be an integer >= 1, got {n!r}")
        epochs[str(net)] = n
    return Campaign(tuple(_stage(st, i, where) for i, st in enumerate(stages)),
                    None if smoke is None else _number(smoke, "campaign.smoke", where), epochs)


def _facts(doc: Mapping, path: Path | None) -> SweepFacts:
    where = _where(doc, path)
    paper = None if doc.get("paper") is None else _field_values(doc["paper"], "paper", where)
    return SweepFacts(_sweep_name(doc, path), paper, _campaign(doc.get("campaign"), where))


def sweep_facts(spec: str | Path | Mapping | Sweep) -> SweepFacts:
    """The scale-free part of a sweep file (torch-free, no configuration expanded): its ``paper`` protocol
    and ``campaign`` block, validated (see ``load_sweep()``)."""
    if isinstance(spec, Sweep):
        return SweepFacts(spec.name, spec.paper, spec.campaign)
    return _facts(*_read(spec))


def load_sweep(spec: str | Path | Mapping, scale: str = "small") -> Sweep:
    """Expand a sweep file (or name under ``sweeps/``, or an already parsed mapping) at ``scale``.

    Format (YAML)::

        name: fig5_scale_detection        # optional, default: the file stem
        description: one line             # optional
        include:                          # optional: also the configs of other sweeps at this scale
          - other_sweep                   #   all of them, or a subset:
          - {sweep: fig5_scale_detection, where: {net: [VGG11bn]}, unless: {ptr: [2048]}}
          - {sweep: fig1_noise_corrupted_cifar, where: {net: [VGG11bn]}, set: {measure: [recalibrated]}}
                                          #   set: derived runs, these fields replaced (changing only what
                                          #   is measured keeps the network: it is trained once)
        base: {task: twopoints, P: 500}   # fields of RunConfig shared by every run
        grid: {net: [VGG11, LeNet], seed: [0, 1]}   # product over the lists (or a list of such blocks:
                                                    # union of products)
        scales:                           # each scale overrides base and/or grid keys
          tiny:  {base: {epochs: 1, ptr: 64}, grid: {net: [LeNet]}}
          small: {base: {...}, grid: {...}}
          paper: {}
        paper:                            # optional: the paper's protocol, {RunConfig field: [values]}; a
          net: [VGG11, LeNet]             #   page's "different from the paper" table compares with it
          epochs: [300]
        campaign:                         # optional: what the GPU campaign (stabkit.campaign) knows of it
          stages:                         #   planned by ascending priority over every sweep file
            - {label: "Fig. 5 ptr 1024", priority: 7, where: {ptr: [1024]}}
            - {label: "Fig. 5 rest", priority: 8, unless: {ptr: [1024]}, unless_nets_of_scale: cpu}
          smoke: 1                        #   the smoke test's tiny run of this task (ascending order)
          zero_loss_epochs: {LeNet: 300}  #   time model: epochs until zero training loss, by network

    A key set in a scale's ``base`` is removed from the sweep's grid (fixed) and vice versa; a scale's
    ``grid`` given as a list of blocks replaces the grid, and a key its blocks set wins over the scale's
    ``base`` (e.g. ``base: {epochs: 15}`` with one block at ``epochs: [25]``). Values are RunConfig fields (lists for tuple fields).
    A sweep with ``include`` and no ``grid`` is exactly the included runs (same keys, same folders: no
    rework); an include's ``where`` admits, its ``unless`` excludes (one match), and its ``set`` derives new
    runs from the included ones with those fields replaced (new keys; a run that changes only what it
    measures reuses the included run's network). Configurations are deduplicated by key, in order. ``paper`` and ``campaign`` are no run
    configuration (no key depends on them); a stage's ``where`` / ``unless`` (``{field: [values]}``) name
    RunConfig fields. Every key is checked: an unknown one is refused, naming it and the accepted keys. Torch
    is not imported: network names are checked by ``Sweep.validate()``.
    """
    return _load(spec, scale)


def _load(spec: str | Path | Mapping, scale: str, _stack: tuple = ()) -> Sweep:
    doc, path = _read(spec)
    name = _sweep_name(doc, path)
    ident = str(path.resolve()) if path is not None else f"<mapping {name}>"
    if ident in _stack:
        raise ValueError(f"{_where(doc, path)}: include makes a cycle: "
                         + " -> ".join(Path(p).stem if not p.startswith("<") else p for p in (*_stack, ident)))
    _stack = (*_stack, ident)
    extra = sorted(k for k in doc if k not in _TOP_KEYS and not str(k).startswith("_"))
    if extra:
        raise ValueError(f"sweep {name!r}: unknown top-level key(s) {extra}; accepted: name, description, include, "
                         f"base, grid, scales, paper, campaign (keys starting with '_' are free, e.g. YAML "
                         f"anchors)")
    where = _where(doc, path)
    scales = _mapping(doc.get("scales"), "scales", where)
    if scale not in scales:
        raise ValueError(f"sweep {name!r} has no scale {scale!r}; scales: {sorted(scales)}")
    over = _mapping(scales[scale], f"scales.{scale}", where)
    unknown = sorted(set(over) - {"base", "grid", "description"})
    if unknown:
        raise ValueError(f"sweep {name!r}, scale {scale!r}: unknown key(s) {unknown}; use 'base' and 'grid'")
    base = _mapping(doc.get("base"), "base", where)
    blocks = _grid_blocks(doc.get("grid"), f"sweep {name!r}")
    sbase = _mapping(over.get("base"), f"scales.{scale}.base", where)
    sgrid = over.get("grid")
    if isinstance(sgrid, list):  # the scale's own blocks: their keys win over the scale's base
        blocks = _grid_blocks(sgrid, f"sweep {name!r}, scale {scale!r}")
        sgrid = {}
    else:
        blocks = [{k: v for k, v in b.items() if k not in sbase} for b in blocks]
    sgrid = _grid_blocks(sgrid or {}, f"sweep {name!r}, scale {scale!r}")[0]
    base.update(sbase)
    for k in sgrid:
        base.pop(k, None)
    blocks = [{**b, **sgrid} for b in blocks]
    configs: dict[str, RunConfig] = {}
    includes = doc.get("include") or []
    if not isinstance(includes, list):
        raise ValueError(f"{where}: include must be a list of sweep names or {{sweep: name, where: {{...}}}}, "
                         f"got {includes!r}")
    for inc in includes:
        inc = {"sweep": inc} if isinstance(inc, (str, Path)) else inc
        target = inc.get("sweep") if isinstance(inc, Mapping) else None
        if not isinstance(target, (str, Path)) or set(inc) - {"sweep", "where", "unless", "set"}:
            raise ValueError(f"sweep {name!r}: include entries are names or {{sweep: name, where: {{field: [values]}}, "
                             f"unless: {{field: [values]}}, set: {{field: value}}}}, got {inc!r}")
        cond = _mapping(inc.get("where"), "include.where", where)
        excl = _mapping(inc.get("unless"), "include.unless", where)
        assign = _mapping(inc.get("set"), "include.set", where)
        unknown = sorted(k for k in assign if k not in _FIELDS)
        if unknown:
            raise ValueError(f"{where}: include.set: unknown RunConfig field(s) {unknown}; accepted: "
                             f"{', '.join(_FIELDS)}")
        if path is not None and (path.parent / f"{target}.yaml").is_file():
            target = path.parent / f"{target}.yaml"
        for c in _load(target, scale, _stack).configs:
            if (all(_matches(getattr(c, k, _MISSING), v, k) for k, v in cond.items())
                    and not any(_matches(getattr(c, k, _MISSING), v, k) for k, v in excl.items())):
                if assign:  # a derived run: same network (training key) when only measurement fields change
                    try:
                        c = RunConfig.from_dict({**c.to_dict(), **assign})
                    except (TypeError, ValueError) as exc:
                        raise ValueError(f"{where}, scale {scale!r}: include.set: bad configuration: {exc}") from None
                configs.setdefault(c.key, c)
    if doc.get("include") and not doc.get("grid") and not over.get("grid"):
        blocks = []  # a sweep made only of other sweeps' runs
    for b in blocks:
        keys = list(b)
        for values in itertools.product(*(b[k] for k in keys)):
            try:
                c = RunConfig.from_dict({**base, **dict(zip(keys, values))})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}, scale {scale!r}: bad configuration: {exc}") from None
            configs.setdefault(c.key, c)
    if not configs:  # e.g. an include whose `where` matches nothing: a sweep that would "succeed" doing nothing
        raise ValueError(f"{where}, scale {scale!r}: the sweep has no run")
    desc = str(over.get("description") or doc.get("description") or "")
    facts = _facts(doc, path)
    return Sweep(name, scale, list(configs.values()), path, desc, facts.paper, facts.campaign)


_MISSING = object()


def _matches(value: Any, allowed: Any, field_name: str) -> bool:
    if value is _MISSING:
        raise ValueError(f"include/where: unknown RunConfig field {field_name!r}")
    allowed = allowed if isinstance(allowed, list) else [allowed]
    value = list(value) if isinstance(value, tuple) else value
    return any(value == (list(a) if isinstance(a, tuple) else a) for a in allowed)


def as_sweep(spec: str | Path | Mapping | Sweep, scale: str | None) -> Sweep:
    """``spec`` itself if it is a :class:`Sweep`, else :func:`~stabkit.sweeps.load_sweep` at ``scale`` (default small)."""
    return spec if isinstance(spec, Sweep) else load_sweep(spec, scale or "small")
