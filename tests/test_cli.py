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

from stabkit import runs, sweeps
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
    c = sweeps.status(env["root"], spec, "tiny")
    assert c["total"] >= 1 and c["done"] == c["total"], c
    table = "spectra" if name.startswith("fig2") else "output"
    df = sweeps.collect(env["root"], table, spec, "tiny")
    controls = sum(cfg.measure == ("recalibrated",) for cfg in sweeps.load_sweep(spec, "tiny").configs)
    assert df.run.nunique() == c["total"] - controls  # the batch-norm controls write `recalibrated`, no `output`
    if controls:
        assert sweeps.collect(env["root"], "recalibrated", spec, "tiny").run.nunique() == controls
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
    assert line.split()[2:8] == ["2", "0", "2", "0", "0", "0"]  # total committed finished running failed pending
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
    # committed configurations are skipped (issue 16): export to a results root, then sweep from an empty runs root
    res, empty = tmp_path / "res", tmp_path / "empty-runs"
    assert main(["export", spec, "--scale", "tiny", "--root", str(env["root"]), "--results-root", str(res)]) == 0
    capsys.readouterr()
    assert main(["sweep", spec, "--scale", "tiny", "--root", str(empty), "--results-root", str(res), "--dry-run"]) == 0
    assert capsys.readouterr().out.count(" committed ") == 2
    assert main(["sweep", spec, "--scale", "tiny", "--root", str(empty), "--results-root", str(res), "--quiet"]) == 0
    assert "done 0, committed 2," in capsys.readouterr().out and not any(empty.glob("*/done"))
    assert main(["sweep", spec, "--scale", "tiny", "--root", str(empty), "--results-root", str(res), "--dry-run",
                 "--recompute"]) == 0
    assert capsys.readouterr().out.count(" pending ") == 2


