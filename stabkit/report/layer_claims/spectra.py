"""Fig. 2: trained early-layer filters concentrate on the constant filter (eigenvalue 0 of the grid
Laplacian), the spectrum at initialisation is flat
(:func:`~stabkit.report.layer_claims.claim_spectra_concentrate`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..fits import zero_mode_fraction
from ..selection import CONVERGENCE_RULE
from ..stats import MIN_UNITS, interval_decision, mean_ci
from ..tables import require_columns, run_columns
from ..verdicts import Claim
from .pooling import CONVERGENCE_COLUMNS, well_trained_rows


def claim_spectra_concentrate(spectra: pd.DataFrame, early: float = 0.5, factor: float = 1.5,
                              flat_tolerance: float = 0.5, **where) -> Claim:
    """Fig. 2: "trained early-layer filters concentrate on eigenvalue 0, flat spectrum at init".

    Testability precondition: the spectra carry the convergence columns of
    :func:`stabkit.report.selection.with_convergence` (a table without them cannot say whether its nets
    trained: "cannot be tested"); runs that are not well trained (:data:`~stabkit.report.selection.CONVERGENCE_RULE`)
    are left out, and at least 3 runs of :data:`~stabkit.report.stats.MIN_UNITS` architectures must remain.

    Per run, over its conv layers with ``rel_depth <= early``: the mean energy fraction at eigenvalue 0
    after training over the one at initialisation. ``value`` = the geometric mean of these ratios, with
    its 95 % interval over architectures (:func:`stabkit.report.stats.mean_ci` on ``log10`` with the
    architecture as cluster). Holds if the interval lies at or above ``factor`` and the initial spectrum
    is flat (within ``flat_tolerance``, relative, of ``1/k^2``); does not hold if it lies below ``factor``
    (or the initial spectrum is not flat); an interval spanning ``factor`` cannot be tested.
    """
    require_columns(spectra, ["state"], "spectra")
    rule = (f"precondition: trained networks well trained ({CONVERGENCE_RULE}), at least 3 runs of {MIN_UNITS} "
            f"architectures; then early layers (relative depth <= {early:g}): fraction at lambda = 0 trained / "
            f"init >= {factor:g} with its 95 % interval over architectures (geometric mean over runs), init "
            f"within {flat_tolerance:.0%} of 1/k^2")
    statement = "Trained early-layer filters concentrate on the constant filter"
    nan = float("nan")
    has_conv = "well_trained" in spectra.columns
    rows = well_trained_rows(spectra) if has_conv else spectra
    keys = run_columns(rows, exclude=CONVERGENCE_COLUMNS)
    z = zero_mode_fraction(rows, by=list(dict.fromkeys(["net", *keys])), **where)
    z = z[z["rel_depth"] <= early]
    keys = [c for c in dict.fromkeys(["net", *keys]) if c in z.columns]
    tr = z.loc[z["state"] == "trained", "fraction"].mean()
    ini = z.loc[z["state"] == "init", "fraction"].mean()
    flat = z.loc[z["state"] == "init", "flat"].mean()
    flat_ok = bool(np.isfinite(flat) and abs(ini / flat - 1) <= flat_tolerance) if np.isfinite(ini) else False
    per_run = (z.pivot_table(index=keys, columns="state", values="fraction", aggfunc="mean", dropna=False)
               if keys and len(z) else pd.DataFrame())
    if {"trained", "init"} <= set(per_run.columns):
        ratio = (per_run["trained"] / per_run["init"]).to_numpy(dtype=np.float64)
        nets = (per_run.index.get_level_values("net").to_numpy(dtype=object) if "net" in keys
                else np.arange(len(per_run)).astype(object))
    else:
        ratio, nets = np.array([], dtype=np.float64), np.array([], dtype=object)
    ok_rows = np.isfinite(ratio) & (ratio > 0)
    log_r, nets = np.log10(ratio[ok_rows]), nets[ok_rows]
    mean, lo, hi = mean_ci(log_r, clusters=nets) if log_r.size else (nan, nan, nan)
    n_runs, n_units = int(log_r.size), int(len(set(nets)))
    holds, ok, reason = interval_decision(mean, lo, hi, float(np.log10(factor)), above=True)
    if reason.startswith("the interval"):  # in the claim's units (a factor), not log10
        reason = f"the interval [{10 ** lo:.3g}, {10 ** hi:.3g}] spans the threshold {factor:g}"
    if ok and not flat_ok:
        holds, reason = False, f"the initial spectrum is not flat (fraction {ini:.3g} against 1/k^2 = {flat:.3g})"
    bad = ~spectra["well_trained"].fillna(True).astype(bool) if has_conv else None
    n_dropped = int(len(spectra.loc[bad, keys].drop_duplicates())) if has_conv and keys else 0
    if not has_conv:
        holds, ok, reason = False, False, ("the convergence of the runs is unknown (load the tables with page(..., "
                                           "convergence=True) or join selection.with_convergence)")
    elif n_runs < 3 or n_units < MIN_UNITS:
        holds, ok = False, False
        reason = (f"{n_runs} well-trained runs of {n_units} architecture(s) (need 3 runs of {MIN_UNITS} "
                  f"architectures; {n_dropped} run(s) not well trained left out)")
    details = {"trained": float(tr), "init": float(ini), "flat": float(flat), "flat_ok": flat_ok, "n": n_runs,
               "n_units": n_units, "n_not_well_trained": n_dropped, "reason": reason}
    return Claim("spectra_concentrate", holds, float(10 ** mean) if np.isfinite(mean) else nan, factor, details,
                 testable=ok, rule=rule, statement=statement,
                 ci_low=float(10 ** lo) if np.isfinite(lo) else nan,
                 ci_high=float(10 ** hi) if np.isfinite(hi) else nan)

