"""`python -m stabkit`: help texts, every figure's sweep at the tiny scale, status/collect/export, train and
remeasure commands; no Jupyter/papermill/submitit imports on the command-line path."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stabkit import runs
from stabkit.__main__ import main

REPO = Path(__file__).resolve().parents[1]
FIGURE_SWEEPS = ["fig1_noise_corrupted_cifar", "fig3_layers_cifar", "fig5_scale_detection",
                 "fig6_layers_scale_detection", "fig2_laplacian_spectra", "appendix_scale_detection_1d"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A generated CIFAR-like data set (class folders of PNGs), a private data cache and runs root."""
    from PIL import Image
    base = tmp_path_factory.mktemp("cli")
    data = base / "cifar"
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 10)):
        for c, name in enumerate(CLASSES):
            d = data / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                img[..., c % 3] //= 2  # a little class signal
                Image.fromarray(img).save(d / f"{i:04d}.png")
    mp = pytest.MonkeyPatch()
    mp.setenv("STABKIT_DATA", str(data))
    mp.setenv("STABKIT_CACHE", str(base / "cache"))
    mp.setenv("OMP_NUM_THREADS", "1")
    yield {"root": base / "runs", "data": data, "cache": base / "cache", "base": base}
    mp.undo()


def test_help_texts(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("train", "remeasure", "sweep", "collect", "export", "status"))
    for cmd in ("train", "remeasure", "sweep", "collect", "export", "status"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0 and "usage" in capsys.readouterr().out


@pytest.mark.parametrize("name", FIGURE_SWEEPS)
def test_every_figure_sweep_at_tiny_scale(env, name, capsys):
    spec = REPO / "sweeps" / f"{name}.yaml"
    assert spec.is_file()
    rc = main(["sweep", str(spec), "--scale", "tiny", "--root", str(env["root"]), "--device", "cpu", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    c = runs.status(env["root"], spec, "tiny")
    assert c["total"] >= 1 and c["done"] == c["total"], c
    table = "spectra" if name.startswith("fig2") else "output"
    df = runs.collect(env["root"], table, spec, "tiny")
    assert df.run.nunique() == c["total"]
    if name.startswith("fig1"):
        assert df.loc[df.noise_std > 0, "test_err_corrupted"].notna().all()
    if name.startswith(("fig3", "fig6")):
        assert set(df.shuffle) == {0, 1}


def test_status_collect_and_export_commands(env, capsys, tmp_path):
    spec = str(REPO / "sweeps" / "fig5_scale_detection.yaml")
    assert main(["sweep", spec, "--scale", "tiny", "--root", str(env["root"]), "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", spec, "--scale", "tiny", "--root", str(env["root"])]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("fig5_scale_detection")][0]
    assert line.split()[2:6] == ["2", "2", "0", "0"]  # total done pending failed
    assert main(["collect", spec, "--scale", "tiny", "--root", str(env["root"]), "--table", "layers",
                 "--csv", str(tmp_path / "layers.csv")]) == 0
    assert pd.read_csv(tmp_path / "layers.csv").layer.nunique() > 3
    with pytest.raises(SystemExit):  # collect --out became the export command
        main(["collect", spec, "--scale", "tiny", "--root", str(env["root"]), "--out", str(tmp_path / "exp")])
    capsys.readouterr()
    assert main(["export", spec, "--scale", "tiny", "--root", str(env["root"]), "--out", str(tmp_path / "exp")]) == 0
    prov = json.loads((tmp_path / "exp" / "provenance.json").read_text())
    assert prov["sweep"] == "fig5_scale_detection" and prov["scale"] == "tiny" and len(prov["runs"]) == 2
    assert set(prov["git"]) == {"commit", "dirty"}
    assert (tmp_path / "exp" / "output.parquet").is_file()
    assert main(["sweep", spec, "--scale", "tiny", "--root", str(env["root"]), "--dry-run"]) == 0
    assert capsys.readouterr().out.count(" done ") == 2
    assert main(["sweep", "no_such_sweep", "--scale", "tiny"]) == 2
    assert "unknown sweep" in capsys.readouterr().err


def test_train_and_measure_commands(env, capsys):
    args = ["train", "--task", "twopoints", "--net", "LeNet", "--epochs", "1", "--ptr", "64", "--set", "test_size=64",
            "--set", "width_factor=0.25", "--set", "batch_size=32", "--root", str(env["root"]), "--device", "cpu",
            "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    run_dir = Path(out.splitlines()[0])
    assert (run_dir / "best.pt").is_file() and "best test error" in out
    assert not (run_dir / "output.parquet").exists()  # train alone measures nothing
    assert main(["remeasure", str(run_dir), "--what", "output", "--states", "trained", "--P", "6", "--shuffles",
                 "0", "1", "--device", "cpu", "--out", str(env["base"] / "m")]) == 0
    m = pd.read_parquet(env["base"] / "m" / "output.parquet")
    assert list(m.shuffle) == [0, 1] and set(m.P) == {6}
    with pytest.raises(SystemExit):  # the run-folder command is remeasure now
        main(["measure", str(run_dir)])


def test_python_m_stabkit_without_book_extras(env):
    """The real entry point in a fresh interpreter; nothing of Jupyter, papermill or submitit is imported."""
    code = (
        "import sys; from stabkit.__main__ import main; "
        f"rc = main(['sweep', {str(REPO / 'sweeps' / 'fig5_scale_detection.yaml')!r}, '--scale', 'tiny', "
        f"'--root', {str(env['root'])!r}, '--device', 'cpu', '--quiet']); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('papermill', 'jupyter', 'jupyter_client', 'nbformat', 'ipykernel', 'IPython', 'submitit', 'myst_nb')); "
        "assert not bad, bad; sys.exit(rc)")
    e = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([sys.executable, "-m", "stabkit", "status", "fig5_scale_detection", "--scale", "tiny",
                          "--root", str(env["root"])], env=e, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "fig5_scale_detection" in res.stdout, res.stdout + res.stderr
