"""Related probes (stabkit.probes): families, accuracy tables, resolution transfer, run integration, sweeps."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stabkit import nets, probes, runs
from stabkit.probes import AtResolution, accuracy_under, apply_family, resolution_transfer, summarize, transfer_grid
from stabkit.transforms import resize


class MeanColour(nn.Module):
    """Classifies by the mean brightness of the image: invariant to any permutation of the pixels."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        centres = torch.arange(10, dtype=x.dtype, device=x.device) / 10 + 0.05
        return -(m[:, None] - centres[None]) ** 2


def _brightness_data(n=40, size=16):
    y = torch.arange(n) % 10
    x = (y.float() / 10 + 0.05).view(-1, 1, 1, 1).expand(n, 3, size, size).clone()
    return x, y


def test_apply_family_shapes_and_errors():
    x = torch.rand(2, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert apply_family("rotate", x, 90).shape == x.shape
    assert apply_family("patch_shuffle", x, 4, generator=g, mode="rows_cols").shape == x.shape
    assert apply_family("mask", x, 0.5, generator=g, patch=4, fill="mean").shape == x.shape
    assert apply_family("pixelate", x, 2).shape == x.shape
    assert apply_family("resize", x, 8, antialias=False).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="family"):
        apply_family("blur", x, 1)
    with pytest.raises(ValueError, match="unknown option"):
        apply_family("rotate", x, 10, mode="full")


def test_accuracy_under_permutation_invariant_model():
    x, y = _brightness_data()
    m = MeanColour()
    df = accuracy_under(m, x, y, "patch_shuffle", [1, 2, 4], seeds=[0, 1], per_class=True)
    assert set(df.columns) >= {"family", "magnitude", "seed", "label", "accuracy", "n_correct", "n_samples", "options"}
    assert (df.accuracy == 1.0).all()
    assert len(df) == 3 * 2 * 11  # magnitudes x seeds x (all + 10 classes)
    assert (df[df.label == -1].n_samples == 40).all() and (df[df.label >= 0].n_samples == 4).all()
    rot = accuracy_under(m, x, y, "rotate", [0, 90, 180, 270], seeds=[0, 1])
    assert (rot.accuracy == 1.0).all() and len(rot) == 4  # deterministic family: one seed
    # masking half of the image with zeros halves the mean: accuracy drops
    mask = accuracy_under(m, x, y, "mask", [0.0, 0.5], patch=4)
    assert mask.accuracy.iloc[0] == 1.0 and mask.accuracy.iloc[1] < 0.5
    assert json.loads(mask.options.iloc[0]) == {"patch": 4, "fill": "zero", "order": "random"}


def test_accuracy_under_uint8_and_normalisation():
    x, y = _brightness_data()
    u8 = (x * 255).round().to(torch.uint8)
    df = accuracy_under(MeanColour(), u8, y, "pixelate", [1, 2])
    assert (df.accuracy > 0.9).all()
    with pytest.raises(ValueError, match="labels"):
        accuracy_under(MeanColour(), x, y[:3], "rotate")
    with pytest.raises(ValueError, match="batch_size"):
        accuracy_under(MeanColour(), x, y, "rotate", batch_size=0)


def test_saliency_order_masks_most_predictive_first():
    torch.manual_seed(0)
    m = nets.build("LeNet", width_factor=0.5).eval()
    x, y = torch.rand(20, 3, 32, 32), torch.arange(20) % 10
    sal = probes.gradient_saliency(m, x, y)
    assert sal.shape == (20, 32, 32) and (sal >= 0).all()
    df = accuracy_under(m, x, y, "mask", [0.0, 0.5], order="saliency", patch=8)
    assert len(df) == 2


def test_summarize_sample_sd():
    df = pd.DataFrame({"family": "f", "magnitude": [1, 1, 1, 2], "label": -1, "accuracy": [0.1, 0.2, 0.3, 0.5]})
    s = summarize(df)
    assert s.loc[0, "mean"] == pytest.approx(0.2) and s.loc[0, "sd"] == pytest.approx(0.1) and s.loc[0, "n"] == 3
    assert s.loc[1, "sd"] == 0.0
    with pytest.raises(ValueError, match="columns"):
        summarize(df, by=("nope",))


def test_resolution_transfer_table():
    acc = pd.DataFrame({"family": "resize", "label": -1, "magnitude": [8.0, 16.0, 32.0],
                        "accuracy": [0.3, 0.6, 0.45], "options": "{}"})
    t = resolution_transfer(acc, 16, [16, 32])
    assert list(t.target) == [16, 32]
    assert t.acc_source.iloc[0] == pytest.approx(60.0) and t.delta.iloc[1] == pytest.approx(-15.0)
    with pytest.raises(ValueError, match="source"):
        resolution_transfer(acc, 24)
    grid = transfer_grid(pd.concat([t.assign(seed=0), t.assign(seed=1, delta=t.delta - 2)]))
    assert grid.loc[grid.target == 32, "delta_mean"].item() == pytest.approx(-16.0)
    assert grid.loc[grid.target == 32, "delta_sd"].item() == pytest.approx(np.sqrt(2.0))


