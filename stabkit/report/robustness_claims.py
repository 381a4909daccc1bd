"""The related probes' pages: their accuracy and NV tables and the claims on them. Masking, patch
shuffling, resolution transfer and rotation: the accuracy curves of a probe family
(:func:`accuracy_curves`, shown with :func:`curves_table`), the masking set-up (:func:`masking_probes`),
the pixelation curves (:func:`pixelate_curves`), the global NV of the ``invariance`` table
(:func:`global_nv_table`), and the ``claim_*`` functions checked on them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .tables import config_values, require_columns, select
from .verdicts import Claim

__all__ = [
    "MASK_VARIANTS", "SHUFFLE_MODES", "resampling_label", "accuracy_curves", "per_net", "curves_table",
    "rotation_kept", "global_nv_table", "mode_difference", "masking_probes", "pixelate_curves",
    "claim_mask_falls", "claim_saliency_first", "claim_patch_shuffle_falls", "claim_patch_shuffle_k2",
    "claim_patch_shuffle_chance", "claim_transfer_loses", "claim_transfer_loss_size", "claim_rotation_lowers_nv",
    "claim_nv_in_reference_range", "claim_stratified_raises_nv", "claim_rotation_flattens_accuracy",
]


def resampling_label(df: pd.DataFrame) -> pd.Series:
    """How a resolution-probe run resampled its images, as a label: ``"<interpolation>"`` plus ``", no
    antialias"`` without antialiasing; read from ``interpolation`` / ``antialias`` columns (the ``resolution``
    table) or from the run's ``net_options`` (``nearest`` for nearest-neighbour resampling)."""
    if {"interpolation", "antialias"} <= set(df.columns):
        return df["interpolation"].astype(str) + np.where(df["antialias"].astype(bool), "", ", no antialias")
    interpolation = config_values(df, "net_options", "interpolation", "bilinear")
    aa = config_values(df, "net_options", "antialias", True)
    return pd.Series(["nearest" if i == "nearest" else "bilinear" + ("" if a else ", no antialias")
                      for i, a in zip(interpolation, aa)], index=df.index)


def _robustness():
    from stabkit import robustness  # torch: imported when a probe table is shaped, so that page() stays torch-free

    return robustness


def accuracy_curves(acc: pd.DataFrame, variants: dict[str, str], by: Sequence[str] = ("net", "training"),
                    variant: str = "variant") -> pd.DataFrame:
    """Accuracy (%) against magnitude, all classes, per ``by`` group and probe variant.

    ``acc``: the ``accuracy`` run table (``probe``, ``label``, ``magnitude``, ``accuracy`` in [0, 1]).
    ``variants``: probe name -> label (rows of other probes are left out). Returns ``by + [variant,
    "magnitude", "mean", "sd", "n"]`` (mean and sample sd over seeds, in %).
    """
    require_columns(acc, ["probe", "label", "magnitude", "accuracy"], "acc")
    s = acc[(acc["label"] < 0) & acc["probe"].isin(list(variants))].copy()
    s[variant] = s["probe"].map(variants)
    s["accuracy"] = 100 * s["accuracy"]
    keys = [c for c in by if c in s.columns] + [variant, "magnitude"]
    return _robustness().summarize(s, by=tuple(keys))


def per_net(curves: pd.DataFrame, value: str = "mean", **where) -> pd.DataFrame:
    """``curves`` rows matching ``where`` as a net x magnitude table of ``value``."""
    rows = select(curves, **where)
    return rows.pivot_table(index="net", columns="magnitude", values=value)


def curves_table(curves: pd.DataFrame, index: Sequence[str], value: str = "mean", decimals: int = 1) -> pd.DataFrame:
    """``curves`` (:func:`accuracy_curves`) for display: one row per ``index`` group, one column per
    magnitude, ``value`` rounded to ``decimals``; a combination that was not measured (a mode without that
    magnitude, a failed run) reads as an en dash, never "NaN" (``make check-book`` fails on NaN in a table).
    """
    index = [index] if isinstance(index, str) else list(index)
    require_columns(curves, [*index, "magnitude", value], "curves")
    wide = curves.pivot_table(index=index, columns="magnitude", values=value).round(decimals)
    # object columns: a number stays a number, a missing one becomes the dash
    return wide.astype(object).where(wide.notna(), "\u2013")


