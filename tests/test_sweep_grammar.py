"""stabkit.sweeps.sweepfile: the sweep YAML grammar (base, grid blocks, scales, include/where), the figure
sweeps sharing runs, the cpu scale of Fig. 5, and loading a sweep without importing torch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stabkit import sweeps

REPO = Path(__file__).resolve().parents[1]


def test_load_sweep_grid_scales_blocks_and_include(tmp_path):
    (tmp_path / "a.yaml").write_text("""
base: {task: twopoints, net: LeNet, P: 10}
grid: {seed: [0, 1], ptr: [64, 128]}
scales:
  paper: {}
  tiny: {base: {ptr: 32}, grid: {width_factor: [0.5, 0.25]}}
  blocks: {grid: [{net: [LeNet], seed: [0]}, {net: [VGG11], seed: [0, 1]}]}
  mixed: {base: {epochs: 3, seed: 0}, grid: [{net: [LeNet]}, {net: [VGG11], epochs: [5]}]}
""")
    (tmp_path / "b.yaml").write_text("""
include: [{sweep: a, where: {seed: [1]}}]
scales: {paper: {}, tiny: {}}
""")
    paper = sweeps.load_sweep(tmp_path / "a.yaml", "paper")
    assert len(paper) == 4 and paper.name == "a"
    t = sweeps.load_sweep(tmp_path / "a.yaml", "tiny")  # ptr fixed by the scale, width gridded
    assert sorted((c.seed, c.ptr, c.width_factor) for c in t.configs) == [
        (0, 32, 0.25), (0, 32, 0.5), (1, 32, 0.25), (1, 32, 0.5)]
    blocks = sweeps.load_sweep(tmp_path / "a.yaml", "blocks")
    assert [(c.net, c.seed) for c in blocks.configs] == [("LeNet", 0), ("VGG11", 0), ("VGG11", 1)]
    # a key set by the scale's own blocks wins over the scale's base (the blocks replace the sweep's grid)
    mixed = sweeps.load_sweep(tmp_path / "a.yaml", "mixed")
    assert [(c.net, c.epochs, c.seed, c.ptr) for c in mixed.configs] == [("LeNet", 3, 0, 1024), ("VGG11", 5, 0, 1024)]
    b = sweeps.load_sweep(tmp_path / "b.yaml", "paper")
    assert sorted(c.key for c in b.configs) == sorted(c.key for c in paper.configs if c.seed == 1)
    assert sweeps.sweep_scales(tmp_path / "a.yaml") == ["paper", "tiny", "blocks", "mixed"]


def test_include_unless_and_set_derive_runs_that_share_the_network(tmp_path):
    """An include's ``unless`` excludes, its ``set`` derives runs with those fields replaced: a derived run
    that changes only what it measures has a new key and the included run's training key."""
    (tmp_path / "a.yaml").write_text("base: {task: twopoints, net: LeNet, P: 10, measure: [output, layers]}\n"
                                     "grid: {seed: [0, 1], ptr: [64, 128]}\nscales: {tiny: {}}\n")
    (tmp_path / "b.yaml").write_text("include:\n  - {sweep: a, unless: {ptr: [128]}}\n"
                                     "  - {sweep: a, where: {seed: [1]}, unless: {ptr: [128]}, "
                                     "set: {measure: [recalibrated]}}\nscales: {tiny: {}}\n")
    a = sweeps.load_sweep(tmp_path / "a.yaml", "tiny")
    b = sweeps.load_sweep(tmp_path / "b.yaml", "tiny")
    assert [(c.seed, c.ptr, c.measure) for c in b.configs] == [
        (0, 64, ("output", "layers")), (1, 64, ("output", "layers")), (1, 64, ("recalibrated",))]
    base = next(c for c in a.configs if (c.seed, c.ptr) == (1, 64))
    derived = b.configs[-1]
    assert derived.key != base.key and derived.training_key == base.training_key
    assert b.configs[1].key == base.key  # the plain include keeps the included run's key
    (tmp_path / "c.yaml").write_text("include: [{sweep: a, set: {nope: 1}}]\nscales: {tiny: {}}\n")
    with pytest.raises(ValueError, match=r"include.set: unknown RunConfig field\(s\) \['nope'\]; accepted: .*measure"):
        sweeps.load_sweep(tmp_path / "c.yaml", "tiny")
    (tmp_path / "d.yaml").write_text("include: [{sweep: a, set: {epochs: x}}]\nscales: {tiny: {}}\n")
    with pytest.raises(ValueError, match="include.set: bad configuration: epochs must be an integer"):
        sweeps.load_sweep(tmp_path / "d.yaml", "tiny")


