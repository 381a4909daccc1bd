"""Synthetic tidy run tables whose truth is known, shared by the report tests (no networks)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from stabkit.report import robustness_claims


EIGEN_3 = {0.0: 1, 1.0: 2, 2.0: 1, 3.0: 2, 4.0: 2, 6.0: 1}


def synthetic_output(seed: int = 0, run_column: bool = False, falls: float = 2.0) -> pd.DataFrame:
    """Output table: trained R_f = 10**-falls * spread, eps_t = 0.2 sqrt(R_f) * small noise; init R_f ~ 1;
    G_f grows 10x with training."""
    rng = np.random.default_rng(seed)
    rows = []
    for net_i, net in enumerate(["VGG11", "LeNet", "ResNet18"]):
        for s in (0, 1):
            for noise in (0.0, 1.0, 10.0):
                r_tr = 10 ** (-falls + 0.5 * net_i + 0.1 * np.log10(1 + noise) + rng.normal(0, 0.05))
                err = 0.2 * np.sqrt(r_tr) * 10 ** rng.normal(0, 0.02)
                g_init = 0.1 * 10 ** rng.normal(0, 0.1)
                cfg = dict(net=net, seed=s, noise_std=noise, dataset="cifar10", device="cpu")
                if run_column:
                    cfg["run"] = f"{net}-{s}-{noise}"
                r_init = 10 ** rng.normal(0, 0.1)
                for state, r, g in (("init", r_init, g_init), ("trained", r_tr, 10 * g_init)):
                    rows.append(dict(cfg, state=state, shuffle=0, R_f=r, G_f=g, D_f=r * g,
                                     D=r * g, G=g, deno=1.0, P=100,
                                     test_err=err if state == "trained" else 0.9))
    return pd.DataFrame(rows)


def synthetic_layers(second_half_gap: float = 1.0, first_half_gap: float = 0.0,
                     n_layers: int = 10) -> pd.DataFrame:
    rows = []
    for net in ("VGG11", "AlexNet"):
        for s in (0, 1):
            for i in range(n_layers):
                rd = i / (n_layers - 1)
                r_tr = 10 ** (-2 * rd)
                gap = first_half_gap if rd <= 0.5 else second_half_gap
                for state, shuffle, r in (("init", 0, 1.0), ("trained", 0, r_tr),
                                          ("trained", 1, r_tr * 10 ** gap)):
                    rows.append(dict(net=net, seed=s, layer=f"l{i}", depth=i + 1, rel_depth=rd,
                                     state=state, shuffle=shuffle, R_f=r, D_f=r, G_f=1.0, P=50))
    return pd.DataFrame(rows)


def synthetic_spectra(trained_zero: float | dict[str, float] = 0.6, nets=("VGG11", "LeNet", "AlexNet"),
                      well_trained: bool | None = True) -> pd.DataFrame:
    """Spectra of 2 seeds per net (``trained_zero``: the trained early layers' fraction at lambda = 0, one
    for all or per net); ``well_trained``: the convergence column joined (None: left out)."""
    rows = []
    for net in nets:
        tz = trained_zero[net] if isinstance(trained_zero, dict) else trained_zero
        for s in (0, 1):
            for i in range(4):
                rd = i / 3
                for state in ("init", "trained"):
                    for lam, mult in EIGEN_3.items():
                        if state == "init":
                            frac = mult / 9
                        elif rd <= 0.5:
                            frac = tz if lam == 0 else (1 - tz) * mult / 8
                        else:
                            frac = mult / 9
                        rows.append(dict(net=net, seed=s, layer=f"features.{3 * i}", depth=i,
                                         rel_depth=rd, kernel_size=3, eigenvalue=lam,
                                         energy=2.0 * frac, fraction=frac, state=state))
    df = pd.DataFrame(rows)
    return df if well_trained is None else df.assign(well_trained=well_trained)


def curves_table(k2_kept: float = 0.76, kmax_acc: float = 20.0, salient_gap: float = -5.0) -> pd.DataFrame:
    """Accuracy curves (%) as robustness_claims.accuracy_curves returns them, for masking (variant) and patch
    shuffling (mode), two nets trained without rotations."""
    rows = []
    for net, clean in (("VGG11bn", 80.0), ("LeNet", 60.0)):
        for k, acc in ((1, clean), (2, clean * k2_kept), (4, 0.5 * clean), (8, kmax_acc)):
            rows.append(dict(net=net, training="unrotated", mode="full", variant=None, magnitude=float(k),
                             mean=acc, sd=1.0, n=2))
        for f in (0.0, 0.5, 0.9):
            acc = clean * (1 - f)
            rows.append(dict(net=net, training="unrotated", mode=None, variant=robustness_claims.MASK_VARIANTS["mask"],
                             magnitude=f, mean=acc, sd=1.0, n=2))
            rows.append(dict(net=net, training="unrotated", mode=None,
                             variant=robustness_claims.MASK_VARIANTS["mask_saliency"], magnitude=f,
                             mean=acc + (salient_gap if f > 0 else 0.0), sd=1.0, n=2))
    return pd.DataFrame(rows)


def invariance_table(rotated_nv: float = 0.5) -> pd.DataFrame:
    rows = []
    for net in ("LeNet", "VGG11bn"):
        for tr, nv in (("unrotated", 0.8), ("rotated", rotated_nv)):
            for strat, bump in ((False, 0.0), (True, 0.1)):
                for seed in (0, 1):
                    for i, layer in enumerate(("a", "b", "c", "d")):
                        rows.append(dict(net=net, training=tr, stratified=strat, seed=seed, layer=layer,
                                         rel_depth=i / 3, mean_NV=nv + bump + 0.01 * i, run=f"{net}{tr}{seed}",
                                         n_activations=16, n_inf=0, reshape=False))
    return pd.DataFrame(rows)


CNNS = ["VGG11", "VGG11bn", "VGG16bn", "ResNet18", "ResNet34", "AlexNet", "EfficientNetB0"]


def paper_output(nets=CNNS, seeds=(0,), noise=(0.0,), err_of=None, rf_falls=2.0, g_grow=10.0,
                 g_noise=1.0, seed=0, probes=False) -> pd.DataFrame:
    """Output table of many nets: trained R_f = 10**-rf_falls * spread, error = 0.2 sqrt(R_f) (or
    ``err_of(net, noise)``), G_f x ``g_grow`` with training, x ``g_noise`` per decade of training noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, net in enumerate(nets):
        for s in seeds:
            for nz in noise:
                r_tr = 10 ** (-rf_falls + 0.15 * i + rng.normal(0, 0.03))
                err = err_of(net, nz) if err_of else 0.2 * np.sqrt(r_tr) * 10 ** rng.normal(0, 0.02)
                g0 = 0.1 * 10 ** rng.normal(0, 0.05)
                g_tr = g0 * g_grow * (g_noise ** np.log10(nz) if nz > 0 else 1.0)
                cfg = dict(net=net, seed=s, noise_std=nz, task="cifar10", run=f"{net}-{s}-{nz}")
                kinds = ("corrupted", "clean") if (probes and nz > 0) else ("clean",)
                for kind in kinds:
                    scale = 1.0 if kind != "clean" or nz == 0 else 1000.0  # clean rows: R_f far off
                    for state, r, g in (("init", 1.0, g0), ("trained", r_tr * scale, g_tr)):
                        rows.append(dict(cfg, state=state, shuffle=0, R_f=r, G_f=g, D_f=r * g, D=r * g, G=g,
                                         deno=1.0, P=100, test_err=err if state == "trained" else 0.9,
                                         **({"probes": kind} if probes else {})))
    return pd.DataFrame(rows)