def test_lowres_nets_resample_inside():
    assert "LowRes-ResNet18" in nets._BUILDERS
    torch.manual_seed(0)
    m = nets.build("LowRes-ResNet18", width_factor=0.125, source_size=16).eval()
    assert isinstance(m, AtResolution) and m.source_size == 16
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m(x), m.net(resize(x, 16)), atol=1e-6)
        assert m.net(torch.rand(2, 3, 24, 24)).shape == (2, 10)  # the bare net takes any size
    from stabkit.stability import layer_names
    assert layer_names(m, x)[0] == "_resample"  # FX-traceable: the resampling is one leaf node
    with pytest.raises(ValueError, match="interp"):
        nets.build("LowRes-ResNet18", width_factor=0.125, interp="lanczos")


def test_rotate_augmentation_registered_and_seeded():
    assert runs.AUGMENTATIONS["rotate"] is probes.rotate_augment
    for name in ("accuracy", "invariance", "resolution"):
        assert name in runs.MEASUREMENTS
    x = torch.rand(4, 3, 8, 8)
    a = probes.rotate_augment(x, torch.Generator().manual_seed(0))
    b = probes.rotate_augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, x) and a.shape == x.shape


# --------------------------------------------------------------------------------------------- sweeps
SWEEPS = ("probe_rotation", "probe_patch_shuffle", "probe_masking", "probe_resolution")


@pytest.mark.parametrize("scale", ["tiny", "small", "paper"])
def test_probe_sweeps_load_and_share_nets(scale):
    sw = {name: runs.load_sweep(name, scale) for name in SWEEPS}
    for s in sw.values():
        assert len(s) >= 1
    # the rotation, patch-shuffle and masking sweeps are the same runs (shared trained nets)
    assert set(sw["probe_rotation"].keys) == set(sw["probe_patch_shuffle"].keys) == set(sw["probe_masking"].keys)
    augments = {c.augment for c in sw["probe_rotation"].configs}
    assert augments == {("crop", "flip"), ("crop", "flip", "rotate")}
    assert all(c.net.startswith("LowRes-") for c in sw["probe_resolution"].configs)
    if scale == "small":
        assert len(sw["probe_rotation"]) <= 4 and len(sw["probe_resolution"]) <= 2


# ------------------------------------------------------------------------------ end to end (fake data)
@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    """A class-folder CIFAR-10 look-alike: 10 classes x (12 train + 4 test) PNGs, class = brightness."""
    from PIL import Image

    root = tmp_path_factory.mktemp("fake_cifar")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for c, name in enumerate(probes.CIFAR10_CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(c * 25 + rng.integers(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


def test_probe_measurements_in_a_run(fake_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("STABKIT_CACHE", str(tmp_path / "cache"))
    opts = {"invariance": {"n_angles": 4, "n": 20, "stratify": [False, True], "batch_size": 8},
            "accuracy": {"seeds": [0, 1], "families": {
                "rotate": {"magnitudes": [0, 90], "per_class": True},
                "patch_shuffle": {"magnitudes": [1, 2]},
                "mask_saliency": {"family": "mask", "magnitudes": [0.0, 0.5], "order": "saliency", "patch": 8}}}}
    cfg = runs.RunConfig(task="cifar10", task_options={"root": str(fake_cifar)}, net="VGG11bn", width_factor=0.125,
                         epochs=1, batch_size=32, augment=["crop", "flip", "rotate"], measure=["invariance", "accuracy"],
                         states=["trained"], options=opts)
    path = runs.run(cfg, tmp_path / "runs", device="cpu", progress=False)
    inv = pd.read_parquet(path / "invariance.parquet")
    assert set(inv.stratified) == {False, True} and (inv.n_samples == 20).all()
    assert (path / "invariance_act.parquet").is_file()
    acc = pd.read_parquet(path / "accuracy.parquet")
    assert set(acc.probe) == {"rotate", "patch_shuffle", "mask_saliency"}
    assert set(acc[acc.probe == "rotate"].label) == set(range(-1, 10))

    cfg = runs.RunConfig(task="cifar10", task_options={"root": str(fake_cifar)}, net="LowRes-ResNet18",
                         net_options={"source_size": 16}, width_factor=0.125, epochs=1, batch_size=32,
                         measure=["resolution"], states=["trained"],
                         options={"resolution": {"targets": [8, 16, 32]}})
    path = runs.run(cfg, tmp_path / "runs", device="cpu", progress=False)
    res = pd.read_parquet(path / "resolution.parquet")
    assert list(res.target) == [8, 16, 32] and (res.source == 16).all()
    row = res[res.target == 16].iloc[0]
    assert row.delta == 0 and row.acc_ootb == row.acc_source
    metrics = pd.read_parquet(path / "metrics.parquet")  # the run's own test error is at the source size
    assert abs((100 - 100 * metrics.test_err.iloc[-1]) - row.acc_source) <= 100 / 40 + 1e-9  # rounding: 1 image
    assert {"interp", "antialias", "blur_sigma"} <= set(res.columns)
