"""Tests of stabkit.data.scale_detection: the two-pixel tasks (book/methods.md, "Tasks")."""
import itertools
import math

import pytest
import torch

from stabkit import data

# -------------------------------------------------------------------------------------------- twopoints
def _brute_force_counts(d, xi, gap, norm="L2", pbc=False):
    cand = [(r, c) for r in range(d) for c in range(d) if r != c]
    far = close = 0
    for a in range(len(cand)):
        r1, c1 = cand[a]
        for b in range(a + 1, len(cand)):
            dr, dc = abs(r1 - cand[b][0]), abs(c1 - cand[b][1])
            if pbc:
                dr, dc = min(dr, d - dr), min(dc, d - dc)
            dist = math.hypot(dr, dc) if norm == "L2" else max(dr, dc)
            if dist >= xi + gap / 2:
                far += 1
            elif dist < xi - gap / 2:
                close += 1
    return far, close


def test_twopoints_pair_counts_brute_force():
    far, close = data.twopoints_pairs(28, 14.0, 2.0)
    assert (len(far), len(close)) == _brute_force_counts(28, 14.0, 2.0)
    for kw in (dict(norm="Linf"), dict(pbc=True), dict(norm="Linf", pbc=True)):
        f, c = data.twopoints_pairs(9, 4.0, 2.0, **kw)
        assert (len(f), len(c)) == _brute_force_counts(9, 4.0, 2.0, **kw)
    for pairs in (far, close):
        assert (pairs[..., 0] != pairs[..., 1]).all()  # no diagonal positions
        assert (pairs[:, 0] != pairs[:, 1]).any(-1).all()  # two distinct points


def test_twopoints_split():
    tr = data.TwoPoints(ptr=512, seed=0)
    te = data.TwoPoints(ptr=512, train=False, seed=0)
    tr1 = data.TwoPoints(ptr=512, seed=1)
    te1 = data.TwoPoints(ptr=512, train=False, seed=1)
    assert tr.x.shape == (512, 1, 28, 28) and tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert te.x.shape == (2048, 1, 28, 28) and te.y.sum() == 1024  # testsize = 4 ptr, balanced
    assert abs(tr.y.float().mean().item() - 0.5) < 0.08  # drawn from a balanced pool
    assert torch.equal(te.positions, te1.positions) and not torch.equal(tr.positions, tr1.positions)

    def key(p):
        return {tuple(sorted(map(tuple, q.tolist()))) for q in p}
    assert not key(tr.positions) & key(te.positions)  # disjoint
    assert len(key(te.positions)) == len(te)
    for ds in (tr, te):
        assert torch.allclose(ds.x.mean(dim=(1, 2, 3)), torch.ones(len(ds)))  # mean pixel value 1
        assert ((ds.x > 0).sum(dim=(1, 2, 3)) == 2).all() and ds.x.max() == 28 * 28 / 2
        dist = (ds.positions[:, 0] - ds.positions[:, 1]).double().norm(dim=1)
        assert (dist[ds.y == 0] >= 15).all() and (dist[ds.y == 1] < 13).all()
        b = torch.arange(len(ds))
        for k in range(2):
            assert (ds.x[b, 0, ds.positions[:, k, 0], ds.positions[:, k, 1]] == 392).all()
    with pytest.raises(ValueError, match="norm"):
        data.TwoPoints(norm="L3")
    with pytest.raises(ValueError, match="ptr"):
        data.TwoPoints(ptr=100_000)