def rotation_kept(acc: pd.DataFrame) -> pd.DataFrame:
    """Per net and training: accuracy (%) on upright images (``clean``) and the mean over the other
    angles divided by it (``kept``), from the ``rotate`` probe rows of all classes."""
    require_columns(acc, ["probe", "label", "magnitude", "accuracy", "net", "training"], "acc")
    r = acc[(acc["probe"] == "rotate") & (acc["label"] < 0)]
    allr = r.groupby(["net", "training", "magnitude"], as_index=False)["accuracy"].mean()
    allr["accuracy"] *= 100
    clean = allr[allr["magnitude"] == 0].set_index(["net", "training"])["accuracy"]
    rotd = allr[allr["magnitude"] != 0].groupby(["net", "training"])["accuracy"].mean()
    out = pd.DataFrame({"clean": clean, "rotated": rotd}).dropna()
    out["kept"] = out["rotated"] / out["clean"]
    return out.reset_index()


#: Masking probes of the ``probe_masking`` sweep -> the variant labels on the page.
MASK_VARIANTS = {"mask": "random, zero fill", "mask_saliency": "salient first, zero fill",
                 "mask_mean": "random, mean fill"}


#: Patch-shuffling probes -> the ``mode`` labels on the page.
SHUFFLE_MODES = {"patch_shuffle": "full", "patch_shuffle_rows_cols": "rows_cols"}


def global_nv_table(inv: pd.DataFrame) -> pd.DataFrame:
    """Global mean NV (:func:`stabkit.robustness.global_nv`) per run, then averaged over seeds: one row
    per ``net``, ``training`` and ``stratified`` with ``global_NV``."""
    require_columns(inv, ["net", "training", "seed", "stratified", "mean_NV"], "inv")
    g = _robustness().global_nv(inv, by=("net", "training", "seed", "stratified"))
    return g.groupby(["net", "training", "stratified"], as_index=False)["global_NV"].mean()


def mode_difference(curves: pd.DataFrame, a: str, b: str, column: str = "mode", training: str = "unrotated",
                    above: float = 1.0) -> float:
    """Mean over nets and magnitudes ``> above`` of ``curves`` accuracy of ``column == a`` minus
    ``column == b`` (e.g. patch shuffling rows_cols minus full), for nets trained ``training``."""
    u = select(curves, training=training)
    keys = ["net", "magnitude"]
    both = (u[u[column] == a].merge(u[u[column] == b], on=keys, suffixes=("_a", "_b")))
    both = both[both["magnitude"] > above]
    return float((both["mean_a"] - both["mean_b"]).mean()) if len(both) else float("nan")


def masking_probes(acc: pd.DataFrame, probe: str = "mask") -> tuple[int, list[float]]:
    """The set-up of the masking probe ``probe`` in the ``accuracy`` table ``acc``: the tile size in pixels
    (its ``options.patch``, read with :func:`~stabkit.report.tables.config_values`) and the masked fractions
    (its magnitudes, sorted), what the page's example images show."""
    require_columns(acc, ["probe", "magnitude"], "acc")
    m = acc[acc["probe"] == probe]
    if m.empty:
        raise ValueError(f"acc holds no row of the probe {probe!r} (probes: {sorted(acc['probe'].unique())})")
    return int(config_values(m, "options", "patch").iloc[0]), sorted(m["magnitude"].unique())


def pixelate_curves(acc: pd.DataFrame, default_source: int = 16) -> pd.DataFrame:
    """Accuracy (%) against the pixelation factor (:func:`accuracy_curves` of the ``pixelate`` probe rows of
    ``acc``), per training resolution ``source`` (the run's ``net_options.source_size``, ``default_source``
    when it sets none) and ``resampling`` (:func:`resampling_label`)."""
    require_columns(acc, ["probe"], "acc")
    p = acc[acc["probe"] == "pixelate"]
    p = p.assign(source=config_values(p, "net_options", "source_size", default_source))
    p["resampling"] = resampling_label(p)
    return accuracy_curves(p, {"pixelate": "pixelate"}, by=("resampling", "source"))


def _nan() -> float:
    return float("nan")


def _mean(s) -> float:
    return float(np.mean(s)) if len(s) else float("nan")


