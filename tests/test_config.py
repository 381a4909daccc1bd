"""stabkit.runs.config: RunConfig defaults, keys (pinned: run folders exist under these names), round
trips, validation, replace re-deriving the defaults of a new task."""
import json
from pathlib import Path

import pytest

from stabkit import runs, sweeps
from stabkit.runs import RunConfig

REPO = Path(__file__).resolve().parents[1]
TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25,
            batch_size=32)
# config.json of a run of the background cpu-scale sweep (fig5, LeNet, ptr 1024, seed 0), as written
# by the code before the runs package: its key must never change.
FIG5_CPU_LENET = {
    "P": 500, "augment": [], "batch_size": 128, "cut": 3, "data_seed": 0, "delta": 1.0, "epochs": 300,
    "fast": False, "format": 1, "key": "8e5883877c25", "layers": "all", "loss": "hinge", "lr": 0.05,
    "measure": ["output", "layers", "spectra"], "measure_dtype": "float64", "momentum": 0.9, "net": "LeNet",
    "net_options": {}, "noise_std": 0.0, "optimizer": "sgd", "options": {}, "probe_seed": 0, "ptr": 1024,
    "schedule": "cosine", "seed": 0, "shuffles": [0, 1], "states": ["init", "trained"],
    "stop_at_zero_loss": True, "task": "twopoints", "task_options": {"d": 28, "gap": 2.0, "norm": "L2", "xi": 14.0},
    "test_size": None, "weight_decay": 0.0005, "width_factor": 1.0}


def test_keys_of_existing_runs_never_change():
    assert RunConfig.from_dict(FIG5_CPU_LENET).key == "8e5883877c25"
    real = Path("/work/runs-cpu/8e5883877c25/config.json")  # the live folder, when this machine has it
    if real.is_file():
        assert RunConfig.from_dict(json.loads(real.read_text())).key == "8e5883877c25"
    assert RunConfig(**TINY).key == "4aa66cfa797a"
    assert RunConfig(task="cifar10", net="VGG11").key == "3290788df66f"
    assert RunConfig(task="cifar10", net="DenseNetL2", noise_std=1).key == "906acfccc28c"
    assert sweeps.load_sweep("fig5_scale_detection", "tiny").keys == ["39c79ffa71f6", "840d6775ae87"]
    assert sweeps.load_sweep("fig1_noise_corrupted_cifar", "tiny").keys == ["f59b6c277bfc", "7829321d9885"]


def test_every_committed_configuration_keeps_its_key():
    """Each run of results/*/*/runs.parquet: its committed configuration gives its committed key."""
    import pandas as pd
    n = 0
    for index in sorted((Path(__file__).resolve().parents[1] / "results").glob("*/*/runs.parquet")):
        for key, config in zip(*pd.read_parquet(index)[["key", "config"]].T.values):
            assert RunConfig.from_dict(json.loads(config)).key == key, (index, key)
            n += 1
    assert n > 100


def test_a_renamed_option_keeps_the_key_it_had():
    """``interp`` became ``interpolation`` (issue 24): the key hashes the old name (KEY_SPELLINGS), a
    config.json written before reads as the new one, giving both is refused."""
    from stabkit.runs.config import KEY_SPELLINGS, key_spelling
    assert KEY_SPELLINGS == {"net_options": {"interpolation": "interp"}}
    base = dict(task="cifar10", net="LowRes-ResNet18", epochs=15, width_factor=0.125,
                measure=["resolution", "accuracy"], states=["trained"], options={"resolution": {"targets": [8, 16, 24, 32]},
                                              "accuracy": {"families": {"pixelate": {"magnitudes": [1, 2, 4, 8]}}}})
    new = RunConfig(**base, net_options={"source_size": 16, "interpolation": "nearest"})
    old = RunConfig.from_dict({**new.to_dict(), "net_options": {"source_size": 16, "interp": "nearest"}})
    assert new.key == old.key == "4f141c8d8f95"  # committed in results/probe_resolution/cpu
    assert old.net_options == {"source_size": 16, "interpolation": "nearest"} and old == new
    assert new.to_dict()["net_options"] == {"source_size": 16, "interpolation": "nearest"}
    assert key_spelling(new.to_dict())["net_options"] == {"source_size": 16, "interp": "nearest"}
    assert runs.training_key(new.to_dict()) == runs.training_key(old.to_dict()) == new.training_key
    with pytest.raises(ValueError, match="net_options gives both 'interp' and 'interpolation'"):
        RunConfig(**base, net_options={"interp": "nearest", "interpolation": "nearest"})