def test_twopoints_probes():
    te = data.TwoPoints(ptr=256, train=False)
    g = torch.Generator().manual_seed(5)
    x, x_tau, x_eta, pos, moved = data.twopoints_probes(te.positions, 28, P=300, generator=g, return_positions=True)
    assert x.shape == x_tau.shape == x_eta.shape == (300, 1, 28, 28)
    step = (moved - pos).abs().max(-1).values
    target_inside = ((pos > 0) & (pos < 27)).all(-1)
    assert (step[target_inside] == 1).all()  # Chebyshev distance 1 unless clipped
    assert (step <= 1).all() and (moved >= 0).all() and (moved <= 27).all()
    dirs = {tuple(v) for v in (moved - pos)[target_inside].tolist()}
    assert len(dirs) == 8  # all eight neighbours occur
    torch.testing.assert_close(x, data.twopoints_images(pos, 28))
    torch.testing.assert_close(x_tau, data.twopoints_images(moved, 28))
    n_tau = (x_tau - x).flatten(1).norm(dim=1)
    n_eta = (x_eta - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(n_eta, n_tau, rtol=1e-4, atol=1e-3)
    again = data.twopoints_probes(te.positions, 28, P=300, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(again, (x, x_tau, x_eta)))


# ----------------------------------------------------------------------------------------------- 1-D tasks
def test_scale1d_pairs_brute_force():
    L, xi, gap = 64, 16, 2
    pairs = list(itertools.combinations(range(L), 2))
    close = [p for p in pairs if min(p[1] - p[0], L - p[1] + p[0]) < xi - gap]
    far = [p for p in pairs if min(p[1] - p[0], L - p[1] + p[0]) >= xi + gap]
    neg, pos = data.scale1d_pairs(L, xi, gap, task=1)
    assert sorted(map(tuple, pos.tolist())) == close and sorted(map(tuple, neg.tolist())) == far
    neg, pos = data.scale1d_pairs(L, xi, gap, task=2)
    assert sorted(map(tuple, pos.tolist())) == [p for p in pairs if p[0] // xi == p[1] // xi]
    assert len(neg) + len(pos) == len(pairs)


@pytest.mark.parametrize("task", [1, 2])
def test_scale1d_dataset_and_probes(task):
    tr = data.ScaleDetection1D(L=128, xi=32, task=task, ptr=512)
    te = data.ScaleDetection1D(L=128, xi=32, task=task, ptr=512, train=False)
    assert tr.x.shape == (512, 1, 128) and te.x.shape[1:] == (1, 128)
    assert te.y.float().mean() == 0.5
    assert torch.allclose(tr.x.mean(dim=(1, 2)), torch.ones(len(tr)))
    same_block = (te.positions[:, 0] // 32) == (te.positions[:, 1] // 32)
    if task == 2:
        assert torch.equal(same_block, te.y.bool())
    x, x_tau, x_eta, pos, moved = data.scale1d_probes(te, P=200, generator=torch.Generator().manual_seed(0),
                                                      return_positions=True)
    assert x.shape == x_tau.shape == x_eta.shape == (200, 1, 128)
    delta = (moved - pos).abs()
    if task == 1:
        assert ((delta == 1) | (delta == 127)).all()  # +-1 on the periodic line
    else:
        assert (delta == 1).all() and torch.equal(moved // 32, pos // 32)  # never leaves its block
    torch.testing.assert_close((x_eta - x).flatten(1).norm(dim=1), (x_tau - x).flatten(1).norm(dim=1),
                               rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="task"):
        data.ScaleDetection1D(task=3)
    with pytest.raises(ValueError, match="task"):
        data.scale1d_probes(te.positions, 128, 10)  # a bare tensor does not say which task


@pytest.mark.parametrize("xi", [-3, 0, 1.0, 40.0])
def test_twopoints_bad_xi_is_named(xi):
    with pytest.raises(ValueError, match="xi"):  # -3 used to fail on "testsize" (an empty class)
        data.TwoPoints(xi=xi, ptr=16)


def test_twopoints_bad_gap_and_types():
    with pytest.raises(ValueError, match="gap"):
        data.twopoints_pairs(28, 14.0, -1.0)
    with pytest.raises(TypeError, match="xi"):
        data.twopoints_pairs(28, "14")
    with pytest.raises(ValueError, match="xi"):
        data.twopoints_pairs(28, float("nan"))



def test_empty_classes_are_allowed_by_the_enumerator():
    far, close = data.twopoints_pairs(9, 40.0, 2.0)  # TwoPoints refuses it; the raw enumeration does not
    assert len(far) == 0 and len(close) > 0