def claim_mask_falls(curves: pd.DataFrame, variant: str = MASK_VARIANTS["mask"],
                     training: str = "unrotated") -> Claim:
    """Masking: accuracy falls with the masked fraction. For every net trained ``training`` (random
    order, zero fill: ``variant``), the accuracy at the largest fraction is below the clean one.

    ``curves``: :func:`accuracy_curves` of the masking probes (column
    ``variant``). ``value`` = mean accuracy at the largest fraction minus the clean one (points);
    details ``clean_acc``, ``fmax``, ``acc_fmax`` (%)."""
    rnd = per_net(curves, training=training, variant=variant)
    if rnd.empty or 0.0 not in rnd.columns:
        return Claim("mask_falls", False, _nan(), 0.0, {"clean_acc": _nan(), "fmax": _nan(), "acc_fmax": _nan()},
                     testable=False, rule="accuracy at the largest masked fraction < clean, every net",
                     statement="Masking more of the image lowers the accuracy")
    fmax = float(rnd.columns.max())
    clean, worst = rnd[0.0], rnd[fmax]
    return Claim("mask_falls", bool((worst < clean).all()), _mean(worst) - _mean(clean), 0.0,
                 {"clean_acc": _mean(clean), "fmax": fmax, "acc_fmax": _mean(worst)}, testable=fmax > 0,
                 rule="accuracy at the largest masked fraction < clean, every net",
                 statement="Masking more of the image lowers the accuracy")


def claim_saliency_first(curves: pd.DataFrame, salient: str = MASK_VARIANTS["mask_saliency"],
                         random: str = MASK_VARIANTS["mask"], training: str = "unrotated") -> Claim:
    """Masking the most salient tiles first hurts at least as much as random tiles: per net, the mean
    over fractions > 0 of salient-first minus random accuracy is <= 0 for every net. ``value`` = the
    mean of that gap over nets (points)."""
    u = select(curves, training=training)
    u = u[u["magnitude"] > 0]

    def by_net(v):
        return u[u["variant"] == v].groupby("net")["mean"].mean()

    gap = (by_net(salient) - by_net(random)).dropna()
    return Claim("saliency_first", bool(len(gap) and (gap <= 0).all()), _mean(gap), 0.0,
                 {"n_nets": int(len(gap))}, testable=len(gap) > 0,
                 rule="salient-first minus random accuracy <= 0 for every net (fractions > 0)",
                 statement="Masking the most salient tiles first hurts more than masking at random")


def _full(curves: pd.DataFrame, training: str) -> pd.DataFrame:
    return per_net(curves, training=training, mode="full")


def claim_patch_shuffle_falls(curves: pd.DataFrame, training: str = "unrotated") -> Claim:
    """Patch shuffling (mode ``full``): accuracy at the largest grid ``k`` is below the clean accuracy
    (k = 1) for every net. ``curves``: accuracy curves with a ``mode`` column. ``value`` = mean accuracy
    at the largest k minus the clean one (points); details ``clean_acc``, ``kmax``, ``acc_kmax``."""
    nets = _full(curves, training)
    if nets.empty or 1.0 not in nets.columns:
        return Claim("patch_shuffle_falls", False, _nan(), 0.0, {"clean_acc": _nan(), "kmax": _nan(),
                     "acc_kmax": _nan()}, testable=False, rule="accuracy at the largest k < clean, every net",
                     statement="Shuffling patches lowers the accuracy")
    kmax = float(nets.columns.max())
    clean, worst = nets[1.0], nets[kmax]
    return Claim("patch_shuffle_falls", bool((worst < clean).all()), _mean(worst) - _mean(clean), 0.0,
                 {"clean_acc": _mean(clean), "kmax": int(kmax), "acc_kmax": _mean(worst)},
                 testable=len(nets) > 0 and kmax > 1, rule="accuracy at the largest k < clean, every net",
                 statement="Shuffling patches lowers the accuracy")


def claim_patch_shuffle_k2(curves: pd.DataFrame, low: float = 0.61, high: float = 0.91,
                           training: str = "unrotated") -> Claim:
    """Zhang & Zhu 2019: at k = 2 a CIFAR-10 ResNet keeps about 76 % of its clean accuracy; holds if every
    net keeps a fraction in ``[low, high]``. ``value`` = the mean kept fraction (%); details ``acc_k2``."""
    nets = _full(curves, training)
    if nets.empty or 2.0 not in nets.columns or 1.0 not in nets.columns:
        return Claim("patch_shuffle_k2", False, _nan(), 76.0, {"acc_k2": _nan()}, testable=False,
                     rule=f"accuracy kept at k = 2 in [{low:.0%}, {high:.0%}], every net",
                     statement="At k = 2 a network keeps about 76 % of its clean accuracy")
    kept = nets[2.0] / nets[1.0]
    return Claim("patch_shuffle_k2", bool(kept.between(low, high).all()), 100 * _mean(kept), 76.0,
                 {"acc_k2": _mean(nets[2.0])}, testable=len(kept) > 0,
                 rule=f"accuracy kept at k = 2 in [{low:.0%}, {high:.0%}], every net",
                 statement="At k = 2 a network keeps about 76 % of its clean accuracy")