def test_a_sweep_file_is_parsed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    """Fig. 3's page tried several scales, each re-reading Fig. 1's included file; now each file is parsed
    once, and again only when it is edited (its modification time or size changes)."""
    from stabkit.sweeps import sweepfile

    (tmp_path / "a.yaml").write_text("base: {task: twopoints, net: LeNet}\ngrid: {seed: [0]}\n"
                                     "scales: {tiny: {}, small: {}}\n")
    (tmp_path / "b.yaml").write_text("include: [a]\nscales: {tiny: {}, small: {}}\n")
    parsed = []
    real = sweepfile.load_yaml
    monkeypatch.setattr(sweepfile, "load_yaml", lambda path, what="file": parsed.append(Path(path).name) or real(path, what))
    for scale in ("tiny", "small", "tiny"):
        sweeps.load_sweep(tmp_path / "b.yaml", scale)
    assert sorted(parsed) == ["a.yaml", "b.yaml"]
    doc, _ = sweepfile._read(tmp_path / "a.yaml")
    doc["grid"]["seed"].append(99)  # a caller's edit does not leak into the cache
    assert sweeps.load_sweep(tmp_path / "a.yaml", "tiny").configs[0].seed == 0 and len(sweeps.load_sweep(
        tmp_path / "a.yaml", "tiny")) == 1
    (tmp_path / "a.yaml").write_text("base: {task: twopoints, net: LeNet}\ngrid: {seed: [0, 1]}\n"
                                     "scales: {tiny: {}, small: {}}\n")
    assert len(sweeps.load_sweep(tmp_path / "b.yaml", "tiny")) == 2 and parsed.count("a.yaml") == 2


@pytest.mark.parametrize("doc, match", [
    ({"grid": {"seed": 0}, "scales": {"tiny": {}}}, "must be a list"),
    ({"scales": {"paper": {}}}, "no scale 'tiny'"),
    ({"gird": {}, "scales": {"tiny": {}}}, "unknown top-level key"),
    ({"scales": {"tiny": {"bas": {}}}}, "unknown key"),
    ({"base": {"epochs": "ten"}, "scales": {"tiny": {}}}, "epochs"),
    ({"include": [{"sweep": "x", "bad": 1}], "scales": {"tiny": {}}}, "include entries")])
def test_bad_sweeps_are_refused(doc, match):
    with pytest.raises(ValueError, match=match):
        sweeps.load_sweep(doc, "tiny")


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown sweep"):
        sweeps.load_sweep("no_such_sweep", "tiny")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="list.yaml.*mapping"):
        sweeps.load_sweep(tmp_path / "list.yaml", "tiny")
    (tmp_path / "broken.yaml").write_text("base: {a: [\n")
    with pytest.raises(ValueError, match="broken.yaml.*invalid YAML"):
        sweeps.load_sweep(tmp_path / "broken.yaml", "tiny")


def test_unknown_networks_fail_validation_not_loading():
    doc = {"base": {"task": "twopoints"}, "grid": {"net": ["LeNet", "NoSuchNet"]}, "scales": {"tiny": {}}}
    sw = sweeps.load_sweep(doc, "tiny")  # torch-free: the registry is not consulted here
    with pytest.raises(ValueError, match="scale 'tiny'.*run .*NoSuchNet"):
        sw.validate()
    with pytest.raises(ValueError, match="NoSuchNet"):
        sweeps.sweep(sw, "tiny", "/nonexistent/never/created", device="cpu", progress=False)


