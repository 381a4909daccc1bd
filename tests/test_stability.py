"""Tests of stabkit.stability (book/methods.md, "Stabilities" and "Channel shuffling")."""
import copy
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stabkit.probes import Probes, draw_probes
from stabkit.stability import COLUMNS, layer_names, measure, shuffle_channels, stability
from stabkit.transforms import noisy_batch


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Small(nn.Module):
    """conv-bn-relu(inplace)-residual add-pool-flatten-linear: modules, functions and an in-place op."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 5)
        with torch.no_grad():  # non-trivial running statistics
            self.bn.running_mean.uniform_(-0.5, 0.5, generator=gen(1))
            self.bn.running_var.uniform_(0.5, 2.0, generator=gen(2))

    def forward(self, x):
        h = self.relu(self.bn(self.conv1(x)))
        h = h + self.conv2(h)
        return self.fc(torch.flatten(self.pool(h), 1))


def small_activations(m, x, batch_stats=False):
    """Hand-written forward returning every node's value (no in-place op, float64)."""
    c1 = m.conv1(x)
    if batch_stats:
        b = F.batch_norm(c1, None, None, m.bn.weight, m.bn.bias, True, 0.0, m.bn.eps)
    else:
        b = F.batch_norm(c1, m.bn.running_mean, m.bn.running_var, m.bn.weight, m.bn.bias, False, 0.0, m.bn.eps)
    r = F.relu(b)
    c2 = m.conv2(r)
    a = r + c2
    p = m.pool(a)
    f = torch.flatten(p, 1)
    return {"conv1": c1, "bn": b, "relu": r, "conv2": c2, "add": a, "pool": p, "flatten": f, "fc": m.fc(f)}


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return Small().double()


# ------------------------------------------------------------------------------------ stability
def test_stability_identical_outputs_and_pairwise_denominator():
    o = torch.randn(13, 4, 5, generator=gen(0), dtype=torch.float64) + 3.0
    nume, deno = stability(o, o)
    assert nume == 0.0
    brute = torch.cdist(o.flatten(1), o.flatten(1)).pow(2).mean().item() + 1e-10  # all ordered pairs incl. i=j
    assert deno == pytest.approx(brute, rel=1e-12)
    op = o + 0.1 * torch.randn(13, 4, 5, generator=gen(1), dtype=torch.float64)
    nume, deno2 = stability(o, op)
    assert deno2 == deno
    assert nume == pytest.approx((op - o).pow(2).flatten(1).sum(1).mean().item(), rel=1e-12)
    # median variant: sum over features of the per-feature median over the probes
    med, deno3 = stability(o, op, mean=False)
    d2 = (op - o).pow(2).flatten(1).numpy()
    import numpy as np
    assert med == pytest.approx(float(np.median(d2, axis=0).sum()), rel=1e-12)
    assert deno3 == deno
    med_even, _ = stability(o[:12], op[:12], mean=False)
    assert med_even == pytest.approx(float(np.median(d2[:12], axis=0).sum()), rel=1e-12)


def test_stability_float32_inputs_computed_in_float64():
    o = torch.randn(50, 30, generator=gen(0)) + 1000.0  # large mean: naive float32 sums would cancel
    nume, deno = stability(o, o + 1.0)
    assert nume == pytest.approx(30.0, rel=1e-3)
    o64 = o.double()
    brute = torch.cdist(o64, o64).pow(2).mean().item() + 1e-10
    assert deno == pytest.approx(brute, rel=1e-10)


