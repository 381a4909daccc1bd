"""Fidelity to the original experiments (issue 12, protocol items): Fig. 1 probes on test images corrupted
with each net's own training noise, the figure sweeps' network lists and cpu grid, in-place ReLUs in VGG and
AlexNet with the original's measurement convention as an option. Fast: fake CIFAR-10 tensors, tiny nets."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stabkit import data, nets, runs, sweeps
from stabkit.runs import tasks
from stabkit.probes import draw_probes
from stabkit.stability import measure
from stabkit.transforms import GaussianNoiseCorruption

TINY = dict(task="cifar10", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25, batch_size=32,
            measure_dtype="float32")


@pytest.fixture
def fake_cifar(monkeypatch):
    """Random uint8 'CIFAR-10' (64 training, 64 test images): no data set needed."""
    def fake(root=None, train=True, **kw):
        g = torch.Generator().manual_seed(1 if train else 2)
        n = 64
        return (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
                torch.randint(0, 10, (n,), generator=g))
    monkeypatch.setattr(data, "cifar10_tensors", fake)


def cfg(**kw) -> runs.RunConfig:
    return runs.RunConfig(**{**TINY, **kw})


# ------------------------------------------------------------------------------ 12.1 corrupted probes
def test_corrupted_probes_follow_the_paper(fake_cifar):
    """A noise-trained net is measured on test images corrupted with its own training noise (after
    normalisation, as in training), then deformed / noised: x_tau and x_eta are drawn from the corrupted
    images. Before, every net was measured on clean images."""
    c10 = cfg(noise_std=10.0)
    d = runs.tasks.task_data(c10)
    assert tasks.probe_kinds(c10) == ("corrupted", "clean") and tasks.probe_kinds(cfg()) == ("clean",)
    x, x_tau, x_eta = tasks.probe_set(c10, d)  # default: the paper's, corrupted
    clean = tasks.probe_set(c10, d, "clean")
    # the clean probes are exactly those of a noise-free run (and of the code before the change)
    for a, b in zip(clean, tasks.probe_set(cfg(), d)):
        assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(c10.probe_seed)
    idx = torch.randperm(len(d.test_y), generator=gen)[: c10.P]
    x0 = tasks.normalize(d.test_x[idx], d.mean, d.std).double()
    z = GaussianNoiseCorruption(10.0, tasks.corruption_generator(c10))(x0) - x0
    assert torch.allclose(x, x0 + z)
    norms = z.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 10.0), rtol=0.05)  # E||noise||^2 = std^2 per image
    # x_tau, x_eta are the probes of the corrupted images, with the same fields as the clean ones
    again = draw_probes(x, delta=c10.delta, cut=c10.cut, generator=gen)
    assert torch.equal(again.x_tau, x_tau) and torch.equal(again.x_eta, x_eta)
    assert not torch.allclose(x_tau, clean[1])


def test_every_net_of_a_noise_level_sees_the_same_corrupted_images(fake_cifar):
    d = runs.tasks.task_data(cfg(noise_std=1.0))
    a = tasks.probe_set(cfg(noise_std=1.0), d)
    b = tasks.probe_set(cfg(noise_std=1.0, net="VGG11bn", seed=3), d)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    clean = tasks.probe_set(cfg(), d)[0]
    c30 = tasks.probe_set(cfg(noise_std=30.0), d)[0]
    torch.testing.assert_close((c30 - clean) / 30, (a[0] - clean) / 1.0)  # one corruption direction
    with pytest.raises(ValueError, match="corrupted"):
        tasks.probe_set(cfg(), d, "corrupted")


def test_run_tables_label_the_probe_sets_and_keys_do_not_change(fake_cifar, tmp_path):
    """output / layers: the paper's "corrupted" rows first, the clean measurement as extra labelled rows;
    the run keys of existing configurations are unchanged."""
    c = cfg(noise_std=10.0, shuffles=(0, 1))
    assert c.key == runs.RunConfig(**{**TINY, "noise_std": 10.0, "shuffles": (0, 1)}).key
    path = runs.run(c, tmp_path, device="cpu", progress=False)
    out = pd.read_parquet(path / "output.parquet")
    assert list(out[out.state == "init"].probes) == ["corrupted", "corrupted", "clean", "clean"]
    corr, clean = out[out.probes == "corrupted"], out[out.probes == "clean"]
    assert not np.allclose(corr.R_f.to_numpy(), clean.R_f.to_numpy())
    np.testing.assert_array_equal(corr.test_err_corrupted.to_numpy(), clean.test_err_corrupted.to_numpy())
    lay = pd.read_parquet(path / "layers.parquet")
    assert set(lay.probes) == {"corrupted", "clean"} and "relu_convention" not in lay.columns
    last = lay[(lay.state == "trained") & (lay.shuffle == 0) & (lay.probes == "corrupted")].sort_values("depth")
    assert out[(out.state == "trained") & (out.shuffle == 0) & (out.probes == "corrupted")].R_f.item() == \
        pytest.approx(last.R_f.iloc[-1])
    clean_run = pd.read_parquet(runs.run(cfg(), tmp_path, device="cpu", progress=False) / "output.parquet")
    assert set(clean_run.probes) == {"clean"}


# ------------------------------------------------------------------------------------ 12.2 the sweeps
CPU_KEYS = [  # `python -m stabkit sweep sweeps/fig1_noise_corrupted_cifar.yaml --scale cpu --dry-run`: the runs
    # the background sweeps train must keep their folders (the half-width 20-epoch grid; LeNet keeps its 250-epoch runs;
    # VGG11bn and ResNet18 for 60 epochs after the noise-30 VGG11bn; after the noise-30 AlexNet, the candidates for
    # <= 10 %: ResNet18 at half width, VGG11bn and VGG16bn at full width, 40 epochs in bf16; then noise 30 and 1)
    "5a58cda18e9c", "12c945d9a3ae", "f06f258120c3", "c5181c0fcea8", "2bc1ab034af1", "11adf9b96082",
    "724a9911ab03", "10221de460ab", "154da34e041e", "c2d1e56213f5",
    "146dd7beba69", "224203a17cd9", "ee80ed2add6b",
    "98ffc4f3052e", "8d7ccd8847e4", "cf27037275cb", "e9c90e328b17",
    "0abbbee2988a", "4c366ff58c5c", "df623acd92c5", "1aa08ab2a401", "97ed09a416ca", "12b19f4f8111",
    "64aca60db58d", "132aa6711042", "38dd73854d85", "2949b5eb9465"]  # seed 1 of Fig. 3's nets
OLD_KEYS = {  # tiny and small grids before the network lists changed: still the same runs
    ("fig1_noise_corrupted_cifar", "tiny"): ["f59b6c277bfc", "7829321d9885"],
    ("fig1_noise_corrupted_cifar", "small"): ["f3d3b704c535", "384215cae9c8", "7e39bb842877", "b0e9f29c0b03",
                                              "94717774ec45", "4ee4f13eb504", "cd345fba39cd", "10be87ff2f4a"],
    ("fig5_scale_detection", "tiny"): ["39c79ffa71f6", "840d6775ae87"],
    ("fig5_scale_detection", "small"): ["c6cd4fd3f5b9", "d49c7832a3b4", "921ea426d675", "9b8a8686ef98"],
}


def test_fig1_cpu_scale_is_the_background_campaign():
    assert sweeps.load_sweep("fig1_noise_corrupted_cifar", "cpu").keys == CPU_KEYS  # noise 0 first, then 30, then 1
    fig3 = sweeps.load_sweep("fig3_layers_cifar", "cpu")
    plain = {c.key for c in fig3.configs if c.measure != ("recalibrated",)}  # less the batch-norm controls
    assert plain <= set(CPU_KEYS) and {c.net for c in fig3.configs} == {"VGG11", "VGG11bn", "AlexNet", "LeNet"}
    assert plain == set(fig3.keys) & set(sweeps.load_sweep("fig2_laplacian_spectra", "cpu").keys)


@pytest.mark.parametrize("sweep, scale", sorted(OLD_KEYS))
def test_small_grids_keep_their_runs(sweep, scale):
    assert sweeps.load_sweep(sweep, scale).keys == OLD_KEYS[(sweep, scale)]


def test_paper_grids_are_the_original_network_lists():
    fig1 = sweeps.load_sweep("fig1_noise_corrupted_cifar", "paper")
    cnns = ["VGG11", "VGG11bn", "VGG16bn", "VGG19bn", "ResNet18", "ResNet34", "ResNet50", "AlexNet", "LeNet",
            "EfficientNetB0"]
    fcns = ["DenseNetL2", "DenseNetL4", "DenseNetL6"]
    seeds = {}
    for c in fig1.configs:
        seeds.setdefault(c.net, set()).add(c.seed)
    assert set(seeds) == set(cnns + fcns)
    assert all(seeds[n] == set(range(4)) for n in cnns) and all(seeds[n] == set(range(11)) for n in fcns)
    assert len(fig1) == (10 * 4 + 3 * 11) * 7
    fig5 = sweeps.load_sweep("fig5_scale_detection", "paper")
    assert {c.net for c in fig5.configs} == {"VGG11", "VGG11bn", "VGG13bn", "VGG16bn", "VGG19bn", "ResNet18",
                                             "ResNet34", "ResNet50", "AlexNet", "LeNet", "EfficientNetB0"}
    assert {c.seed for c in fig5.configs} == set(range(10)) and {c.ptr for c in fig5.configs} == {1024, 2048}
    assert len(fig5) == 11 * 10 * 2


# ------------------------------------------------------------------------------ 12.3 in-place ReLUs
def _not_inplace(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    return m


@pytest.mark.parametrize("name", ["VGG11", "VGG11bn", "AlexNet"])
def test_vgg_and_alexnet_relus_are_in_place_and_default_tables_unchanged(name):
    torch.manual_seed(0)
    model = nets.build(name, width_factor=0.125)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)
    plain = _not_inplace(model)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    probes = draw_probes(x, generator=torch.Generator().manual_seed(2))
    for batch_stats in (False, True):
        a = measure(model, probes, batch_stats=batch_stats)
        b = measure(plain, probes, batch_stats=batch_stats)
        pd.testing.assert_frame_equal(a, b)  # same node names, bit-identical numbers
    # training is unchanged too: the same gradients
    for m in (model, plain):
        m.train()
        m.zero_grad()
        torch.manual_seed(5)  # the same dropout masks (AlexNet)
        nn.functional.cross_entropy(m(x), torch.arange(6) % 10).backward()
    for (n1, p1), (_, p2) in zip(model.named_parameters(), plain.named_parameters()):
        assert torch.equal(p1.grad, p2.grad), n1


def test_inplace_convention_reproduces_the_original_at_the_first_conv():
    """At initialisation VGG11's first conv node reads D_f 0.113 in the original (post-ReLU) against the
    true 0.091: relu_convention="inplace" reports the post-ReLU value (the ReLU node's own row)."""
    torch.manual_seed(0)
    model = nets.build("VGG11", width_factor=0.25)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    probes = draw_probes(x, generator=torch.Generator().manual_seed(4))
    layers = ["features.conv1", "features.relu1"]
    true = measure(model, probes, layers=layers, batch_stats=True).set_index("layer")
    orig = measure(model, probes, layers=layers, batch_stats=True, relu_convention="inplace").set_index("layer")
    assert orig.loc["features.conv1", "D_f"] == pytest.approx(true.loc["features.relu1", "D_f"], rel=1e-12)
    assert orig.loc["features.conv1", "D_f"] / true.loc["features.conv1", "D_f"] > 1.1


def test_layers_measurement_offers_the_original_convention(fake_cifar, tmp_path):
    """options: {layers: {relu_conventions: [true, inplace]}} (YAML `true` is a boolean) adds rows labelled
    by relu_convention; the "true" rows are the default table's."""
    base = cfg(net="VGG11bn", width_factor=0.125, measure=["layers"], states=["init"], shuffles=(0,))
    both = base.replace(options={"layers": {"relu_conventions": [True, "inplace"]}})
    assert base.key != both.key and "options" not in {k for k, v in base.to_dict().items() if v}
    d1 = pd.read_parquet(runs.run(base, tmp_path, device="cpu", progress=False) / "layers.parquet")
    d2 = pd.read_parquet(runs.run(both, tmp_path, device="cpu", progress=False) / "layers.parquet")
    assert set(d2.relu_convention) == {"true", "inplace"}
    true_rows = d2[d2.relu_convention == "true"].drop(columns="relu_convention").reset_index(drop=True)
    pd.testing.assert_frame_equal(true_rows, d1)
    ip = d2[d2.relu_convention == "inplace"].set_index("layer")
    tr = d2[d2.relu_convention == "true"].set_index("layer")
    assert ip.loc["features.bn1", "D_f"] == pytest.approx(tr.loc["features.relu1", "D_f"])
    with pytest.raises(ValueError, match="relu_conventions"):
        runs.measurements.relu_conventions(base.replace(options={"layers": {"relu_conventions": ["post"]}}))