def claim_patch_shuffle_chance(curves: pd.DataFrame, ceiling: float = 25.0, training: str = "unrotated") -> Claim:
    """Zhang & Zhu 2019: by large k the accuracy is near chance (23-25 % at k = 10): every net at most
    ``ceiling`` % at the largest k, testable when the largest k is at least 4. ``value`` = mean accuracy."""
    nets = _full(curves, training)
    kmax = float(nets.columns.max()) if len(nets.columns) else _nan()
    worst = nets[kmax] if len(nets.columns) else pd.Series(dtype=float)
    return Claim("patch_shuffle_chance", bool(len(worst) and (worst <= ceiling).all()), _mean(worst), ceiling,
                 {"kmax": kmax}, testable=bool(np.isfinite(kmax) and kmax >= 4),
                 rule=f"accuracy at the largest k (>= 4) <= {ceiling:g} %, every net",
                 statement="With many small patches the accuracy falls to near chance")


def _transfer_row(grid: pd.DataFrame, source: int, target: int, resampling: str) -> dict[str, float]:
    row = select(grid, resampling=resampling, source=source, target=target)
    if len(row) != 1:
        return {"delta": _nan(), "acc_source": _nan(), "acc_ootb": _nan(), "rel_loss": _nan(), "n": len(row)}
    d, a = float(row["delta_mean"].iloc[0]), float(row["acc_source_mean"].iloc[0])
    return {"delta": d, "acc_source": a, "acc_ootb": float(row["acc_ootb_mean"].iloc[0]),
            "rel_loss": 100 * -d / max(a - 10.0, 1e-9), "n": 1}


def claim_transfer_loses(grid: pd.DataFrame, source: int = 16, target: int = 32,
                         resampling: str = "bilinear") -> Claim:
    """FlexConv protocol: a net trained at ``source`` px loses accuracy at ``target`` px out of the box
    (delta < 0). ``grid``: :func:`stabkit.robustness.transfer_grid` by (resampling, source, target).
    ``value`` = delta (points); details ``acc_source``, ``acc_ootb``, ``rel_loss`` (% of the above-chance
    accuracy lost)."""
    r = _transfer_row(grid, source, target, resampling)
    return Claim("transfer_loses", bool(r["delta"] < 0), r["delta"], 0.0,
                 {k: r[k] for k in ("acc_source", "acc_ootb", "rel_loss")}, testable=r["n"] == 1,
                 rule=f"accuracy at {target} px - at {source} px < 0 (trained at {source} px)",
                 statement=f"A CNN trained at {source} px loses accuracy at {target} px out of the box")


def claim_transfer_loss_size(grid: pd.DataFrame, source: int = 16, target: int = 32,
                             resampling: str = "bilinear", points: float = 15.0, fraction: float = 1 / 3) -> Claim:
    """The loss is of the reported size (ResNet-44: -31.6 points, 38 % of the above-chance accuracy):
    delta <= -``points`` or a relative loss >= ``fraction``; testable when the source accuracy is above
    15 %. ``value`` = delta (points)."""
    r = _transfer_row(grid, source, target, resampling)
    holds = bool(r["delta"] <= -points or r["rel_loss"] >= 100 * fraction)
    return Claim("transfer_loss_size", holds, r["delta"], -points, {"rel_loss": r["rel_loss"]},
                 testable=bool(r["n"] == 1 and r["acc_source"] > 15),
                 rule=f"delta <= -{points:g} points or >= {fraction:.0%} of the above-chance accuracy lost",
                 statement="The out-of-the-box loss is as large as reported (ResNet-44: -31.6 points)")