def test_train_and_measure_commands(env, capsys):
    args = ["train", "--task", "twopoints", "--net", "LeNet", "--epochs", "1", "--ptr", "64", "--set", "test_size=64",
            "--set", "width_factor=0.25", "--set", "batch_size=32", "--root", str(env["root"]), "--device", "cpu",
            "--quiet"]
    import torch
    before = torch.get_num_threads()
    try:  # a single-run command takes the thread count a sweep's runs would (--threads, $STABKIT_THREADS)
        torch.set_num_threads(2)
        assert main(args + ["--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    run_dir = Path(out.splitlines()[0])
    assert (run_dir / "best.pt").is_file() and "best test error" in out
    with pytest.raises(SystemExit):
        main(args + ["--threads", "0"])
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


# ------------------------------------------------------------------ issue 15.8/15.10: one-line errors, exit 2
TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25, batch_size=32)


def test_expected_errors_are_one_line_and_exit_status_2(tmp_path, capsys, monkeypatch):
    import yaml
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))  # no sbatch here
    (tmp_path / "broken.yaml").write_text("base: {a: [\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "self.yaml").write_text("include: [self]\nscales: {tiny: {}}\n")
    (tmp_path / "escape.yaml").write_text("name: ../../x\nscales: {tiny: {}}\n")
    (tmp_path / "bigp.yaml").write_text(yaml.safe_dump({"base": {**TINY, "P": 500}, "scales": {"tiny": {}}}))
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({"base": {**TINY, "measure": ["output"]}, "scales": {"tiny": {}}}))
    (tmp_path / "norun").mkdir()
    root = tmp_path / "runs"
    runs.run(runs.RunConfig(**TINY, measure=["output"]), root, device="cpu", progress=False)
    r = ["--root", str(root)]
    train = ["train", "--task", "twopoints", "--net", "LeNet", *r]
    cases = [
        (["remeasure", str(tmp_path / "missing")], "run folder .*missing does not exist"),
        (["remeasure", str(tmp_path / "norun")], "not a finished run folder: no config.json"),
        ([*train, "--config", str(tmp_path / "nosuch.yaml")], "--config .*nosuch.yaml: no such file"),
        ([*train, "--config", str(tmp_path / "broken.yaml")], "--config .*broken.yaml: invalid YAML"),
        ([*train, "--config", str(tmp_path / "list.yaml")], "must be a mapping"),
        ([*train, "--set", "epochs"], "--set expects KEY=VALUE, got 'epochs'"),
        ([*train, "--set", "=3"], "--set expects KEY=VALUE"),
        ([*train, "--set", "epochs=[1"], "--set 'epochs=\\[1': the value is not valid YAML"),
        ([*train, "--set", "nosuch=1"], "unknown RunConfig field"),
        ([*train, "--set", "epochs=ten"], "epochs must be an integer"),
        ([*train, "--device", "cuda:x"], "device must be one of"),
        (["sweep", str(tmp_path / "broken.yaml"), *r], "broken.yaml: invalid YAML"),
        (["sweep", str(tmp_path / "list.yaml"), *r], "list.yaml: the top level must be a mapping"),
        (["sweep", str(tmp_path / "self.yaml"), "--scale", "tiny", *r], "include makes a cycle"),
        (["sweep", str(tmp_path / "escape.yaml"), "--scale", "tiny", *r], "name must be a plain name"),
        (["sweep", str(tmp_path / "bigp.yaml"), "--scale", "tiny", "--dry-run", *r], "P=500 is larger than"),
        (["sweep", str(tmp_path / "ok.yaml"), "--scale", "tiny", "--executor", "slurm", *r], "needs (SLURM|the submitit package)"),
        (["sweep", str(tmp_path / "ok.yaml"), "--scale", "tiny", "--redo", "nokey", *r], "no runs of sweep"),
        (["sweep", "no_such_sweep", "--scale", "tiny", *r], "unknown sweep"),
        (["collect", "--table", "nosuch", *r], "table 'nosuch'.*accepted tables"),
        (["status", str(tmp_path / "broken.yaml"), *r], "invalid YAML"),
    ]
    for argv, match in cases:
        rc = main(argv)
        cap = capsys.readouterr()
        lines = cap.err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, rc, cap.err)
        assert __import__("re").search(match, lines[0]), (argv, lines[0])
    for argv in (["sweep", "x", "--slots-per-gpu", "0"], ["sweep", "x", "--jobs", "0"], ["sweep", "x", "--threads", "-1"]):
        with pytest.raises(SystemExit) as e:  # argparse: usage + one error line, status 2
            main(argv)
        assert e.value.code == 2 and ">= 1" in capsys.readouterr().err


def test_a_sweep_that_leaves_runs_unfinished_exits_non_zero_with_the_list(tmp_path, capsys):
    import yaml
    (tmp_path / "held.yaml").write_text(yaml.safe_dump({"base": {**TINY, "measure": ["output"]},
                                                        "grid": {"seed": [0, 1]}, "scales": {"tiny": {}}}))
    root = tmp_path / "runs"
    held = sweeps.load_sweep(tmp_path / "held.yaml", "tiny").keys[1]
    (root / held).mkdir(parents=True)
    other = runs.RunLock(root / held)
    assert other.acquire()
    try:
        rc = main(["sweep", str(tmp_path / "held.yaml"), "--scale", "tiny", "--root", str(root), "--device", "cpu",
                   "--quiet", "--wait-timeout", "1"])
    finally:
        other.release()
    cap = capsys.readouterr()
    assert rc == 1 and "done 1, committed 0, failed 0, running 1, pending 0" in cap.out
    assert "1 of 2 run(s) did not finish" in cap.err and held in cap.err and "after waiting 1 s" in cap.err