def test_precision_is_in_the_key_only_when_not_float32():
    base = RunConfig(task="cifar10", net="VGG11")
    assert RunConfig(task="cifar10", net="VGG11", precision="float32").key == base.key == "3290788df66f"
    assert "precision" not in base.to_dict()
    bf16 = RunConfig(task="cifar10", net="VGG11", precision="bf16")
    assert bf16.key != base.key and bf16.to_dict()["precision"] == "bf16"
    assert RunConfig.from_dict(bf16.to_dict()) == bf16
    with pytest.raises(ValueError, match="precision.*float32.*bf16"):
        RunConfig(net="VGG11", precision="fp16")


def test_defaults_hash_and_roundtrip():
    c = RunConfig(task="twopoints", net="VGG11")
    assert (c.lr, c.epochs, c.loss, c.augment, c.stop_at_zero_loss, c.ptr) == (0.05, 300, "hinge", (), True, 1024)
    assert c.data_seed == c.seed == 0
    assert RunConfig(task="twopoints", net="VGG11", lr=0.05, epochs=300, ptr=1024).key == c.key
    assert RunConfig(task="twopoints", net="VGG11", width_factor=1).key == c.key  # 1 == 1.0
    assert RunConfig(task="twopoints", net="VGG11", lr="5e-2").key == c.key  # YAML 1.1 reads 5e-2 as a string
    assert RunConfig(task="twopoints", net="VGG11", seed=1).key != c.key
    assert RunConfig(task="twopoints", net="VGG11", seed=1).data_seed == 1
    assert RunConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert len(c.key) == 12 and hash(c) == hash(RunConfig.from_dict(c.to_dict()))
    f = RunConfig(net="DenseNetL2")
    assert (f.optimizer, f.lr, f.weight_decay, f.augment) == ("adam", 0.1, 0.0, ("crop", "flip"))


@pytest.mark.parametrize("kw, match", [
    (dict(task="mnist"), "task"), (dict(shuffles=[3]), "shuffles"), (dict(states=["done"]), "states"),
    (dict(net="NoSuchNet"), "net must be one of"), (dict(net=3), "net"), (dict(epochs=1.5), "epochs"),
    (dict(epochs="ten"), "epochs"), (dict(lr="fast"), "lr"), (dict(width_factor=float("inf")), "width_factor"),
    (dict(loss="mse"), "loss"), (dict(P=0), "P"), (dict(task_options=[1]), "task_options")])
def test_bad_fields_are_refused_naming_the_field(kw, match):
    with pytest.raises(ValueError, match=match):  # when made, or (net: the registry) by validate
        runs.validate(RunConfig(**kw), build=False)


def test_unknown_fields_are_refused():
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        RunConfig.from_dict({"nett": "VGG11"})
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        RunConfig().replace(nett="VGG11")


def test_net_registry_check_is_an_explicit_validation():
    c = RunConfig(net="NoSuchNet")  # torch-free: a config is made without the registries
    with pytest.raises(ValueError, match="NoSuchNet"):
        runs.validate(c)
    assert "VGG11" in runs.known_nets() and "LeNet" in runs.known_nets()


def test_replace_rederives_the_defaults_of_a_new_task_or_net():
    a = RunConfig(task="twopoints", net="VGG11").replace(task="cifar10")
    b = RunConfig(task="cifar10", net="VGG11")
    assert a == b and a.key == b.key and (a.lr, a.loss, a.epochs, a.ptr) == (0.1, "ce", 250, None)
    assert RunConfig(task="cifar10", net="VGG11").replace(net="DenseNetL2") == RunConfig(net="DenseNetL2")
    assert RunConfig(seed=1).replace(seed=3).data_seed == 3  # data_seed follows seed unless set
    # explicit fields are kept, also through several replaces
    c = RunConfig(task="twopoints", net="VGG11", lr=0.3, ptr=512, data_seed=7).replace(task="scale1d").replace(seed=2)
    assert (c.lr, c.ptr, c.data_seed, c.momentum) == (0.3, 512, 7, 0.0) and c.explicit == {"lr", "ptr", "data_seed"}
    assert c.replace(lr=None).lr == 0.05  # None: derived again
    # a config read back from config.json has every field explicit
    d = RunConfig.from_dict(RunConfig(task="twopoints", net="VGG11").to_dict()).replace(task="cifar10")
    assert (d.lr, d.loss) == (0.05, "hinge")
    # the explicit set is no part of the key or of equality
    assert RunConfig(task="twopoints", net="VGG11", lr=0.05) == RunConfig(task="twopoints", net="VGG11")


