"""Related probes (stabkit.robustness): families, accuracy tables, resolution transfer, global NV."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stabkit import nets, robustness
from stabkit.invariance import invariance, rotations
from stabkit.robustness import (accuracy_under, apply_family, global_nv, layer_mean_nv, resolution_transfer, summarize,
                                transfer_grid)


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
    assert json.loads(mask.options.iloc[0]) == {"patch": 4, "fill": "zeros", "order": "random"}


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
    sal = robustness.gradient_saliency(m, x, y)
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


def test_mask_mean_fill_is_the_data_set_mean():
    # the mean / std given for the normalisation are the data set's: the "mean" fill uses them, whatever the
    # batch size (it used the batch's mean)
    x, y = _brightness_data()
    mean, std = (0.45, 0.45, 0.45), (1.0, 1.0, 1.0)
    a = accuracy_under(MeanColour(), x, y, "mask", [1.0], fill="mean", mean=mean, std=std, batch_size=40)
    b = accuracy_under(MeanColour(), x, y, "mask", [1.0], fill="mean", mean=mean, std=std, batch_size=3)
    assert a.accuracy.iloc[0] == b.accuracy.iloc[0] == pytest.approx(0.1)  # every image -> class 0
    g = torch.Generator().manual_seed(0)
    out = apply_family("mask", x[:2], 1.0, generator=g, fill="mean", mean=mean)
    assert torch.allclose(out, torch.full_like(out, 0.45))


def test_rotate_augment_seeded():
    x = torch.rand(4, 3, 8, 8)
    a = robustness.rotate_augment(x, torch.Generator().manual_seed(0))
    b = robustness.rotate_augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, x) and a.shape == x.shape


def test_integer_magnitudes_and_devices():
    x, y = _brightness_data()
    a = accuracy_under(MeanColour(), x, y, "patch_shuffle", [np.int64(2), 4.0])
    assert list(a.magnitude) == [2.0, 4.0]
    with pytest.raises(ValueError, match="device"):
        accuracy_under(MeanColour(), x, y, "rotate", [0], device="gpu")


# ------------------------------------------------------------------------------------------ global NV
class Wide(nn.Module):
    """conv (8 channels) -> relu -> flatten (a reshape node) -> linear (2 units): layers of unequal width."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8 * 6 * 6, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.conv(x)), 1))


def test_global_nv_pools_every_finite_activation_without_reshape_nodes():
    x = torch.rand(12, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    res = invariance(Wide(), x, rotations(n=4), aggregate="none", per_activation=True)
    lay, act = res["layers"], res["activations"]
    assert lay.set_index("layer").loc["flatten", "reshape"]
    pooled = global_nv(lay)
    assert list(pooled.columns) == ["stratified", "global_NV", "n_finite"]
    # reference: the mean over the finite NV of every activation of the non-reshape layers
    keep = act[act.layer.isin(lay.layer[~lay.reshape]) & np.isfinite(act.NV)]
    assert pooled.global_NV.iloc[0] == pytest.approx(keep.NV.mean(), rel=1e-12)
    assert pooled.n_finite.iloc[0] == len(keep)
    # ... which is not the mean of the per-layer means (the 2-unit readout weighs like a whole layer there)
    means = layer_mean_nv(lay)
    assert means.layer_mean_NV.iloc[0] == pytest.approx(lay.mean_NV.mean())
    assert abs(means.layer_mean_NV.iloc[0] - pooled.global_NV.iloc[0]) > 1e-3
    # grouped by the net columns present; tables without the reshape column fall back to node names
    two = pd.concat([lay.assign(net="a"), lay.assign(net="b", mean_NV=lay.mean_NV * 2)])
    g = global_nv(two)
    assert list(g.net) == ["a", "b"] and g.global_NV.iloc[1] == pytest.approx(2 * g.global_NV.iloc[0])
    with pytest.warns(UserWarning, match="reshape"):
        old = global_nv(lay.drop(columns=["reshape", "n_finite"]))
    assert old.global_NV.iloc[0] == pytest.approx(pooled.global_NV.iloc[0], rel=1e-12)
    with pytest.raises(ValueError, match="n_inf"):
        global_nv(lay.drop(columns="n_inf"))