# -------------------------------------------------------------------------------------- measure
@pytest.mark.parametrize("P, batch_size", [(10, 3), (70, None)])  # 3 does not divide 10; 70: conv slicing
def test_measure_streaming_equals_direct_float64(small, P, batch_size):
    x = torch.randn(P, 3, 8, 8, generator=gen(3), dtype=torch.float64)
    x0, xt, xe = draw_probes(x, seed=5)
    assert torch.equal(x0, x)
    df = measure(small, x, seed=5, batch_size=batch_size)
    assert list(df.columns) == COLUMNS
    # the flatten node repeats the pooled values: not a layer
    assert list(df.layer) == ["conv1", "bn", "relu", "conv2", "add", "pool", "fc"]
    assert list(df.kind) == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "add", "AdaptiveAvgPool2d", "Linear"]
    with torch.no_grad():
        acts = [small_activations(small, t) for t in (x0, xt, xe)]
    for row in df.itertuples():
        o, ot, oe = (a[row.layer] for a in acts)
        D, deno = stability(o, ot)
        G, deno_g = stability(o, oe)
        assert deno == deno_g
        assert row.features == o[0].numel()
        assert row.P == P
        for got, want in [(row.D, D), (row.G, G), (row.deno, deno), (row.D_f, D / deno), (row.G_f, G / deno),
                          (row.R_f, D / G)]:
            assert got == pytest.approx(want, rel=1e-10)
    assert list(df.depth) == list(range(1, 8))
    assert df.rel_depth.iloc[-1] == 1.0 and df.rel_depth.between(0, 1).all()


def test_measure_batch_stats_and_modes(small):
    x = torch.randn(9, 3, 8, 8, generator=gen(4), dtype=torch.float64)
    before = {k: v.clone() for k, v in small.state_dict().items()}
    small.train()
    small.relu.eval()  # mixed modes must be restored as they were
    df = measure(small, x, seed=1, batch_stats=True)
    assert small.training and small.bn.training and not small.relu.training
    for k, v in small.state_dict().items():  # nothing updated, not even num_batches_tracked
        assert torch.equal(v, before[k]), k
    x0, xt, xe = draw_probes(x, seed=1)
    with torch.no_grad():  # batch statistics separately over each full probe set
        acts = [small_activations(small, t, batch_stats=True) for t in (x0, xt, xe)]
    for row in df.itertuples():
        o, ot, oe = (a[row.layer] for a in acts)
        D, deno = stability(o, ot)
        G, _ = stability(o, oe)
        assert (row.D, row.G, row.deno) == pytest.approx((D, G, deno), rel=1e-10)
    # eval-mode numbers differ from batch-statistics numbers after the batch-norm
    df_eval = measure(small, x, seed=1)
    assert df_eval.D.iloc[0] == pytest.approx(df.D.iloc[0], rel=1e-12)  # conv1: before any batch-norm
    assert abs(df_eval.D.iloc[1] / df.D.iloc[1] - 1) > 1e-3
    small.eval()


def test_measure_identity_and_orthogonal_have_R_one():
    x = torch.randn(12, 2, 10, 10, generator=gen(5), dtype=torch.float64)
    df = measure(nn.Flatten(), x, seed=3)
    assert len(df) == 1 and df.rel_depth.iloc[0] == 1.0
    # noise norms equal diffeo norms image by image, so R_f = 1 for any isometry
    assert df.R_f.iloc[0] == pytest.approx(1.0, rel=1e-12)
    x0, xt, _ = draw_probes(x, seed=3)
    assert df.D.iloc[0] == pytest.approx((xt - x0).pow(2).flatten(1).sum(1).mean().item(), rel=1e-12)
    q, _ = torch.linalg.qr(torch.randn(200, 200, generator=gen(6), dtype=torch.float64))
    lin = nn.Linear(200, 200).double()
    with torch.no_grad():
        lin.weight.copy_(q)
    net = nn.Sequential(nn.Flatten(), lin)
    out = measure(net, x, seed=3, layers="output")
    assert list(out.layer) == ["1"] and out.rel_depth.iloc[0] == 1.0
    assert out.R_f.iloc[0] == pytest.approx(1.0, rel=1e-10)
    assert out.D.iloc[0] == pytest.approx(df.D.iloc[0], rel=1e-10)  # and the bias drops out