def layers_table(nets=("VGG11", "AlexNet")) -> pd.DataFrame:
    rows = []
    for net in nets:
        for seed in (0, 1):
            for i in range(6):
                rd = i / 5
                for state, shuffle, r in (("init", 0, 1.0), ("trained", 0, 10 ** (-rd)),
                                          ("trained", 1, 10 ** (-rd + (rd > 0.5)))):
                    rows.append({"net": net, "seed": seed, "layer": f"l{i}", "depth": i, "rel_depth": rd,
                                 "state": state, "shuffle": shuffle, "D_f": r, "G_f": 1.0, "R_f": r})
    return pd.DataFrame(rows)


def legend_outside(fig) -> bool:
    """Every legend's box lies outside the data area of every axes (issue 13: legends off the data)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [leg for ax in fig.axes for leg in ([ax.get_legend()] if ax.get_legend() else [])] + fig.legends
    for leg in legends:
        box = leg.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible() and ax.has_data() and box.overlaps(ax.get_window_extent(renderer)):
                return False
    return True


def shuffle_layers(second_half_gap: float | dict[str, float] = 1.0, first_half_gap: float = 0.0,
                   nets=("VGG11bn", "ResNet18bn"), batchnorm: bool | dict[str, bool] = True,
                   falls: float | dict[str, float] = 2.0, g_part: float = 1.0, shuffles=(0, 1), seeds=(0, 1),
                   n_layers: int = 10, run_column: bool = True, recalibrated: bool = True) -> pd.DataFrame:
    """Layer rows of nets measured with and without channel shuffling: trained R_k = 10**(-falls * rel_depth)
    (init 1); shuffling raises R_k by ``first_half_gap`` decades up to mid-depth and ``second_half_gap``
    (one for all nets or per net) after, a fraction ``g_part`` of it through a lower G_k, the rest through a
    higher D_k. ``recalibrated``: the columns of the ``recalibrated`` table (``batchnorm``, per net or for
    all, ``test_err``, ``images``); else a ``layers`` table."""
    rows = []
    for net in nets:
        gap2 = second_half_gap[net] if isinstance(second_half_gap, dict) else second_half_gap
        fall = falls[net] if isinstance(falls, dict) else falls
        bn = batchnorm[net] if isinstance(batchnorm, dict) else batchnorm
        for s in seeds:
            for i in range(n_layers):
                rd = i / (n_layers - 1)
                gap = first_half_gap if rd <= 0.5 else gap2
                r_tr = 10 ** (-fall * rd)
                states = [("init", 0, 1.0, 1.0, 0.9)] + [
                    ("trained", sh, r_tr * (10 ** gap if sh else 1.0), 10 ** (-g_part * gap) if sh else 1.0,
                     0.5 if sh else 0.1) for sh in shuffles]
                for state, sh, r, g, err in states:
                    row = dict(net=net, seed=s, layer=f"l{i}", depth=i + 1, rel_depth=rd, features=64 * (i + 1),
                               state=state, shuffle=sh, R_f=r, G_f=g, D_f=r * g, P=50)
                    if run_column:
                        row["run"] = f"{net}-{s}"
                    if recalibrated:
                        row.update(test_err=err, batchnorm=bn, images=10000 if bn else 0)
                    rows.append(row)
    return pd.DataFrame(rows)
