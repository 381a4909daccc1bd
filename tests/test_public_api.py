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
    from stabkit import stability

    assert stabkit.measure is stability.measure
    assert stabkit.draw_probes is stability.draw_probes
    assert stabkit.Probes is stability.Probes
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