def test_measure_gaussian_interp_blurs_clean_probes():
    x = torch.randn(6, 1, 10, 10, generator=gen(5), dtype=torch.float64)
    x0, xt, xe = draw_probes(x, interpolation="gaussian", seed=2)
    assert not torch.allclose(x0, x)
    torch.testing.assert_close((xe - x0).flatten(1).norm(dim=1), (xt - x0).flatten(1).norm(dim=1))
    df = measure(nn.Flatten(), x, interpolation="gaussian", seed=2)
    assert df.R_f.iloc[0] == pytest.approx(1.0, rel=1e-12)


def test_measure_resnet18_every_layer():
    torchvision = pytest.importorskip("torchvision")
    from torchvision.models.feature_extraction import get_graph_node_names

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.train()
    x = torch.randn(8, 3, 32, 32, generator=gen(0))
    df = measure(model, x, batch_size=5)
    assert model.training and all(m.training for m in model.modules())
    assert next(model.parameters()).dtype == torch.float32  # the float64 copy did not leak
    names = get_graph_node_names(model)[1][1:]  # eval-mode names without the input
    assert layer_names(model) == names
    layers = [n for n in names if n != "flatten"]  # the flatten node repeats the pooled values
    assert list(df.layer) == layers == layer_names(model, x)
    assert df.layer.iloc[-1] == "fc" and df.rel_depth.iloc[-1] == 1.0
    assert df.rel_depth.is_monotonic_increasing and (df.rel_depth > 0).all()
    assert {"Conv2d", "BatchNorm2d", "ReLU", "add", "Linear"} <= set(df.kind) and "flatten" not in set(df.kind)
    assert (df.P == 8).all() and (df.deno > 0).all() and df[["D", "G"]].gt(0).all().all()
    assert df.features.iloc[0] == 64 * 16 * 16


def test_measure_layers_subset_output_and_non_tensor_nodes(small):
    class Viewer(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 6 * 6, 3)

        def forward(self, x):
            h = self.conv(x)
            return self.fc(h.view(h.size(0), -1))

    net = Viewer().double()
    x = torch.randn(5, 1, 8, 8, generator=gen(1), dtype=torch.float64)
    df = measure(net, x)
    assert list(df.layer) == ["conv", "fc"]  # `size` gives an int, `view` repeats conv: not layers
    assert {"size", "view"} <= set(layer_names(net)) and layer_names(net, x) == ["conv", "fc"]
    sub = measure(net, x, layers=["fc", "conv"])
    assert list(sub.layer) == ["conv", "fc"]  # execution order
    pd.testing.assert_frame_equal(sub.reset_index(drop=True), df.reset_index(drop=True))
    out = measure(net, x, layers="output")
    assert list(out.layer) == ["fc"] and out.depth.iloc[0] == 2 and out.rel_depth.iloc[0] == 1.0
    with pytest.raises(ValueError, match="layers"):
        measure(net, x, layers=["size"])
    with pytest.raises(ValueError, match="reshape"):
        measure(net, x, layers=["view"])


def test_measure_reproducible_and_float32(small):
    x = torch.randn(8, 3, 8, 8, generator=gen(2))
    a = measure(small, x, seed=4)
    pd.testing.assert_frame_equal(a, measure(small, x, seed=4))
    b = measure(small, x, seed=5)
    assert not (a.D == b.D).all()
    c = measure(small, x, seed=4, dtype=torch.float32)
    for col in ("D_f", "G_f", "R_f"):
        assert ((c[col] - a[col]).abs() / a[col]).max() < 1e-4
    # explicit probes give the same numbers as the seed that made them
    pd.testing.assert_frame_equal(a, measure(small, draw_probes(x, seed=4)))


