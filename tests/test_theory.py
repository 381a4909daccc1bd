"""Tests of stabkit.theory (book/methods.md, "Constant-filter theory")."""
import math

import numpy as np
import pytest
import torch

from stabkit.theory import (ConstantFiltersCNN, constant_filter_replicates, constant_filter_stabilities, fit_exponents,
                            input_size, predicted_exponents, predicted_law, receptive_field, spread)


def test_receptive_field_values():
    assert receptive_field(3, 1, 0) == 3
    assert receptive_field(3, 1, 4) == 3 + 2 * 4
    assert receptive_field(2, 2, 3) == 2 + 2 + 4 + 8 == 2 ** 4
    assert receptive_field(3, 2, 2) == 3 + 2 * (2 + 4)
    assert receptive_field(5, 3, 2) == 5 + 4 * (3 + 9)
    assert input_size(2, 2, 6) == 129


@pytest.mark.parametrize("args, name", [((0, 1, 1), "f"), ((3, 0, 1), "s"), ((3, 1, -1), "l"),
                                        ((2.5, 1, 1), "f"), ((True, 1, 1), "f")])
def test_receptive_field_errors(args, name):
    with pytest.raises((TypeError, ValueError), match=rf"^{name} must"):  # TypeError: not an integer
        receptive_field(*args)


def test_numpy_integers_accepted():
    assert receptive_field(np.int64(3), np.int32(1), np.int64(4)) == receptive_field(3, 1, 4)
    assert ConstantFiltersCNN(np.int64(3), np.int64(1), np.int64(2)).depth == 2


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="kernel_size"):
        ConstantFiltersCNN(0, 1, 2)
    with pytest.raises(ValueError, match="stride"):
        ConstantFiltersCNN(3, 0, 2)
    with pytest.raises(ValueError, match="depth"):
        ConstantFiltersCNN(3, 1, 0)
    with pytest.raises(ValueError, match="bias"):
        ConstantFiltersCNN(3, 1, 2, bias=float("nan"))
    with pytest.raises(ValueError, match="seeds"):
        constant_filter_stabilities(3, 1, 2, seeds=0)
    with pytest.raises(ValueError, match="eta"):
        constant_filter_stabilities(3, 1, 2, eta=-1.0)
    with pytest.raises(ValueError, match="stride"):
        predicted_exponents(3, 2)  # no prediction for stride != 1 and != filter
    with pytest.raises(ValueError, match="quantity"):
        predicted_law("X", [1, 2], 3, 1)
    with pytest.raises(ValueError, match="position"):
        spread(3, 1, 2, position=100)


def test_constant_net_forward():
    net = ConstantFiltersCNN(3, 1, 2, bias=0.0).double()
    x = torch.zeros(1, 7, dtype=torch.float64)
    x[0, 3] = 1.0
    # one layer: [0, 0, 1/3, 1/3, 1/3, 0, 0]; two layers: box * box / 9 = [0, 1, 2, 3, 2, 1, 0] / 9
    np.testing.assert_allclose(net(x)[0].numpy(), np.array([0, 1, 2, 3, 2, 1, 0]) / 9, atol=1e-15)
    assert net(x[:, None]).shape == (1, 7)  # [B, 1, N] accepted too
    net = ConstantFiltersCNN(2, 2, 2, one_filters=True, bias=-0.5).double()
    y = net(torch.arange(8, dtype=torch.float64)[None])
    # layer 1: pair sums 1,5,9,13 -0.5 -> .5,4.5,8.5,12.5 ; layer 2: 5-0.5, 21-0.5
    np.testing.assert_allclose(y[0].numpy(), [4.5, 20.5])
    assert not any(p.requires_grad for p in net.parameters())


def test_fx_traceable_every_layer():
    from torchvision.models.feature_extraction import get_graph_node_names
    _, nodes = get_graph_node_names(ConstantFiltersCNN(3, 1, 3))
    for i in range(3):
        assert f"features.{2 * i}" in nodes and f"features.{2 * i + 1}" in nodes


def test_spread_drawing():
    df = spread(5, 1, 4)
    assert set(df.layer) == set(range(5))
    n = input_size(5, 1, 4)
    assert (df.groupby("layer").size() == n).all()
    # centred one-hot, stride 1, s/k filters: the mass stays 1 while the support grows by 4 per layer
    np.testing.assert_allclose(df.groupby("layer").value.sum(), 1.0)
    assert ((df.value > 0).groupby(df.layer).sum().to_numpy() == [1, 5, 9, 13, 17]).all()
    df = spread(2, 2, 5, position=37)
    per_layer = df[df.value > 0].groupby("layer")
    assert (per_layer.size() == 1).all() and np.allclose(per_layer.value.sum(), 1.0)
    assert list(per_layer.position.first()) == [37 >> l for l in range(6)]


def test_stabilities_table_and_input_layer():
    df = constant_filter_stabilities(3, 1, 4, seeds=2)
    assert list(df.layer) == list(range(5))
    n = input_size(3, 1, 4)
    assert (df.P == n - 1).all()
    # layer 0: one-hot inputs, ||tau x - x||^2 = 2, deno = 2 (1 - 1/P) for P orthonormal vectors
    P = n - 1
    np.testing.assert_allclose(df.D[0], 2.0)
    np.testing.assert_allclose(df.deno[0], 2 * (1 - 1 / P) + 1e-10)
    # rectified norm-matched noise keeps about half of ||eta||^2 = 2
    assert 0.7 < df.G[0] < 1.3
    np.testing.assert_allclose(df.R_f, df.D / df.G)
    np.testing.assert_allclose(df.D_f, df.D / df.deno)
    # fixed noise norm
    dfe = constant_filter_stabilities(3, 1, 4, eta=0.1, rectify_noise=False)
    np.testing.assert_allclose(dfe.G[0], 0.01)