def test_paper_figure_sweeps_share_runs():
    fig1 = {c.key for c in sweeps.load_sweep("fig1_noise_corrupted_cifar", "paper").configs}
    fig3 = sweeps.load_sweep("fig3_layers_cifar", "paper")
    assert {c.net for c in fig3.configs} == {"VGG11", "VGG11bn", "AlexNet", "LeNet"}
    assert all(c.shuffles == (0, 1) for c in fig3.configs)
    control = [c for c in fig3.configs if c.measure == ("recalibrated",)]  # the batch-norm nets measured again
    assert {c.net for c in control} == {"VGG11bn"} and {c.training_key for c in control} <= {
        c.training_key for c in fig3.configs if c.key in fig1}
    assert set(fig3.keys) - {c.key for c in control} <= fig1
    fig5 = sweeps.load_sweep("fig5_scale_detection", "paper")
    # 10 CNNs with seeds 0-3 and 3 FCNs with seeds 0-10, at 7 noise levels (the paper's lists)
    assert len(fig5) == 11 * 2 * 10 and len(fig1) == (10 * 4 + 3 * 11) * 7
    fig6 = sweeps.load_sweep("fig6_layers_scale_detection", "paper")
    control6 = {c.key for c in fig6.configs if c.measure == ("recalibrated",)}
    assert set(fig6.keys) - control6 <= set(fig5.keys) and {c.net for c in fig6.configs} == {"VGG11", "VGG11bn", "VGG13bn"}
    assert len(fig6) == 3 * 10 + 2 * 10 and {c.ptr for c in fig6.configs} == {1024}  # the paper's Fig. 6: ptr 1024
    assert set(sweeps.load_sweep("fig2_laplacian_spectra", "paper").keys) == set(fig5.keys) | (
        set(fig3.keys) - {c.key for c in control})


def test_cpu_scale_of_fig5_is_the_background_sweep():
    cpu = sweeps.load_sweep("fig5_scale_detection", "cpu")
    cheap = {"LeNet", "AlexNet", "VGG11bn", "VGG13bn"}  # the nets that train in minutes here
    assert len(cpu) == 18 + 4 + 8 and "8e5883877c25" in cpu.keys
    assert all(c.seed in (3, 4) for c in cpu.configs[22:])  # seeds 3-4 last: the earlier runs go first
    assert {c.net for c in cpu.configs} == {"LeNet", "AlexNet", "VGG11bn", "VGG13bn", "VGG11", "ResNet18"}
    assert {(c.seed, c.ptr, c.width_factor, c.measure_dtype, c.P, c.stop_at_zero_loss) for c in cpu.configs} == {
        (s, 1024, 1.0, "float64", 500, True) for s in (0, 1, 2, 3, 4)} | {(0, 2048, 1.0, "float64", 500, True)}
    assert {c.net for c in cpu.configs if c.ptr == 2048} == cheap
    assert {c.net for c in cpu.configs if c.seed > 2} == cheap
    fig6 = sweeps.load_sweep("fig6_layers_scale_detection", "cpu")
    plain = [c for c in fig6.configs if c.measure != ("recalibrated",)]
    # VGG11, VGG11bn, VGG13bn seeds 0-2 and VGG11bn, VGG13bn seeds 3-4; a control per batch-norm net
    assert len(plain) == 9 + 4 and {c.key for c in plain} <= set(cpu.keys) and len(fig6) == 13 + 10
    assert sweeps.SCALES == ("tiny", "small", "cpu", "gpu", "paper")


def test_loading_a_sweep_does_not_import_torch():
    code = ("import sys; from stabkit.sweeps import load_sweep; "
            "sw = load_sweep('fig5_scale_detection', 'paper'); k = sw.keys; "
            "load_sweep('fig6_layers_scale_detection', 'cpu'); load_sweep('fig2_laplacian_spectra', 'tiny'); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch'); "
            "assert not bad and len(k) == 220, bad[:5]")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