def test_measure_1d_conv_net_with_probes():
    net = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(3, 1)).double()
    x = torch.randn(7, 2, 20, generator=gen(0), dtype=torch.float64)
    xt = torch.roll(x, 1, dims=-1)
    xe = noisy_batch(x, xt, generator=gen(1))
    df = measure(net, Probes(x, xt, xe))
    assert list(df.layer) == ["0", "1", "2", "4"]  # "3" (Flatten) repeats the pooled values
    pd.testing.assert_frame_equal(df, measure(net, (x, xt, xe)))  # any three tensors
    with torch.no_grad():
        D, deno = stability(net(x), net(xt))
        G, _ = stability(net(x), net(xe))
    assert (df.D.iloc[-1], df.G.iloc[-1], df.deno.iloc[-1]) == pytest.approx((D, G, deno), rel=1e-10)
    # a circular conv commutes with the shift: D of the pooled output is ~0
    assert df.D.iloc[2] < 1e-20


# ------------------------------------------------------------------------------------ shuffling
def _perm_between(w, ws, axis):
    """Permutation p with ws == w.index_select(axis, p), or None."""
    a, b = w.movedim(axis, 0).flatten(1), ws.movedim(axis, 0).flatten(1)
    p = []
    for row in b:
        hits = (a == row).all(1).nonzero().flatten()
        if len(hits) != 1:
            return None
        p.append(int(hits[0]))
    return p if sorted(p) == list(range(len(p))) else None


def test_shuffle_mode1_keeps_spatial_sums_and_filter_multisets():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 6, 3, bias=False),
                        nn.Conv1d(6, 4, 2), nn.Flatten(), nn.Linear(4, 2))
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    s = shuffle_channels(net, mode=1, generator=gen(0))
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref[k])  # original untouched
    moved = 0
    for k, w in ref.items():
        ws = s.state_dict()[k]
        if w.ndim < 3:
            assert torch.equal(ws, w), k  # biases, batch-norm, linear untouched
            continue
        p = _perm_between(w, ws, axis=1)
        assert p is not None, k  # one permutation of the input channels, the same for every output channel
        moved += p != sorted(p)
        torch.testing.assert_close(ws.sum(1), w.sum(1))  # spatial sum per output channel
        for o in range(w.shape[0]):  # multiset of k x k filters per output channel
            assert sorted(map(tuple, w[o].flatten(1).tolist())) == sorted(map(tuple, ws[o].flatten(1).tolist()))
    assert moved >= 2
    s2 = shuffle_channels(net, mode=1, generator=gen(0))
    for k, v in s.state_dict().items():
        assert torch.equal(v, s2.state_dict()[k])


def test_shuffle_mode2_permutes_output_channels_too():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3)
    s = shuffle_channels(conv, mode=2, generator=gen(1))
    w, ws = conv.weight.detach(), s.weight.detach()
    assert torch.equal(s.bias, conv.bias)
    assert _perm_between(w, ws, axis=1) is None  # not just an input permutation
    key = lambda t: [sorted(t[o].flatten().tolist()) for o in range(t.shape[0])]  # noqa: E731
    kw, kws = key(w), key(ws)
    po = [kw.index(k) for k in kws]  # output channel o of the copy comes from po[o]
    assert sorted(po) == list(range(6)) and po != sorted(po)
    assert _perm_between(w[po], ws, axis=1) is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_cuda_matches_cpu(small):
    x = torch.randn(6, 3, 8, 8, generator=gen(8))
    a = measure(small, x, seed=3)
    b = measure(small, x.cuda(), seed=3, device="cuda")
    for col in ("D", "G", "deno"):
        assert ((a[col] - b[col]).abs() / a[col]).max() < 1e-9


