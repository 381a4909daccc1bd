"""The probe page that sets rotation invariance against R_k: the rotation NV of a layer matched with its
R_k (:func:`~stabkit.report.layer_claims.layer_nv_vs_rk`), their rank correlation per run
(:func:`~stabkit.report.layer_claims.nv_rk_correlations`) and the claim that the one tracks the other
(:func:`~stabkit.report.layer_claims.claim_nv_tracks_rk`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import rank_correlation
from ..tables import require_columns, select, training_label
from ..verdicts import Claim


def layer_nv_vs_rk(inv: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Trained unshuffled nodes with both a rotation NV (``invariance``, unstratified) and an ``R_k``
    (``layers``), matched on run and layer: ``inv`` columns + ``R_f, D_f, G_f, log10_R`` and ``training``."""
    require_columns(inv, ["run", "layer", "mean_NV"], "inv")
    require_columns(layers, ["run", "layer", "R_f", "state"], "layers")
    plain = inv[~inv["stratified"].astype(bool)] if "stratified" in inv.columns else inv
    lay = select(layers, state="trained", shuffle=0)
    both = plain.merge(lay[["run", "layer", "R_f", "D_f", "G_f"]], on=["run", "layer"], how="inner")
    both = both[np.isfinite(both["mean_NV"]) & (both["R_f"] > 0)].copy()
    both["log10_R"] = np.log10(both["R_f"])
    if "training" not in both.columns:
        both["training"] = training_label(both)
    return both


def nv_rk_correlations(both: pd.DataFrame, min_layers: int = 4) -> pd.DataFrame:
    """Spearman correlation between a layer's rotation NV and ``log10 R_k`` per (net, training, seed),
    over runs with at least ``min_layers`` matched layers (``both``: :func:`layer_nv_vs_rk`)."""
    rows = []
    for (net, tr, seed), d in both.groupby(["net", "training", "seed"]):
        if len(d) >= min_layers:
            rows.append({"net": net, "training": tr, "seed": seed, "layers": len(d),
                         "spearman": rank_correlation(d["log10_R"], d["mean_NV"])})
    return pd.DataFrame(rows, columns=["net", "training", "seed", "layers", "spearman"])


def claim_nv_tracks_rk(inv: pd.DataFrame, layers: pd.DataFrame, min_rho: float = 0.5) -> Claim:
    """A layer's rotation NV tracks its relative stability: the median Spearman correlation between
    layer mean NV and ``log10 R_k`` over trained nets is at least ``min_rho``. ``value`` = the median;
    details ``rho_min``, ``rho_max``, ``n_corr``."""
    corr = nv_rk_correlations(layer_nv_vs_rk(inv, layers))
    rho = corr["spearman"]
    med = float(rho.median()) if len(rho) else float("nan")
    return Claim("nv_tracks_rk", bool(med >= min_rho), med, min_rho,
                 {"rho_min": float(rho.min()) if len(rho) else float("nan"),
                  "rho_max": float(rho.max()) if len(rho) else float("nan"), "n_corr": int(len(rho))},
                 testable=len(rho) > 0, rule=f"median Spearman(layer NV, log10 R_k) >= {min_rho:g}",
                 statement="A layer's rotation NV tracks its relative stability R_k")