# ---------------------------------------------------------------------- clear errors (issue 15.8, 15.11)
@pytest.mark.parametrize("text, match", [
    ("base: [1, 2]\nscales: {tiny: {}}\n", "bad.yaml: base must be a mapping"),
    ("scales: [tiny]\n", "bad.yaml: scales must be a mapping"),
    ("scales: {tiny: [1]}\n", "bad.yaml: scales.tiny must be a mapping"),
    ("scales: {tiny: {base: 3}}\n", "scales.tiny.base must be a mapping"),
    ("base: {task: twopoints, net: LeNet, epochs: ten}\nscales: {tiny: {}}\n", "bad.yaml, scale 'tiny'.*epochs"),
    ("include: bad\nscales: {tiny: {}}\n", "include must be a list"),
    ("include: [{sweep: bad, where: [1]}]\nscales: {tiny: {}}\n", "include.where must be a mapping"),
    ("include: [bad]\nscales: {tiny: {}}\n", "include makes a cycle: bad -> bad"),
    ("name: ../../x\nscales: {tiny: {}}\n", "name must be a plain name.*'../../x'"),
    ("name: a/b\nscales: {tiny: {}}\n", "name must be a plain name"),
    ("name: ..\nscales: {tiny: {}}\n", "name must be a plain name"),
    ("base: {a: [\n", "bad.yaml: invalid YAML: .*line"),
    ("- a\n- b\n", "bad.yaml.*mapping")])
def test_bad_sweep_files_get_a_message_naming_the_file_and_field(tmp_path, text, match):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        sweeps.load_sweep(tmp_path / "bad.yaml", "tiny")
    assert "\n" not in str(e.value)  # one line: the command line prints it as is


def test_include_cycles_through_two_files_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("include: [b]\nscales: {tiny: {}}\n")
    (tmp_path / "b.yaml").write_text("include: [a]\nscales: {tiny: {}}\n")
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        sweeps.load_sweep(tmp_path / "a.yaml", "tiny")
    (tmp_path / "ok.yaml").write_text("name: ok_name-1.2\ninclude: [c, c]\nscales: {tiny: {}}\n")
    (tmp_path / "c.yaml").write_text("base: {task: twopoints, net: LeNet, ptr: 64}\nscales: {tiny: {}}\n")
    assert len(sweeps.load_sweep(tmp_path / "ok.yaml", "tiny")) == 1  # the same sweep twice is no cycle


def test_validation_lists_every_bad_run():
    doc = {"base": {"task": "twopoints", "ptr": 64}, "grid": {"net": ["LeNet", "NoSuchNet"], "P": [100, 500]},
           "scales": {"tiny": {}}}
    with pytest.raises(ValueError, match="3 of 4 run\\(s\\) refused: run \\w+ \\(LeNet\\): P=500.*NoSuchNet"):
        sweeps.load_sweep(doc, "tiny").validate()


# ------------------------------------------------ issue 24: each figure's knowledge in its sweep file
_RUN = "base: {task: twopoints, net: LeNet, ptr: 64}\nscales: {tiny: {}}\n"