# --------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("call, word", [
    (lambda m: stability(torch.zeros(4, 3), torch.zeros(4, 2)), "shape"),
    (lambda m: stability(torch.zeros(1, 3), torch.zeros(1, 3)), "P = 2"),
    (lambda m: stability(torch.full((3, 2), math.nan), torch.zeros(3, 2)), "NaN"),
    (lambda m: stability(torch.zeros(3, 2), torch.full((3, 2), math.inf)), "NaN"),
    (lambda m: measure(m, torch.zeros(4, 3, 8, 8), layers="every"), "layers"),
    (lambda m: measure(m, torch.zeros(4, 3, 8, 8), layers=["conv9"]), "layers"),
    (lambda m: measure(m, torch.zeros(1, 3, 8, 8)), "P = 2"),
    (lambda m: measure(m, torch.full((4, 3, 8, 8), math.nan)), "NaN"),
    (lambda m: measure(m, torch.zeros(4, 3, 8, 9)), "square"),
    (lambda m: measure(m, torch.zeros(4, 3, 8, 8), interpolation="bicubic"), "interpolation"),
    (lambda m: measure(m, torch.zeros(4, 3, 8, 8), delta=-1.0), "delta"),
    (lambda m: measure(m, torch.zeros(4, 3, 8, 8), cut=1), "cut"),
    (lambda m: measure(m, draw_probes(torch.zeros(4, 3, 8, 8)), delta=2.0), "delta"),
    (lambda m: measure(m, draw_probes(torch.zeros(4, 3, 8, 8)), seed=2), "seed"),
    (lambda m: measure(m, torch.zeros(4, 3, 8, 8), relu_convention="post"), "relu_convention"),
    (lambda m: measure(m, None), "probes"),
    (lambda m: measure(m, torch.zeros(4, 3, 8, 8), batch_size=0), "batch_size"),
    (lambda m: measure(m, (torch.zeros(4, 3, 8, 8),) * 2), "probes"),
    (lambda m: measure(m, (torch.zeros(4, 3, 8, 8),) * 2 + (torch.zeros(3, 3, 8, 8),)), "probes"),
    (lambda m: measure(m, torch.zeros(4, 3, 8)), "x"),
    (lambda m: shuffle_channels(m, mode=5), "mode"),
])
def test_errors(small, call, word):
    with pytest.raises(ValueError, match=word):
        call(small)


def test_float32_forward_runs_dense_head_in_float64():
    # A head whose outputs are dominated by a large bias: a float32 head would round them at
    # eps * |bias| ~ 1e-3 and swamp the small output differences; promoted to float64 it does not.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(32, 10))
    with torch.no_grad():
        net[-1].bias.fill_(1e4)
    x = torch.rand(32, 3, 8, 8, dtype=torch.float64)
    ref = measure(net, x, dtype=torch.float64, layers="output")
    fast = measure(net, x, dtype=torch.float32, layers="output")
    for col in ("D_f", "G_f", "R_f"):
        assert abs(fast[col].iloc[0] / ref[col].iloc[0] - 1) < 1e-5, col
    assert net[-1].weight.dtype == torch.float32  # the user's model is untouched


# ------------------------------------------------------------------------------------- probe sets
def test_draw_probes_returns_probes_and_measure_takes_them(small):
    x = torch.randn(6, 3, 8, 8, generator=gen(2))
    probes = draw_probes(x, delta=1.0, cut=3, interpolation="bilinear", generator=gen(4))
    assert isinstance(probes, Probes) and probes._fields == ("x", "x_tau", "x_eta")
    assert all(t.dtype == torch.float64 and t.shape == x.shape for t in probes)
    again = draw_probes(x, seed=4)  # a seed is a CPU generator seeded with it
    assert all(torch.equal(a, b) for a, b in zip(probes, again))
    with pytest.raises(TypeError, match="interp"):  # one spelling: interpolation
        draw_probes(x, interp="bilinear", seed=4)
    with pytest.raises(ValueError, match="interpolation.*bilinear"):
        draw_probes(x, interpolation="linear", seed=4)
    table = measure(small, probes)
    pd.testing.assert_frame_equal(table, measure(small, x, seed=4))  # images: drawn with the defaults
    pd.testing.assert_frame_equal(table, measure(small, tuple(probes)))
    for bad in ({"layer": "all"}, {"x": x}, {"interp": "bilinear"}, {"shuffle_channels": 1}):
        with pytest.raises(TypeError, match="unexpected keyword"):
            measure(small, probes, **bad)
    with pytest.raises(TypeError, match="positional"):  # the probes are the second positional argument
        measure(small, probes=probes)