def test_stride1_depth_laws():
    """Stride 1: D ~ l^-1, G ~ l^(1/2), R ~ l^(-3/2).

    The laws are asymptotic. With N = RF + 1 the spread (~sqrt(l)) and the ||mean||^2 term of deno
    (~1/N) give finite-size corrections that fade slowly: fitting layers L/4..L with k=3 gives
    D -0.68 (L=8), -0.86 (L=50), -0.905 (L=100). We use L = 100 (under a second), tolerance 0.12 on
    the D and R exponents and 0.05 on G, and check that the deviation shrinks with depth.
    """
    pred = predicted_exponents(3, 1)
    deep = fit_exponents(constant_filter_stabilities(3, 1, 100, seeds=2), 1, first_layer=25)
    shallow = fit_exponents(constant_filter_stabilities(3, 1, 24, seeds=2), 1, first_layer=6)
    assert abs(deep["D"] - pred["D"]) < 0.12
    assert abs(deep["G"] - pred["G"]) < 0.05
    assert abs(deep["R"] - pred["R"]) < 0.12
    assert abs(deep["D"] - pred["D"]) < abs(shallow["D"] - pred["D"])


def test_stride2_depth_laws():
    """Stride = filter = 2: D ~ 2^-l, G ~ 2^l, R ~ 4^-l (fit over layers 1..8, tolerance 0.1)."""
    df = constant_filter_stabilities(2, 2, 8, seeds=2)
    fit = fit_exponents(df, 2)
    pred = predicted_exponents(2, 2)
    for q in "DGR":
        assert abs(fit[q] - pred[q]) < 0.1, (q, fit, pred)
    # the R law is NOT constant (bug of the original notebook): R falls by > 2 decades over 8 layers
    assert df.R_f.iloc[8] < 1e-2 * df.R_f.iloc[1]


def test_predicted_laws():
    l = np.arange(1, 6)
    np.testing.assert_allclose(predicted_law("R_f", l, 2, 2), 4.0 ** -l)
    np.testing.assert_allclose(predicted_law("D", l, 2, 2), 2.0 ** -l)
    np.testing.assert_allclose(predicted_law("G", l, 2, 2, prefactor=3), 3 * 2.0 ** l)
    np.testing.assert_allclose(predicted_law("R", l, 5, 1), l ** -1.5)
    np.testing.assert_allclose(predicted_law("G", l, 3, 1), np.sqrt(l))
    np.testing.assert_allclose(predicted_law("D", l, 3, 1) / predicted_law("G", l, 3, 1),
                               predicted_law("R", l, 3, 1))


def test_bias_changes_noise_response():
    """k=3, s=2, L=4 (the notebook's bias study), unrectified noise of norm eta.

    Without bias the net is positively homogeneous, so G_f / eta^2 does not depend on eta. A bias b > 0
    makes it locally linear for eta << b (a different, smaller response) and the bias-free value comes
    back for eta >> b.
    """
    def response(eta, bias):
        df = constant_filter_stabilities(3, 2, 4, eta=eta, bias=bias, rectify_noise=False, seeds=2)
        assert math.isclose(df.eta[0], eta)
        return df.G_f.iloc[-1] / eta ** 2

    free_small, free_large = response(1e-3, 0.0), response(1.0, 0.0)
    assert math.isclose(free_small, free_large, rel_tol=0.05)
    assert response(1e-3, 1e-1) < 0.85 * free_small
    assert math.isclose(response(1.0, 1e-4), free_large, rel_tol=0.05)


def test_measure_sees_every_layer_and_agrees():
    from stabkit.stability import measure

    from stabkit.theory import one_hot_probes
    net = ConstantFiltersCNN(3, 2, 3, bias=0.01).double()
    table = measure(net, one_hot_probes(3, 2, 3, seed=0))
    assert {f"features.{i}" for i in range(6)} <= set(table.layer)  # every conv and ReLU node
    ours = constant_filter_stabilities(3, 2, 3, seeds=1, bias=0.01)
    for l in range(1, 4):
        row = table[table.layer == f"features.{2 * l - 1}"].iloc[0]
        for q in ("D_f", "G_f", "R_f"):
            assert math.isclose(row[q], ours[q][l], rel_tol=1e-9), (l, q)


def test_constant_filter_replicates_are_one_noise_draw_each():
    reps = constant_filter_replicates(2, 2, 4, seeds=3)
    assert sorted(reps["seed"].unique()) == [0, 1, 2] and len(reps) == 3 * 5
    first = constant_filter_stabilities(2, 2, 4, seeds=1)
    np.testing.assert_allclose(reps[reps["seed"] == 0]["G_f"].to_numpy(), first["G_f"].to_numpy())
    third = constant_filter_stabilities(2, 2, 4, seeds=1, first_seed=2)
    np.testing.assert_allclose(reps[reps["seed"] == 2]["G_f"].to_numpy(), third["G_f"].to_numpy())
    d = reps.pivot(index="layer", columns="seed", values="D_f")  # the shift does not depend on the draw
    np.testing.assert_allclose(d[0], d[2])
    assert not np.allclose(reps[reps["seed"] == 0]["G_f"].iloc[1:], reps[reps["seed"] == 1]["G_f"].iloc[1:])
    with pytest.raises(ValueError, match="seeds"):
        constant_filter_replicates(2, 2, 4, seeds=2, first_seed=1)
