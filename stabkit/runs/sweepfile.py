"""Sweeps: a YAML file of run configurations at several scales (torch-free).

:func:`~stabkit.runs.load_sweep` expands a file of ``sweeps/`` (grammar in its docstring) into the unique
:class:`~stabkit.runs.config.RunConfig` objects of one scale. Reading a sweep never imports torch: the
network-registry checks are deferred to :meth:`~stabkit.runs.Sweep.validate`, which :func:`stabkit.runs.sweep` calls
before it trains anything.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, deferred_registry_checks
from .paths import sweeps_dir

__all__ = ["SCALES", "Sweep", "load_sweep", "as_sweep", "sweep_path", "sweep_scales", "load_yaml"]

#: The scales of the figure sweeps, smallest first: ``tiny`` (tests), ``small`` (book default on a CPU),
#: ``cpu`` (the paper's protocol on the subset 2 CPU cores finish), ``gpu`` (the paper's grid, fewer
#: seeds), ``paper`` (everything). A sweep file may define any subset, or other names.
SCALES = ("tiny", "small", "cpu", "gpu", "paper")
_TOP_KEYS = ("name", "description", "include", "base", "grid", "scales")


@dataclass
class Sweep:
    """A sweep at one scale: ``name`` (file stem), ``scale``, ``configs`` (unique, in grid order)."""
    name: str
    scale: str
    configs: list[RunConfig]
    path: Path | None = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.configs]

    def validate(self) -> Sweep:
        """Run the checks that need the registries (imports torch) on every configuration
        (:meth:`RunConfig.check_registries`: net, options, measurements, augmentations, P, layers);
        raises one ``ValueError`` naming the sweep, the scale, and each bad run with its problem (the
        first five). Returns ``self``."""
        bad = []
        for c in self.configs:
            try:
                c.check_registries()
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


def _read(spec: str | Path | Mapping) -> tuple[dict, Path | None]:
    if isinstance(spec, Mapping):
        return dict(spec), None
    path = sweep_path(spec)
    doc = load_yaml(path, "sweep file") or {}
    if not isinstance(doc, Mapping):
        raise ValueError(f"sweep file {path}: the top level must be a mapping of {_TOP_KEYS}, got "
                         f"{type(doc).__name__}")
    return dict(doc), path


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


def load_sweep(spec: str | Path | Mapping, scale: str = "small") -> Sweep:
    """Expand a sweep file (or name under ``sweeps/``, or an already parsed mapping) at ``scale``.

    Format (YAML)::

        name: fig5_scale_detection        # optional, default: the file stem
        description: one line             # optional
        include:                          # optional: also the configs of other sweeps at this scale
          - other_sweep                   #   all of them, or a subset:
          - {sweep: fig5_scale_detection, where: {net: [VGG11bn], ptr: [1024]}}
        base: {task: twopoints, P: 500}   # fields of RunConfig shared by every run
        grid: {net: [VGG11, LeNet], seed: [0, 1]}   # product over the lists (or a list of such blocks:
                                                    # union of products)
        scales:                           # each scale overrides base and/or grid keys
          tiny:  {base: {epochs: 1, ptr: 64}, grid: {net: [LeNet]}}
          small: {base: {...}, grid: {...}}
          paper: {}

    A key set in a scale's ``base`` is removed from the sweep's grid (fixed) and vice versa; a scale's
    ``grid`` given as a list of blocks replaces the grid, and a key its blocks set wins over the scale's
    ``base`` (e.g. ``base: {epochs: 15}`` with one block at ``epochs: [25]``). Values are RunConfig fields (lists for tuple fields).
    A sweep with ``include`` and no ``grid`` is exactly the included runs (same keys, same folders: no
    rework). Configurations are deduplicated by key, in order. Torch is not imported: network names are
    checked by :meth:`~stabkit.runs.Sweep.validate`.
    """
    with deferred_registry_checks():
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
                         f"base, grid, scales (keys starting with '_' are free, e.g. YAML anchors)")
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
        if not isinstance(target, (str, Path)) or set(inc) - {"sweep", "where"}:
            raise ValueError(f"sweep {name!r}: include entries are names or "
                             f"{{sweep: name, where: {{field: [values]}}}}, got {inc!r}")
        cond = _mapping(inc.get("where"), "include.where", where)
        if path is not None and (path.parent / f"{target}.yaml").is_file():
            target = path.parent / f"{target}.yaml"
        for c in _load(target, scale, _stack).configs:
            if all(_matches(getattr(c, k, _MISSING), v, k) for k, v in cond.items()):
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
    return Sweep(name, scale, list(configs.values()), path, desc)


_MISSING = object()


def _matches(value: Any, allowed: Any, field_name: str) -> bool:
    if value is _MISSING:
        raise ValueError(f"include/where: unknown RunConfig field {field_name!r}")
    allowed = allowed if isinstance(allowed, list) else [allowed]
    value = list(value) if isinstance(value, tuple) else value
    return any(value == (list(a) if isinstance(a, tuple) else a) for a in allowed)


def as_sweep(spec: str | Path | Mapping | Sweep, scale: str | None) -> Sweep:
    """``spec`` itself if it is a :class:`Sweep`, else :func:`~stabkit.runs.load_sweep` at ``scale`` (default small)."""
    return spec if isinstance(spec, Sweep) else load_sweep(spec, scale or "small")