# ------------------------------------------------------------------------------ checks of the input
@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0", "cuda0"])
def test_measure_device_strings_checked(small, device):
    x = torch.randn(4, 3, 8, 8, generator=gen(0))
    with pytest.raises(ValueError, match="device"):
        measure(small, x, device=device)


def test_measure_device_auto_and_absent_cuda(small):
    x = torch.randn(4, 3, 8, 8, generator=gen(0), dtype=torch.float64)
    if not torch.cuda.is_available():
        pd.testing.assert_frame_equal(measure(small, x, device="auto"), measure(small, x, device="cpu"))
        with pytest.raises(ValueError, match="device='cuda'.*not available"):
            measure(small, x, device="cuda")


def test_measure_channel_mismatch_names_x(small):
    with pytest.raises(ValueError, match=r"x has 1 channels .* 'conv1' takes 3"):
        measure(small, torch.randn(4, 1, 8, 8, generator=gen(0)))
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))  # no convolution to check: the forward tells
    with pytest.raises(ValueError, match=r"x \(shape \(4, 3, 3, 3\)\) does not fit the model"):
        measure(net, torch.randn(4, 3, 3, 3, generator=gen(0)))
    with pytest.raises(ValueError, match=r"probes.x has 1 channels"):
        measure(small, draw_probes(torch.randn(4, 1, 8, 8, generator=gen(0))))


def test_measure_refuses_uint8_and_integer_inputs(small):
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=gen(0), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"uint8.*x.float\(\) / 255"):
        measure(small, x)
    with pytest.raises(ValueError, match=r"uint8.*/ 255"):
        draw_probes(x)
    p = draw_probes(x.double() / 255)
    with pytest.raises(ValueError, match=r"probes.x_tau must be a floating tensor"):
        measure(small, Probes(p.x, p.x_tau.long(), p.x_eta))


# ----------------------------------------------------------------------------- depth and reshapes
def test_reshape_nodes_are_not_layers():
    class Reshaper(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1)
            self.flat = nn.Flatten()
            self.fc = nn.Linear(3 * 6 * 6, 4)

        def forward(self, x):
            h = self.conv(x).contiguous()
            h = torch.relu(h.permute(0, 1, 3, 2).reshape(x.shape[0], 3, 6, 6))
            return self.fc(self.flat(h)).unsqueeze(1).squeeze(1)  # the output is a reshape: still a layer

    net = Reshaper().double()
    x = torch.randn(5, 2, 6, 6, generator=gen(0), dtype=torch.float64)
    df = measure(net, x)
    assert list(df.layer) == ["conv", "relu", "fc", "squeeze"]
    assert list(df.depth) == [1, 2, 3, 4] and list(df.rel_depth) == [0.25, 0.5, 0.75, 1.0]
    assert layer_names(net, x) == list(df.layer)
    # the dropped nodes repeat the values of the node before them
    assert (df.D.iloc[-1], df.G.iloc[-1]) == pytest.approx((df.D.iloc[-2], df.G.iloc[-2]), rel=1e-12)


# ----------------------------------------------------------------------------- in-place ReLUs
class InplaceSmall(Small):
    """Small with a second in-place ReLU directly after conv2 (the VGG pattern)."""

    def __init__(self):
        super().__init__()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.relu(self.bn(self.conv1(x)))
        h = h + self.relu2(self.conv2(h))
        return self.fc(torch.flatten(self.pool(h), 1))