@pytest.mark.parametrize("text, match", [
    ("paper: [1]\n", "bad.yaml: paper must be a mapping"),
    ("paper: {nett: [LeNet]}\n", "paper has unknown RunConfig field 'nett'; accepted: .*'net'"),
    ("paper: {net: []}\n", "paper.net is an empty list"),
    ("campaign: [1]\n", "campaign must be a mapping"),
    ("campaign: {stage: []}\n", r"campaign: unknown key\(s\) \['stage'\]; accepted: \['stages', 'smoke', 'zero_loss"),
    ("campaign: {stages: {label: a}}\n", "campaign.stages must be a list"),
    ("campaign: {stages: [{priority: 1}]}\n", r"campaign.stages\[0\].label must be a non-empty string"),
    ("campaign: {stages: [{label: a}]}\n", r"campaign.stages\[0\].priority is missing"),
    ("campaign: {stages: [{label: a, priority: first}]}\n", r"campaign.stages\[0\].priority must be a number"),
    ("campaign: {stages: [{label: a, priority: 1, when: {}}]}\n",
     r"campaign.stages\[0\]: unknown key\(s\) \['when'\]; accepted: \['label', 'priority', 'where', 'unless'"),
    ("campaign: {stages: [{label: a, priority: 1, where: {noise: [0]}}]}\n",
     r"campaign.stages\[0\].where has unknown RunConfig field 'noise'"),
    ("campaign: {stages: [{label: a, priority: 1, unless_nets_of_scale: [cpu]}]}\n", "must be a scale name"),
    ("campaign: {smoke: yes}\n", "campaign.smoke must be a number"),
    ("campaign: {zero_loss_epochs: {LeNet: 0}}\n", "campaign.zero_loss_epochs.LeNet must be an integer >= 1"),
    ("figure: {}\n", r"unknown top-level key\(s\) \['figure'\]; accepted: .*paper, campaign")])
def test_bad_figure_blocks_are_refused_naming_the_key(tmp_path, text, match):
    (tmp_path / "bad.yaml").write_text(_RUN + text)
    with pytest.raises(ValueError, match=match) as e:
        sweeps.load_sweep(tmp_path / "bad.yaml", "tiny")
    assert "\n" not in str(e.value)


def test_figure_blocks_are_no_run_configuration(tmp_path):
    """``paper:`` and ``campaign:`` change no run key; they are read without expanding a scale."""
    (tmp_path / "plain.yaml").write_text(_RUN)
    (tmp_path / "fig.yaml").write_text(_RUN + "paper: {net: [LeNet, VGG11], ptr: 1024}\n"
                                       "campaign: {stages: [{label: x, priority: 2, where: {seed: [0]}, "
                                       "unless: {ptr: [2048]}}], smoke: 1, zero_loss_epochs: {LeNet: 300}}\n")
    plain, fig = sweeps.load_sweep(tmp_path / "plain.yaml", "tiny"), sweeps.load_sweep(tmp_path / "fig.yaml", "tiny")
    assert plain.keys == fig.keys and plain.paper is None and plain.campaign is None
    assert fig.paper == {"net": ["LeNet", "VGG11"], "ptr": [1024]}
    stage = fig.campaign.stages[0]
    assert (stage.label, stage.priority, fig.campaign.smoke, dict(fig.campaign.zero_loss_epochs)) == ("x", 2, 1,
                                                                                                   {"LeNet": 300})
    assert stage.selects(fig.configs[0]) and not stage.selects(fig.configs[0].replace(ptr=2048))
    other = sweeps.sweepfile.Stage("y", 3, unless_nets_of_scale="cpu")
    assert other.selects(fig.configs[0]) and not other.selects(fig.configs[0], nets_of_scale=frozenset({"LeNet"}))
    facts = sweeps.sweepfile.sweep_facts(tmp_path / "fig.yaml")
    assert facts.paper == fig.paper and facts.campaign == fig.campaign


def test_the_figure_blocks_of_the_sweep_files_change_no_run_key():
    """Every committed run stays found: the sweep files' ``paper:`` and ``campaign:`` blocks are no run
    configuration, so each scale's keys are those of the file without them."""
    for path in sorted(sweeps.sweepfile.sweep_path("fig5_scale_detection").parent.glob("*.yaml")):
        doc = sweeps.sweepfile.load_yaml(path)
        bare = {k: v for k, v in doc.items() if k not in ("paper", "campaign")}
        bare.setdefault("name", path.stem)
        for scale in sweeps.sweep_scales(path):
            if doc.get("include"):  # its includes resolve beside the file: compare the whole file's keys
                continue
            assert sweeps.load_sweep(path, scale).keys == sweeps.load_sweep(bare, scale).keys, (path.stem, scale)
