"""The package root: public names and lazily imported submodules."""
import subprocess
import sys

import stabkit


def test_import_is_cheap_and_lazy():
    code = ("import sys, stabkit; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'stabkit.stability' not in sys.modules; "
            "stabkit.measure; assert 'stabkit.stability' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_public_names():
    from stabkit import probes, stability

    assert stabkit.measure is stability.measure
    assert stabkit.draw_probes is probes.draw_probes
    assert stabkit.Probes is probes.Probes
    assert stabkit.shuffle_channels is stability.shuffle_channels
    assert set(stabkit.__all__) == {"measure", "draw_probes", "Probes", "shuffle_channels"}
    assert {"measure", "transforms", "nets", "graph"} <= set(dir(stabkit))
    assert stabkit.transforms.deform is not None and stabkit.graph.trace is not None
    try:
        stabkit.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("no AttributeError")


def test_the_package_faces_serve_what_they_list_and_load_lazily():
    """stabkit.runs / sweeps / campaign (issue 24): each name of ``__all__`` resolves, the ``TYPE_CHECKING``
    imports readers see list the same names, and the sweep grammar loads without torch."""
    import ast
    import importlib
    from pathlib import Path

    for name in ("runs", "sweeps", "campaign"):
        pkg = importlib.import_module(f"stabkit.{name}")
        assert 10 <= len(pkg.__all__) <= 30, (name, len(pkg.__all__))  # what users need, not every name
        for n in pkg.__all__:
            assert getattr(pkg, n) is not None, (name, n)
        tree = ast.parse(Path(pkg.__file__).read_text())
        seen = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.If)
                for sub in node.body if isinstance(sub, ast.ImportFrom) for a in sub.names}
        assert seen == set(pkg.__all__), name
    code = ("import sys; from stabkit.sweeps import load_sweep; from stabkit.runs import RunConfig; "
            "import stabkit.campaign; assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_report_packages_serve_what_they_list_from_their_submodules():
    """stabkit.report.page and stabkit.report.layer_claims: packages whose ``__init__`` re-exports the names
    the notebooks use (``from stabkit.report.page import glue``, ``layer_claims.claim_...``); every name of
    ``__all__`` is the object its submodule defines, and no submodule is named as a name the package serves."""
    import importlib
    import pkgutil

    for name in ("page", "layer_claims"):
        pkg = importlib.import_module(f"stabkit.report.{name}")
        subs = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
        assert subs and not subs & set(pkg.__all__), (name, subs & set(pkg.__all__))
        for n in pkg.__all__:
            obj = getattr(pkg, n)
            owner = getattr(obj, "__module__", None)
            if owner is not None and owner.startswith(pkg.__name__ + "."):  # functions and classes: where defined
                assert getattr(importlib.import_module(owner), n) is obj, (name, n)