def test_relu_convention_inplace_reports_post_relu_values():
    torch.manual_seed(0)
    net = InplaceSmall().double()
    x = torch.randn(9, 3, 8, 8, generator=gen(3), dtype=torch.float64)
    true = measure(net, x, seed=1).set_index("layer")
    orig = measure(net, x, seed=1, relu_convention="inplace").set_index("layer")
    assert list(true.index) == list(orig.index) == ["conv1", "bn", "relu", "conv2", "relu2", "add", "pool", "fc"]
    cols = ["D", "G", "deno"]
    # true values: bn and conv2 as a hand-written forward without in-place ops gives them
    x0, xt, xe = draw_probes(x, seed=1)
    with torch.no_grad():
        acts = [small_activations(net, t) for t in (x0, xt, xe)]
    D, deno = stability(acts[0]["bn"], acts[1]["bn"])
    assert (true.loc["bn", "D"], true.loc["bn", "deno"]) == pytest.approx((D, deno), rel=1e-10)
    # original convention: the nodes a ReLU overwrites show the ReLU's values, the others are unchanged
    for node, relu in [("bn", "relu"), ("conv2", "relu2")]:
        assert tuple(orig.loc[node, cols]) == pytest.approx(tuple(true.loc[relu, cols]), rel=1e-12)
        assert abs(orig.loc[node, "D"] / true.loc[node, "D"] - 1) > 1e-3
    for node in ["conv1", "relu", "relu2", "add", "pool", "fc"]:
        assert tuple(orig.loc[node, cols]) == tuple(true.loc[node, cols])
    assert list(orig.depth) == list(true.depth) and list(orig.kind) == list(true.kind)
    # without in-place ReLUs the convention changes nothing
    plain = Small().double()
    plain.relu.inplace = False
    pd.testing.assert_frame_equal(measure(plain, x, seed=1), measure(plain, x, seed=1, relu_convention="inplace"))


def test_vgg11_first_conv_inplace_convention_at_init():
    # The original VGG11's in-place ReLUs make its first conv node report the post-ReLU value: a larger D_f
    # at initialisation (issue: 0.113 against the true 0.091 with CIFAR-10 probes, P = 500, float64).
    from stabkit import nets

    torch.manual_seed(0)
    vgg = nets.build("VGG11", width_factor=0.25).double()
    original = copy.deepcopy(vgg)
    for m in original.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = True  # as in the original code
    x = F.avg_pool2d(torch.randn(24, 3, 64, 64, generator=gen(0), dtype=torch.float64), 2)  # smooth images
    probes = draw_probes(x, generator=gen(1))
    layers = ["features.conv1", "features.relu1", "features.conv2"]
    true = measure(vgg, probes, layers=layers).set_index("layer")
    pd.testing.assert_frame_equal(true, measure(original, probes, layers=layers).set_index("layer"))
    orig = measure(original, probes, layers=layers, relu_convention="inplace").set_index("layer")
    assert orig.loc["features.conv1", "D_f"] == pytest.approx(true.loc["features.relu1", "D_f"], rel=1e-12)
    assert orig.loc["features.conv1", "D_f"] > 1.1 * true.loc["features.conv1", "D_f"]


# ------------------------------------------------------------------------------------------ TF32
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_float32_on_cuda_turns_tf32_off(small):
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision))
            return x

    net = nn.Sequential(copy.deepcopy(small), Probe())
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    try:
        a = measure(net, torch.randn(6, 3, 8, 8, generator=gen(8)), device="cuda", dtype=torch.float32)
        assert seen and all(s == ("ieee", "ieee") for s in seen)
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # restored
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before
    b = measure(small, torch.randn(6, 3, 8, 8, generator=gen(8)), device="cpu")
    for col in ("D_f", "G_f", "R_f"):
        assert ((a[col].iloc[:len(b)].to_numpy() - b[col].to_numpy()) / b[col].to_numpy()).max() < 1e-5
