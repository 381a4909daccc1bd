"""The import structure of stabkit follows its layers (ARCHITECTURE.md): parsed with ``ast``, nothing imported.

- Layers, lowest first: ``checks, atomic, checkpoints, protocol, locks`` < ``transforms, graph, laplacian, nets,
  data, precision`` < ``probes, stability, invariance, train`` < ``robustness, theory`` (the core; theory measures
  its constant-filter nets with ``stability``) < ``runs`` (one run) < ``sweeps`` (many runs) < ``campaign`` (and the CLI
  ``__main__``) < ``report`` (notebook support) < ``tools/`` (the book's build tool, outside the package). A module
  may import its own layer and the layers below it, never one above (imports inside functions count).
- No import cycle between modules (a package's ``__init__`` re-exporting its own submodules is not one).
- No module uses another module's private name: ``from stabkit.x import _name`` or ``x._name``.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "stabkit"

#: Rank of each top-level module or subpackage of stabkit (a higher rank may import a lower one).
LAYERS = {
    "checks": 0, "atomic": 0, "checkpoints": 0, "protocol": 0, "lazy": 0, "locks": 0,
    "transforms": 1, "graph": 1, "laplacian": 1, "nets": 1, "data": 1, "precision": 1,
    "stability": 2, "probes": 2, "invariance": 2, "train": 2, "batchnorm": 2,
    "robustness": 3, "theory": 3,
    "runs": 4, "sweeps": 5, "campaign": 6, "__main__": 6,
    "report": 7,
}
TOOLS_RANK = 8
LAYER_NAMES = {0: "base helpers", 1: "core", 2: "core measurements/training", 3: "robustness and theory",
               4: "one run", 5: "many runs", 6: "campaign", 7: "report", 8: "tools"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    mods = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    mods.update({f"tools.{p.stem}": p for p in (REPO / "tools").glob("*.py")})
    return mods


MODULES = _modules()


def _rank(module: str) -> int | None:
    if module.startswith("tools."):
        return TOOLS_RANK
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package root: its public face may import any core module
    return LAYERS.get(parts[1], -1)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """``(target module, imported name or None, line)`` of every stabkit import of ``module``."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "stabkit"]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            if base.split(".")[0] != "stabkit":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (base, a.name, node.lineno))
    return out


def _aliases(module: str) -> dict[str, str]:
    """Local names bound to stabkit modules in ``module`` (``from stabkit import data`` -> data)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf8"))
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    names[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for a in node.names:
                if f"{base}.{a.name}" in MODULES:
                    names[a.asname or a.name] = f"{base}.{a.name}"
    return names


def _owner(target: str) -> str:
    """The module a target names (a name inside a module counts as that module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_every_module_has_a_layer():
    unknown = [m for m in MODULES if _rank(m) == -1]
    assert not unknown, f"modules outside the layers of ARCHITECTURE.md (add them to LAYERS): {unknown}"


def test_no_upward_import():
    bad = []
    for m in MODULES:
        r = _rank(m)
        if r is None or r < 0:  # the package root; modules without a layer fail the test above
            continue
        for target, _, line in _imports(m):
            t = _owner(target)
            rt = _rank(t) if t else None
            if rt is not None and rt > r:
                bad.append(f"{MODULES[m].relative_to(REPO)}:{line} ({LAYER_NAMES.get(r, r)}) imports {t} "
                           f"({LAYER_NAMES.get(rt, rt)})")
    assert not bad, "upward imports:\n" + "\n".join(dict.fromkeys(bad))


def _graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _ in _imports(m):
            t = _owner(target)
            if not t or t == m or t == "stabkit":
                continue
            if MODULES[m].name == "__init__.py" and t.startswith(m + "."):
                continue  # a package re-exporting its own submodules
            graph[m].add(t)
    return graph


def test_no_import_cycle():
    graph, state, stack, cycles = _graph(), {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_across_modules():
    bad = []
    for m in MODULES:
        for target, name, line in _imports(m):
            if name is not None and _private(name) and _owner(target) != m:
                bad.append(f"{MODULES[m].relative_to(REPO)}:{line} imports {name} from {target}")
        aliases = _aliases(m)
        for node in ast.walk(ast.parse(MODULES[m].read_text(encoding="utf8"))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and _private(node.attr) and aliases[node.value.id] != m):
                bad.append(f"{MODULES[m].relative_to(REPO)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("source, expected", [
    ("from stabkit.runs import _lock", "imports _lock"),
    ("from stabkit import data\nx = data._locate", "uses data._locate"),
])
def test_the_checks_catch_what_they_should(source, expected, tmp_path, monkeypatch):
    fake = tmp_path / "stabkit" / "report" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    monkeypatch.setitem(MODULES, "stabkit.report.fake", fake)
    monkeypatch.setattr(Path, "relative_to", lambda self, other: self)
    with pytest.raises(AssertionError, match=expected):
        test_no_private_name_across_modules()


def test_upward_import_is_caught(tmp_path, monkeypatch):
    fake = tmp_path / "theory_fake.py"
    fake.write_text("def f():\n    from stabkit.report import figures\n")
    monkeypatch.setitem(MODULES, "stabkit.theory_fake", fake)
    monkeypatch.setitem(LAYERS, "theory_fake", 1)
    monkeypatch.setattr(Path, "relative_to", lambda self, other: self)
    with pytest.raises(AssertionError, match="upward"):
        test_no_upward_import()


@pytest.mark.parametrize("module, source", [
    ("stabkit.runs.fake", "from stabkit.sweeps import load_sweep\n"),       # one run -> many runs
    ("stabkit.sweeps.fake", "def f():\n    from ..campaign import plan\n"),  # many runs -> the campaign
    ("stabkit.campaign.fake", "from stabkit.report import glue\n"),          # the campaign -> notebook support
])
def test_the_wings_above_the_core_are_ranked(module, source, tmp_path, monkeypatch):
    fake = tmp_path / "fake.py"
    fake.write_text(source)
    monkeypatch.setitem(MODULES, module, fake)
    monkeypatch.setattr(Path, "relative_to", lambda self, other: self)
    with pytest.raises(AssertionError, match="upward"):
        test_no_upward_import()


#: Where a figure's knowledge lives: its sweep file (``paper:``, ``campaign:``), never the packages that run it.
FIGURE_FREE = ("runs", "sweeps", "campaign")
_FIGURE = re.compile(r"\bfig(ure)?s?\.?\s*\d|\bfig\d", re.I)


def _code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, text)`` of the identifiers and string constants of a module, docstrings left out (they may cite
    a figure as an example; the code may not act on one)."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.append((node.lineno, node.name))
    return out


def test_the_run_packages_name_no_sweep_or_figure():
    """Issue 24: what a figure needs (its protocol, campaign priority, smoke run, time-model assumption) is in
    its sweep file; the one-run, many-runs and campaign packages act on no sweep or figure by name."""
    names = {p.stem for p in (REPO / "sweeps").glob("*.yaml")}
    bad = []
    for m, path in MODULES.items():
        if m.split(".")[:2][-1] not in FIGURE_FREE:
            continue
        for line, text in _code_strings(ast.parse(path.read_text(encoding="utf8"))):
            hit = [n for n in names if n in text] or _FIGURE.findall(text)
            if hit:
                bad.append(f"{path.relative_to(REPO)}:{line}: {text[:80]!r}")
    assert not bad, "sweeps or figures named in the run packages (move them to the sweep file):\n" + "\n".join(bad)