def test_default_runs_root(monkeypatch, tmp_path):
    monkeypatch.setenv("STABKIT_RUNS", str(tmp_path))
    assert runs.default_runs_root() == tmp_path
    monkeypatch.delenv("STABKIT_RUNS")
    assert runs.default_runs_root() == REPO / "runs"


# ------------------------------------------------------------------ validated before training (issue 15.7)
@pytest.mark.parametrize("kw, match", [
    (dict(width_factor=0), "width_factor must be > 0"), (dict(width_factor=-1), "width_factor"),
    (dict(lr=0), "lr must be > 0"), (dict(lr=-0.1), "lr"), (dict(noise_std=-1), "noise_std must be >= 0"),
    (dict(momentum=-0.5), "momentum"), (dict(weight_decay=-1), "weight_decay"), (dict(delta=-1), "delta"),
    (dict(cut=1), "cut must be an integer >= 2"), (dict(ptr=0), "ptr must be >= 1"),
    (dict(test_size=0), "test_size"), (dict(shuffles=[1, 1]), "shuffles lists \\[1\\] more than once"),
    (dict(states=["init", "init"]), "states lists"), (dict(measure=["output", "output"]), "measure lists"),
    (dict(layers="some"), "layers must be one of"), (dict(layers=[]), "layers must be"),
    (dict(layers=[""]), "layers must be")])
def test_bad_values_are_refused_when_the_config_is_made(kw, match):
    with pytest.raises(ValueError, match=match):  # torch-free checks: also while a sweep file loads
        RunConfig(**{**TINY, **kw})


@pytest.mark.parametrize("kw, match", [
    (dict(net_options={"depht": 3}), "net_options \\['depht'\\] are no options of LeNet; accepted"),
    (dict(task_options={"dd": 28}), "task_options \\['dd'\\] are no options of task 'twopoints'; accepted.*'xi'"),
    (dict(task="cifar10", task_options={"d": 28}, test_size=None, ptr=None), "accepted: \\['root'\\]"),
    (dict(measure=["outputs"]), "measure: unknown measurement.*'outputs'.*registered"),
    (dict(augment=["crop", "flip"]), "only defined for cifar10"),
    (dict(task="cifar10", augment=["crop"], ptr=None, test_size=None), "go together"),
    (dict(augment=["rotat"]), "unknown augmentation.*'rotat'.*accepted"),
    (dict(P=500, test_size=None), "P=500 is larger than the test set \\(256 samples"),  # 4 ptr
    (dict(P=65), "P=65 is larger than the test set \\(64"),
    (dict(task="cifar10", ptr=None, test_size=None, P=10_001), "P=10001 is larger than the test set"),
    (dict(task="cifar10", ptr=None, test_size=20_000), "test_size=20000 is larger than the CIFAR-10 test set"),
    (dict(task="scale1d", net="CNN1D", ptr=16, test_size=None, P=500), "P=500 is larger than the test set"),
    (dict(net_options={"input_size": 4}), "net LeNet with net_options \\{'input_size': 4\\} on a 28-pixel"),
    (dict(task_options={"d": 8, "xi": 4.0}, P=8), "net LeNet .* on a 8-pixel twopoints input"),
    (dict(layers=["features.conv1", "no_such_node"]), "layers: \\['no_such_node'\\] are no nodes of LeNet")])