def test_dry_run_names_the_run_whose_network_a_run_reuses(env, capsys, tmp_path):
    base = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25, batch_size=32)
    spec = tmp_path / "share.yaml"
    spec.write_text(json.dumps({"base": base, "grid": {"measure": [["output"], ["layers"]]},
                                "scales": {"tiny": {}}}))
    root = tmp_path / "runs"
    first = runs.RunConfig(**base, measure=["output"])
    runs.run(first, root, device="cpu", progress=False)
    assert main(["sweep", str(spec), "--scale", "tiny", "--root", str(root), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    other = runs.RunConfig(**base, measure=["layers"])
    assert any(ln.startswith(f"{first.key} done ") for ln in lines)
    assert any(ln.startswith(f"{other.key} pending (network trained by {first.key}) ") for ln in lines), lines


def test_sweep_only_runs_the_named_runs(tmp_path, capsys):
    """``sweep --only KEY...``: the named runs (full keys or unique prefixes) and no other, in grid order, e.g.
    the batch-norm control of one network of Fig. 3 without starting the grid's next training; a key that
    names no run, or several, is refused naming the parameter."""
    base = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25, batch_size=32,
                measure=["output"])
    spec = tmp_path / "only.yaml"
    spec.write_text(json.dumps({"base": base, "grid": {"seed": [0, 1, 2]}, "scales": {"tiny": {}}}))
    keys = sweeps.load_sweep(spec, "tiny").keys
    root = ["--root", str(tmp_path / "runs"), "--device", "cpu", "--quiet"]
    assert main(["sweep", str(spec), "--scale", "tiny", "--only", keys[2], keys[0][:6], *root]) == 0
    assert [runs.run_state(tmp_path / "runs" / k) for k in keys] == ["done", "pending", "done"]
    capsys.readouterr()
    assert main(["sweep", str(spec), "--scale", "tiny", "--only", "zzzz", *root]) == 2
    assert "--only: 'zzzz' matches no run of only/tiny" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--scale", "tiny", "--only", "", *root]) == 2
    assert "matches 3 runs" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--scale", "tiny", "--only", *root]) == 2
    assert "--only: give one or more run keys" in capsys.readouterr().err
    assert runs.run_state(tmp_path / "runs" / keys[1]) == "pending"


def test_set_refuses_an_empty_value_a_second_spelling_and_duplicate_config_keys(tmp_path, capsys):
    """Issue 28.8: ``--set epochs=`` fell back to the default, ``--set task=...`` overrode ``--task``,
    duplicate keys of a ``--config`` file kept the last value."""
    root = ["--root", str(tmp_path / "r"), "--device", "cpu", "--quiet"]
    assert main(["train", "--task", "twopoints", "--net", "LeNet", "--set", "epochs=", *root]) == 2
    assert "--set 'epochs=': no value after '='" in capsys.readouterr().err
    assert main(["train", "--task", "twopoints", "--net", "LeNet", "--set", "task=cifar10", *root]) == 2
    assert "--set task=... and --task both give task" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: twopoints\nnet: LeNet\nepochs: 1\nepochs: 300\n")
    assert main(["train", "--config", str(cfg), *root]) == 2
    assert "key 'epochs' is given twice (lines 3 and 4)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing trained


def test_status_exits_non_zero_on_an_error_row_and_deep_nesting_is_one_line(tmp_path, capsys):
    """Issue 28.9: ``status`` printed error rows but exited 0; deeply nested values gave a traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {task: twopoints, net: LeNet, nosuchfield: 1}\nscales: {tiny: {}}\n")
    assert main(["status", str(bad), "--root", str(tmp_path / "r")]) == 1
    assert "error: " in capsys.readouterr().out
    deep = "[" * 5000 + "]" * 5000
    assert main(["train", "--task", "twopoints", "--set", f"options={deep}", "--root", str(tmp_path / "r")]) == 2
    assert "nested too deeply" in capsys.readouterr().err
    (tmp_path / "deep.yaml").write_text(f"task: {deep}\n")
    assert main(["train", "--config", str(tmp_path / "deep.yaml"), "--root", str(tmp_path / "r")]) == 2
    assert "nested too deeply" in capsys.readouterr().err
