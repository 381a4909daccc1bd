"""TV / SV / NV (stabkit.invariance): sanity cases, streaming = direct computation, tables, errors."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stabkit.invariance import (Transformation, identity_transforms, invariance, measures_from_array, nv_ratio,
                                rotations)


class Tiny(nn.Module):
    """conv -> relu -> flatten -> linear (every node is a tensor [B, ...])."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.flat = nn.Flatten(1)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(self.flat(self.relu(self.conv(x))))


class Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(36, 4)

    def forward(self, x):
        return self.fc(torch.zeros_like(x).flatten(1))


def _transforms():
    """Four deterministic transforms that change the image differently."""
    return [Transformation("t", float(i), (lambda x, i=i: torch.roll(x, i, dims=-1) * (1 + 0.1 * i)))
            for i in range(4)]


def _direct(model, images, transforms, layer_fn, stat="std", labels=None):
    M = np.stack([np.stack([layer_fn(model, t(images[i:i + 1]))[0] for t in transforms]) for i in range(len(images))])
    return measures_from_array(M, stat=stat, labels=labels)


def test_nv_conventions():
    nv = nv_ratio(np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.0, 4.0]))
    assert nv[0] == 1.0 and np.isinf(nv[1]) and nv[2] == 0.5


def test_constant_model_nv_one_identity_tv_zero():
    x = torch.rand(10, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    r = invariance(Constant(), x, _transforms(), batch_size=3)["layers"]
    out = r[r.layer == "fc"].iloc[0]
    assert out.mean_TV == 0 and out.mean_SV == 0 and out.mean_NV == 1 and out.n_inf == 0
    r = invariance(Tiny(), x, identity_transforms(3), batch_size=4, aggregate="none", per_activation=True)
    assert (r["layers"].mean_TV == 0).all()
    a = r["activations"]
    assert (a.TV == 0).all() and (a.NV[a.SV > 0] == 0).all() and (a.NV[a.SV == 0] == 1).all()  # dead units: 0/0


@pytest.mark.parametrize("batch_size", [1, 3, 4, 12, 50])  # dividing and not dividing N = 12
@pytest.mark.parametrize("stat", ["std", "var"])
def test_streaming_equals_direct(batch_size, stat):
    torch.manual_seed(1)
    x = torch.rand(12, 1, 6, 6)
    model, tr = Tiny().double(), _transforms()
    res = invariance(model, x.double(), tr, batch_size=batch_size, stat=stat, aggregate="none",
                     per_activation=True)
    acts = res["activations"]
    with torch.no_grad():
        fns = {"conv": lambda m, z: m.conv(z).flatten(1).numpy(),
               "relu": lambda m, z: m.relu(m.conv(z)).flatten(1).numpy(),
               "fc": lambda m, z: m(z).numpy()}
        for layer, fn in fns.items():
            ref = _direct(model, x.double(), tr, fn, stat)
            got = acts[acts.layer == layer].sort_values("activation")
            np.testing.assert_allclose(got.TV.to_numpy(), ref["TV"], rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose(got.SV.to_numpy(), ref["SV"], rtol=1e-10, atol=1e-14)
            nv = got.NV.to_numpy()
            np.testing.assert_allclose(nv[np.isfinite(nv)], ref["NV"][np.isfinite(ref["NV"])], rtol=1e-8)
            assert np.isinf(nv).sum() == np.isinf(ref["NV"]).sum()


@pytest.mark.parametrize("aggregate", ["mean", "sum", "max"])
def test_channel_aggregation_and_stratification(aggregate):
    torch.manual_seed(2)
    x = torch.rand(14, 1, 6, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1] * 7)
    model, tr = Tiny().double(), _transforms()
    red = {"mean": lambda a: a.mean((2, 3)), "sum": lambda a: a.sum((2, 3)), "max": lambda a: a.amax((2, 3))}[aggregate]
    with torch.no_grad():
        ref = _direct(model, x, tr, lambda m, z: red(m.relu(m.conv(z))).numpy(), labels=labels.numpy())
    res = invariance(model, x, tr, labels, stratify=True, aggregate=aggregate, batch_size=5, per_activation=True)
    got = res["activations"].query("layer == 'relu'").sort_values("activation")
    assert len(got) == 2  # one value per channel
    np.testing.assert_allclose(got.NV.to_numpy(), ref["NV"], rtol=1e-8)
    row = res["layers"].query("layer == 'relu'").iloc[0]
    assert row["stratified"] and row["aggregate"] == aggregate and row["n_activations"] == 2


def test_table_columns_depth_and_inf_count():
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    res = invariance(Tiny(), x, rotations(n=4), batch_size=3)
    t = res["layers"]
    for c in ("layer", "depth", "rel_depth", "mean_NV", "n_inf", "n_activations", "mean_TV", "mean_SV", "stat"):
        assert c in t.columns
    assert list(t.layer) == ["conv", "relu", "flat", "fc"]
    # the flatten is a pure reshape: off the depth axis (nan), as in stability.measure
    np.testing.assert_array_equal(t.depth.to_numpy(), [1, 2, np.nan, 3])
    assert t.rel_depth.iloc[-1] == 1.0
    # a unit that is zero on every clean image but not when shifted gives SV = 0 < TV: inf, counted
    tr = [Transformation("a", 0.0, lambda z: z * 0), Transformation("b", 1.0, lambda z: z * 0 + 1)]
    t2 = invariance(Tiny(), x, tr, layers=["conv"])["layers"]
    assert t2.n_inf.iloc[0] == t2.n_activations.iloc[0] and len(t2) == 1


def test_rotations_are_degrees():
    tr = rotations(n=4)
    assert [t.value for t in tr] == [0.0, 90.0, 180.0, 270.0]
    x = torch.rand(2, 1, 5, 5)
    assert torch.equal(tr[1](x), torch.rot90(x, 1, dims=(-2, -1)))
    assert len(rotations()) == 16 and rotations()[1].value == 22.5


def test_bad_arguments():
    x = torch.rand(6, 1, 6, 6)
    with pytest.raises(ValueError, match="stat"):
        invariance(Tiny(), x, _transforms(), stat="mad")
    with pytest.raises(ValueError, match="aggregate"):
        invariance(Tiny(), x, _transforms(), aggregate="median")
    with pytest.raises(ValueError, match="transformations"):
        invariance(Tiny(), x, _transforms()[:1])
    with pytest.raises(ValueError, match="labels"):
        invariance(Tiny(), x, _transforms(), stratify=True)
    with pytest.raises(ValueError, match="class"):
        invariance(Tiny(), x, _transforms(), torch.tensor([0, 0, 0, 0, 0, 1]), stratify=True)
    with pytest.raises(ValueError, match="layers"):
        invariance(Tiny(), x, _transforms(), layers=["nope"])
    with pytest.raises(ValueError, match="batch_size"):
        invariance(Tiny(), x, _transforms(), batch_size=0)
    with pytest.raises(ValueError, match="n must"):
        rotations(n=1)


def test_bad_images_and_devices_refused():
    x = torch.rand(6, 1, 6, 6)
    bad = x.clone()
    bad[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):  # was measured silently (NaN statistics)
        invariance(Tiny(), bad, _transforms())
    for device in ("gpu", "cuda:x", "cpu:0"):
        with pytest.raises(ValueError, match="device"):  # was torch's own error, or none
            invariance(Tiny(), x, _transforms(), device=device)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            invariance(Tiny(), x, _transforms(), device="cuda")
    a = invariance(Tiny(), x, _transforms(), device="auto")["layers"]
    b = invariance(Tiny(), x, _transforms(), device="cpu")["layers"]
    pd.testing.assert_frame_equal(a, b)


def test_layer_kind_reshape_flag_and_finite_count():
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    r = invariance(Tiny(), x, _transforms())["layers"]
    assert list(r.layer) == ["conv", "relu", "flat", "fc"]
    assert list(r.kind) == ["Conv2d", "ReLU", "Flatten", "Linear"]
    assert list(r.reshape) == [False, False, True, False]  # the flatten repeats the layer before it
    assert (r.n_finite == r.n_activations - r.n_inf).all()


def test_mixed_train_eval_modes_restored():
    m = Tiny()
    m.train()
    m.conv.eval()  # mixed modes: each module gets its own flag back (not the root's)
    invariance(m, torch.rand(6, 1, 6, 6), _transforms())
    assert m.training and not m.conv.training and m.relu.training


def test_depth_axis_matches_stability_measure():
    """Issue 12.4: reshape nodes are left out of depth / rel_depth, exactly as stability.measure does
    (before, the flatten counted and shifted every later layer's relative depth)."""
    from stabkit.stability import measure
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    inv = invariance(Tiny(), x, _transforms())["layers"]
    st = measure(Tiny(), x.double(), delta=0.5, cut=2, seed=0)
    on_axis = inv[~inv.reshape]
    assert list(on_axis.layer) == list(st.layer)
    np.testing.assert_array_equal(on_axis.depth.to_numpy(), st.depth.to_numpy())
    np.testing.assert_allclose(on_axis.rel_depth.to_numpy(), st.rel_depth.to_numpy())
    assert inv[inv.reshape].depth.isna().all() and inv[inv.reshape].rel_depth.isna().all()


def test_devices_come_from_graph_resolve_device(monkeypatch):
    """invariance checks devices with stabkit.graph.resolve_device (through measurement_device)."""
    import stabkit.graph as graph
    import stabkit.invariance as inv_mod
    seen = []
    real = graph.resolve_device
    monkeypatch.setattr(graph, "resolve_device", lambda d, **kw: seen.append(d) or real(d, **kw))
    invariance(Tiny(), torch.rand(6, 1, 6, 6), _transforms(), device="cpu")
    assert seen == ["cpu"]
    assert not hasattr(inv_mod, "resolve_device")
    assert graph.measurement_device(Tiny(), None) == torch.device("cpu")