def test_registry_and_data_checks_run_before_training(kw, match):
    c = RunConfig(**{**TINY, **kw})  # accepted when made (torch-free) ...
    with pytest.raises(ValueError, match=match):
        runs.validate(c)  # ... refused by validate (Sweep.validate / --dry-run / run), before any training
    if match.startswith(("net LeNet", "layers:", "P=")):
        runs.validate(c, build=False)  # building the net is left to the full validation (replace chains)
    else:
        with pytest.raises(ValueError, match=match):
            runs.validate(c, build=False)


def test_valid_options_pass_the_checks():
    runs.validate(RunConfig(**{**TINY, "net_options": {"input_size": 28}, "task_options": {"xi": 14.0, "d": 28}}))
    runs.validate(RunConfig(**{**TINY, "P": 64, "layers": "output"}))
    runs.validate(RunConfig(**{**TINY, "measure": ["accuracy"], "P": 10_000}))  # P unused without output/layers
    runs.validate(RunConfig(task="cifar10", net="VGG11", augment=["crop", "flip", "rotate"], test_size=500, P=500))
    from stabkit.stability import layer_names
    from stabkit import nets
    names = layer_names(nets.build("LeNet", in_channels=1, num_classes=1, width_factor=0.25, input_size=28))
    runs.validate(RunConfig(**{**TINY, "layers": names[:2]}))


# ------------------------------------------------------- issue 28.4: measurement options checked up front
@pytest.mark.parametrize("options, match", [
    ({"layer": {"relu_conventions": ["inplace"]}}, r"options: \['layer'\] name no registered measurement"),
    ({"layers": {"relu_conventions": ["nope"]}}, r"options.layers.relu_conventions must be a non-empty list"),
    ({"layers": {"relu_conventions": 3}}, r"options.layers.relu_conventions"),
    ({"layers": {"relu_convention": ["true"]}}, r"options.layers: unknown key\(s\) \['relu_convention'\]"),
    ({"layers": ["true"]}, r"options.layers must be a mapping"),
    ({"accuracy": {"seeds": [0.5]}}, r"options.accuracy.seeds must be an integer >= 0, got 0.5"),
    ({"accuracy": {"n": "all"}}, r"options.accuracy.n must be an integer"),
    ({"accuracy": {"familes": {}}}, r"options.accuracy: unknown key\(s\) \['familes'\]"),
    ({"accuracy": {"families": {"blur": {}}}}, r"options.accuracy.families.blur.family must be one of"),
    ({"accuracy": {"families": {"mask": {"patches": 4}}}}, r"families.mask: mask: unknown option\(s\) \['patches'\]"),
    ({"accuracy": {"families": {"rotate": {"per_class": "yes"}}}}, r"per_class must be true or false"),
    ({"invariance": {"stratify": "no"}}, r"options.invariance.stratify must be true or false"),
    ({"invariance": {"aggregate": "median"}}, r"options.invariance.aggregate must be one of"),
    ({"invariance": {"angles": [0]}}, r"at least 2 angles"),
    ({"resolution": {"targets": [8.5]}}, r"options.resolution.targets must be an integer >= 1, got 8.5"),
])
def test_measurement_options_are_checked_before_training(options, match):
    """Issue 28.4: a bad measurement option failed the run only after its training (and a failed run lends
    no network); a typo of a measurement's name in ``options`` was ignored silently."""
    with pytest.raises(ValueError, match=match):
        runs.validate(RunConfig(**TINY, options=options), build=False)


def test_a_sweep_with_a_bad_option_fails_before_any_run(tmp_path):
    spec = {"name": "badopt", "base": {**TINY, "measure": ["layers"]}, "scales": {"tiny": {}},
            "grid": [{"seed": [0]}, {"seed": [1], "options": [{"layers": {"relu_conventions": ["inplace", "x"]}}]}]}
    with pytest.raises(ValueError, match="relu_conventions"):
        sweeps.sweep(spec, "tiny", tmp_path / "r", device="cpu", progress=False)
    assert not (tmp_path / "r").exists()  # nothing trained, not even the valid first run