def claim_rotation_lowers_nv(inv: pd.DataFrame) -> Claim:
    """Quiroga et al. 2019: rotation augmentation lowers the global mean NV, for every net (unstratified).
    ``inv``: the ``invariance`` table with a ``training`` column. ``value`` = mean over nets of NV rotated
    minus unrotated; details ``nv_unrot``, ``nv_rot``, ``n_lower``, ``n_nets``."""
    g = global_nv_table(inv)
    plain = g[~g["stratified"].astype(bool)].pivot(index="net", columns="training", values="global_NV")
    cols = [c for c in ("unrotated", "rotated") if c in plain.columns]
    both = plain.dropna(subset=cols)
    testable = len(cols) == 2 and len(both) > 0
    lower = (both["rotated"] < both["unrotated"]) if testable else pd.Series(dtype=bool)
    nv_u = _mean(plain["unrotated"].dropna()) if "unrotated" in plain else _nan()
    nv_r = _mean(plain["rotated"].dropna()) if "rotated" in plain else _nan()
    return Claim("rotation_lowers_nv", bool(testable and lower.all()),
                 _mean(both["rotated"] - both["unrotated"]) if testable else _nan(), 0.0,
                 {"nv_unrot": nv_u, "nv_rot": nv_r, "n_lower": int(lower.sum()), "n_nets": int(len(both))},
                 testable=testable, rule="global mean NV rotated < unrotated training, every net",
                 statement="Rotation augmentation lowers the networks' rotation NV")


def claim_nv_in_reference_range(inv: pd.DataFrame, reference: Mapping[str, Mapping[str, float]]) -> Claim:
    """Global mean NV of every net within the range of the 2019 paper's values (``reference``:
    ``{"nv_unrotated": {net: value}, "nv_rotated": {...}}``), for both trainings. ``value`` = the number
    of nets in range (both trainings); details ``n_in_unrot``, ``n_in_rot``."""
    g = global_nv_table(inv)
    plain = g[~g["stratified"].astype(bool)].pivot(index="net", columns="training", values="global_NV")
    cols = [c for c in ("unrotated", "rotated") if c in plain.columns]
    testable = len(cols) == 2 and len(plain.dropna(subset=cols)) > 0
    inside = {}
    for tr in ("unrotated", "rotated"):
        ref = list(reference[f"nv_{tr}"].values())
        inside[tr] = plain[tr].between(min(ref), max(ref)) if tr in plain else pd.Series(dtype=bool)
    holds = all(len(s) and s.all() for s in inside.values())
    n_u, n_r = int(inside["unrotated"].sum()), int(inside["rotated"].sum())
    return Claim("nv_in_reference_range", bool(holds), float(n_u + n_r), float(2 * len(plain)),
                 {"n_in_unrot": n_u, "n_in_rot": n_r}, testable=testable,
                 rule="global mean NV within the 2019 range for every net and training",
                 statement="The global mean NV falls in the range of the 2019 paper's networks")


def claim_stratified_raises_nv(inv: pd.DataFrame) -> Claim:
    """Class-stratified NV is higher than the plain NV, for every net and training. ``value`` = the mean
    gain (stratified minus plain)."""
    g = global_nv_table(inv)
    strat = g.pivot_table(index=["net", "training"], columns="stratified", values="global_NV")
    testable = {True, False} <= set(strat.columns)
    gain = (strat[True] - strat[False]) if testable else pd.Series(dtype=float)
    return Claim("stratified_raises_nv", bool(testable and (gain > 0).all()), _mean(gain), 0.0, {},
                 testable=testable, rule="stratified NV > plain NV for every net and training",
                 statement="Stratifying the NV by class raises it")


def claim_rotation_flattens_accuracy(acc: pd.DataFrame) -> Claim:
    """Rotation augmentation flattens the accuracy-angle curve: the fraction of the upright accuracy kept
    at other angles (mean over nets) is larger for rotated than for unrotated training. ``acc``: the
    ``accuracy`` table with a ``training`` column. ``value`` = kept (rotated) - kept (unrotated), in %;
    details ``acc0_unrot``, ``acc0_rot``, ``kept_unrot``, ``kept_rot`` (%)."""
    k = rotation_kept(acc)
    kept = k.groupby("training")["kept"].mean()
    clean = k.groupby("training")["clean"].mean()
    ku, kr = float(kept.get("unrotated", np.nan)), float(kept.get("rotated", np.nan))
    return Claim("rotation_flattens_accuracy", bool(kr > ku), 100 * (kr - ku), 0.0,
                 {"acc0_unrot": float(clean.get("unrotated", np.nan)), "acc0_rot": float(clean.get("rotated", np.nan)),
                  "kept_unrot": 100 * ku, "kept_rot": 100 * kr}, testable=len(kept) == 2,
                 rule="accuracy kept over angles: rotated training > unrotated training",
                 statement="Rotation augmentation flattens the accuracy-angle curve")