def test_registered_measurements_check_their_own_options():
    seen = []

    def check(o):
        if set(o) - {"k"}:
            raise ValueError(f"options.test_opts: unknown key(s) {sorted(set(o) - {'k'})}")
        seen.append(o)
        return o

    @runs.register_measurement("test_opts", overwrite=True, options=check)
    def m(model, cfg, ctx):
        return {}

    runs.validate(RunConfig(**TINY, measure=["test_opts"], options={"test_opts": {"k": 1}}), build=False)
    assert seen == [{"k": 1}]
    with pytest.raises(ValueError, match=r"options.test_opts: unknown key\(s\) \['j'\]"):
        runs.validate(RunConfig(**TINY, measure=["test_opts"], options={"test_opts": {"j": 1}}), build=False)
    runs.register_measurement("test_opts", overwrite=True)(m)  # re-registered without a check: passed through
    runs.validate(RunConfig(**TINY, measure=["test_opts"], options={"test_opts": {"j": 1}}), build=False)
    for sweep in ("probe_rotation", "probe_resolution"):  # the committed sweeps' options pass
        for scale in ("tiny", "cpu", "paper"):
            runs.validate(sweeps.load_sweep(sweep, scale).configs[0], build=False)


# --------------------------------------------------------------- issue 28.8: no silent coercion of a value
@pytest.mark.parametrize("kw, match", [
    (dict(fast="no"), r"fast must be true or false, got 'no'"),
    (dict(stop_at_zero_loss="false"), r"stop_at_zero_loss must be true or false, got 'false'"),
    (dict(stop_at_zero_loss=1), r"stop_at_zero_loss must be true or false, got 1"),
    (dict(shuffles=[0.5]), r"shuffles item must be an integer"),
    (dict(shuffles=[True]), r"shuffles item"),
    (dict(measure=[1]), r"measure must be a list of names \(strings\), got \[1\]"),
    (dict(states={"trained": 1}), r"states must be a list"),
])
def test_values_of_the_wrong_type_are_refused_not_coerced(kw, match):
    """Issue 28.8: ``fast``/``stop_at_zero_loss`` turned any string into True, ``shuffles: [0.5]`` became [0]."""
    with pytest.raises(ValueError, match=match):
        RunConfig(**{**TINY, **kw})
    assert RunConfig(**TINY, fast=True, stop_at_zero_loss=False, shuffles=[0, 1.0]).shuffles == (0, 1)


def test_sweep_files_refuse_duplicate_keys_empty_grids_bad_names_and_bad_bytes(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("base: {task: twopoints, net: LeNet}\nbase: {task: cifar10}\nscales: {tiny: {}}\n")
    with pytest.raises(ValueError, match=rf"sweep file {f}: key 'base' is given twice \(lines 1 and 2\)"):
        sweeps.load_sweep(f, "tiny")
    f.write_text("base: {task: twopoints, net: LeNet, net: VGG11}\nscales: {tiny: {}}\n")
    with pytest.raises(ValueError, match=r"key 'net' is given twice"):
        sweeps.load_sweep(f, "tiny")
    # a merge key may be overridden (YAML's intent), as the committed sweeps do
    f.write_text("_b: &b {task: twopoints, net: LeNet, epochs: 1}\nbase: {<<: *b, epochs: 2}\nscales: {tiny: {}}\n")
    assert sweeps.load_sweep(f, "tiny").configs[0].epochs == 2
    f.write_text("base: {task: twopoints, net: LeNet}\ngrid: {seed: []}\nscales: {tiny: {}}\n")
    with pytest.raises(ValueError, match=r"grid value of 'seed' is an empty list"):
        sweeps.load_sweep(f, "tiny")
    f.write_text("base: {task: twopoints, net: LeNet}\ninclude: [{sweep: fig5_scale_detection, where: {net: [X]}}]\n"
                 "scales: {tiny: {}}\n")
    with pytest.raises(ValueError, match=r"the sweep has no run"):
        sweeps.load_sweep(f, "tiny")
    f.write_bytes(b"name: caf\xe9\nscales: {tiny: {}}\n")  # Latin-1
    with pytest.raises(ValueError, match=rf"sweep file {f}: not UTF-8 text"):
        sweeps.load_sweep(f, "tiny")
    for name in ("a+b", "_x"):  # names the results store refuses (issue 28.9)
        with pytest.raises(ValueError, match="name must be a plain name"):
            sweeps.load_sweep({"name": name, "base": TINY, "scales": {"tiny": {}}}, "tiny")
