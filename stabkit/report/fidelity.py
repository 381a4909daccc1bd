"""What the paper measured and compared, as table operations: the paper's probe set and ReLU convention,
the networks a claim is stated for, the paper's protocol per sweep, and the tables behind the claims of
issue 12 (the parts of a ratio, G_f against the training noise, layer-by-layer shuffling gaps).

See ``book/methods.md``, "Parity with the original code". Nothing here decides a verdict
(:mod:`stabkit.report.claims`) or writes a sentence (:mod:`stabkit.report.narrative`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..protocol import is_fully_connected
from ..sweeps.sweepfile import Sweep, sweep_facts
from .analysis import geomean, require_columns, run_columns, select, trained_over_init
from .stats import NEAR_CHANCE, chance_error

__all__ = ["paper_rows", "task_error_column", "well_trained_cnns", "convergence", "with_convergence",
           "CONVERGENCE_RULE", "LAST_WITHIN", "FALLS_MAX_ERROR", "collapsed_runs", "WELL_TRAINED_RULE", "MAX_ERROR",
           "EXCLUDED_NETS", "well_trained_rule", "paper_protocol", "trained_init_factors", "gf_by_noise",
           "layer_shuffle_gaps"]

#: Largest test error of a network that "trains well" (the claims stated for such networks). In the
#: paper every CIFAR-10 CNN but LeNet ends below about 25 % (AlexNet, the worst, near 20-25 %) and the
#: scale-detection nets below a few %; 30 % keeps all of them and leaves out networks that have not
#: left their initial plateau or learnt little (the cpu/small scales' partly trained nets: 60-70 %).
MAX_ERROR = 0.3
#: Largest test error of a network on which "R_f falls by decades" is testable: the paper's own law
#: (eps_t ~ 0.2 sqrt(R_f)) puts R_f of order one above about 10-20 % error, so a net at 19-33 % cannot
#: show a fall of decades whatever the mechanism.
FALLS_MAX_ERROR = 0.1
#: A run converged when its last-epoch test error is within this (absolute: 2 points) of its best.
LAST_WITHIN = 0.02
#: The convergence rule of :func:`convergence` in words.
CONVERGENCE_RULE = (f"well trained: last-epoch test error within {100 * LAST_WITHIN:g} points of the best, and the "
                    f"training error fell (last epoch below both the first epoch and {NEAR_CHANCE:g} x chance); "
                    f"collapsed: best below {NEAR_CHANCE:g} x chance, last epoch at or above it")
#: CNNs the paper itself sets apart (LeNet: too shallow to pool, trains to ~35 % on CIFAR-10).
EXCLUDED_NETS = ("LeNet",)


def well_trained_rule(max_error: float = MAX_ERROR, excluded: Sequence[str] = EXCLUDED_NETS) -> str:
    """The rule of :func:`well_trained_cnns` in words (shown on the page with the claim)."""
    return (f"CNNs only (not the FCNs DenseNetL*, not {', '.join(excluded)}) whose trained test error is below "
            f"{100 * max_error:g} %")


#: The rule of :func:`well_trained_cnns` in words, with the default threshold (:data:`MAX_ERROR`) and
#: exclusions (:data:`EXCLUDED_NETS`); shown on a page next to the claims stated for such networks.
WELL_TRAINED_RULE = well_trained_rule()


def paper_rows(df: pd.DataFrame, probes: str = "paper", relu_convention: str | None = "true") -> pd.DataFrame:
    """Rows of an ``output`` / ``layers`` table measured as the figure shows them.

    ``probes``: ``"paper"`` (a noise-trained CIFAR-10 net on its own corrupted test images, every other
    net on clean images: the ``"corrupted"`` rows where a run has them, else ``"clean"``), ``"clean"``
    (clean images for every net), ``"corrupted"`` or ``None`` (all rows). Tables written before the
    ``probes`` column existed were measured on clean images: they are kept as they are.
    ``relu_convention``: keep that convention when the table has a ``relu_convention`` column
    (``"true"``, the default, or ``"inplace"``; ``None`` keeps both)."""
    require_columns(df, [], "df")
    out = df
    if relu_convention is not None and "relu_convention" in out.columns:
        out = out[out["relu_convention"].fillna("true") == relu_convention]
    if probes is None or "probes" not in out.columns:
        return out
    if probes not in ("paper", "clean", "corrupted"):
        raise ValueError(f"probes must be 'paper', 'clean', 'corrupted' or None, got {probes!r}")
    kind = out["probes"].fillna("clean")
    if probes != "paper":
        return out[kind == probes]
    keys = run_columns(out.drop(columns=["probes"]))
    has = kind.eq("corrupted").groupby([out[k] for k in keys], dropna=False).transform("any") if keys else \
        pd.Series(kind.eq("corrupted").any(), index=out.index)
    return out[np.where(has.to_numpy(dtype=bool), kind.eq("corrupted"), kind.eq("clean"))]


def task_error_column(df: pd.DataFrame) -> str:
    """``task_err`` (the error on the task the net was trained for: :func:`~stabkit.report.analysis.with_task_error`)
    when the table has it, else ``test_err``."""
    return "task_err" if "task_err" in df.columns else "test_err"


def well_trained_cnns(output: pd.DataFrame, max_error: float = MAX_ERROR, excluded: Sequence[str] = EXCLUDED_NETS,
                      error: str | None = None) -> pd.DataFrame:
    """Rows (every state and shuffle) of the runs of CNNs that train well (:data:`WELL_TRAINED_RULE`):
    not fully connected, not in ``excluded``, trained (shuffle 0) ``error`` below ``max_error``
    (default column: :func:`task_error_column`) and, when ``output`` carries the convergence columns
    (:func:`with_convergence`), ``well_trained`` (:data:`CONVERGENCE_RULE`)."""
    if "well_trained" in output.columns:
        output = output[output["well_trained"].fillna(True).astype(bool)]
    error = error or task_error_column(output)
    require_columns(output, ["net", "state", error], "output")
    keys = run_columns(output.drop(columns=[c for c in ("probes", "relu_convention") if c in output.columns]))
    fcn = np.array([is_fully_connected(str(n)) for n in output["net"]], dtype=bool)
    ok_net = ~fcn & ~output["net"].isin(list(excluded)).to_numpy(dtype=bool)
    tr = output[ok_net & (output["state"] == "trained")]
    if "shuffle" in tr.columns:
        tr = tr[tr["shuffle"] == 0]
    good = tr.loc[tr[error] < max_error, keys].drop_duplicates()
    return output.merge(good, on=keys, how="inner") if keys else output[ok_net]


def paper_protocol(sweep: str | Sweep | Mapping) -> pd.DataFrame | None:
    """The paper's protocol of ``sweep`` (its sweep file's ``paper:`` block, ``book/methods.md``, "Tasks,
    networks and training": a field the paper does not give is absent) as a table whose column ``c`` holds
    the paper's set of values of ``c`` (rows padded by repetition), the form
    :func:`stabkit.report.prose.differences` compares; ``None`` for a sweep that is not a figure of the
    paper (the probe pages). ``sweep``: a name under ``sweeps/``, a file, a parsed mapping or a ``Sweep``."""
    proto = sweep_facts(sweep).paper
    if proto is None:
        return None
    n = max(len(v) for v in proto.values())
    return pd.DataFrame({k: [v[i % len(v)] for i in range(n)] for k, v in proto.items()})


def trained_init_factors(output: pd.DataFrame, quantities: Sequence[str] = ("D", "G", "deno", "D_f", "G_f", "R_f"),
                **where) -> dict[str, float]:
    """Geometric mean over runs of ``trained / init`` for each of ``quantities`` (the parts of
    ``D_f = D / deno``, ``G_f = G / deno``, ``R_f = D / G``), and ``n`` (runs). A ratio can move because
    of its denominator: with training the spread of the outputs across images (``deno``) can grow by
    orders of magnitude, so ``D_f`` falls even where ``D`` rises."""
    out: dict[str, float] = {}
    n = 0
    for q in quantities:
        if q not in output.columns:
            out[q] = float("nan")
            continue
        t = trained_over_init(output, q, **where)
        r = t["ratio"].to_numpy(dtype=np.float64)
        r = r[np.isfinite(r) & (r > 0)]
        out[q] = float(10 ** np.log10(r).mean()) if r.size else float("nan")
        n = max(n, int(r.size))
    out["n"] = n
    return out


def gf_by_noise(output: pd.DataFrame, quantity: str = "G_f", **where) -> pd.DataFrame:
    """``quantity`` of trained networks against the training noise: one row per ``noise_std`` with the
    geometric means over runs of the trained value (``trained``), of ``trained / init`` (``ratio``) and
    ``n`` (runs). Expected: a lower G_f where the training noise exceeds the probe noise (noise
    augmentation)."""
    require_columns(output, [quantity, "state", "noise_std"], "output")
    t = trained_over_init(output, quantity, **where)
    if "noise_std" not in t.columns:
        keys = run_columns(output)
        t = t.merge(output[keys + ["noise_std"]].drop_duplicates(), on=keys, how="left")
    g = geomean(t, ["noise_std"], ["trained", "ratio"])
    g["n"] = t.groupby("noise_std").size().reindex(g["noise_std"]).to_numpy()
    return g.rename(columns={"trained": quantity}).sort_values("noise_std").reset_index(drop=True)


def layer_shuffle_gaps(layers: pd.DataFrame, quantities: Sequence[str] = ("R_f", "D_f", "G_f"),
                       shuffled: int = 1, state: str = "trained", by: Sequence[str] = ("net",),
                       **where) -> pd.DataFrame:
    """Layer by layer, how channel shuffling changes each of ``quantities``: ``gap_<q> = log10(q[shuffle =
    shuffled] / q[shuffle = 0])`` (decades, mean over runs) per ``by`` group and layer, with
    ``rel_depth`` and ``n`` (runs). ``gap_R_f = gap_D_f - gap_G_f``: the D_k and G_k parts of a change."""
    require_columns(layers, ["layer", "rel_depth", "shuffle", "state", *quantities], "layers")
    rows = select(layers, state=state, **where)
    rows = rows[rows["shuffle"].isin([0, shuffled])]
    keys = [c for c in by if c in rows.columns]
    run_keys = run_columns(rows.drop(columns=[c for c in ("probes", "relu_convention") if c in rows.columns]))
    idx = list(dict.fromkeys(keys + run_keys + ["layer", "rel_depth"]))
    per_run = []
    for q in quantities:
        w = rows.groupby(idx + ["shuffle"], dropna=False)[q].mean().unstack("shuffle")
        if 0 not in w.columns or shuffled not in w.columns:
            return pd.DataFrame(columns=keys + ["layer", "rel_depth", *(f"gap_{q}" for q in quantities), "n"])
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.log10(w[shuffled].where(w[shuffled] > 0) / w[0].where(w[0] > 0))
        per_run.append(g.rename(f"gap_{q}"))
    wide = pd.concat(per_run, axis=1).reset_index()
    wide = wide.dropna(subset=[f"gap_{q}" for q in quantities], how="all")
    agg = {f"gap_{q}": (f"gap_{q}", "mean") for q in quantities}
    out = wide.groupby(keys + ["layer", "rel_depth"], dropna=False).agg(**agg, n=(f"gap_{quantities[0]}", "size"))
    return out.reset_index().sort_values(keys + ["rel_depth"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------ convergence
def convergence(summary: pd.DataFrame, metrics: pd.DataFrame | None = None, *, last_within: float = LAST_WITHIN,
                near: float = NEAR_CHANCE) -> pd.DataFrame:
    """Per run, whether it is "well trained" (:data:`CONVERGENCE_RULE`): the best-checkpoint selection
    on the test set can hide a run that collapsed to chance later or never left its plateau.

    ``summary``: one row per run with ``run``, ``net``, ``best_test_err``, ``last_test_err`` (fractions);
    ``metrics``: one row per epoch with ``run``, ``epoch``, ``train_err`` (``None``: the training-error
    rule is not checked). Returns one row per run: ``run``, ``net``, ``seed`` (when present),
    ``best_test_err``, ``last_test_err``, ``train_err_first``, ``train_err_last``, ``converged``,
    ``train_fell``, ``collapsed``, ``well_trained`` (bool) and ``reason`` (words, empty when well trained)."""
    require_columns(summary, ["run", "best_test_err", "last_test_err"], "summary")
    keep = [c for c in ("run", "net", "seed", "task", "noise_std", "ptr") if c in summary.columns]
    out = summary[keep + ["best_test_err", "last_test_err"]].drop_duplicates("run").reset_index(drop=True)
    chance = np.array([chance_error(out.iloc[[i]]) for i in range(len(out))], dtype=np.float64)
    out["train_err_first"] = np.nan
    out["train_err_last"] = np.nan
    if metrics is not None and len(metrics):
        require_columns(metrics, ["run", "epoch", "train_err"], "metrics")
        m = metrics.sort_values(["run", "epoch"]).groupby("run")["train_err"]
        out["train_err_first"] = out["run"].map(m.first()).astype(np.float64)
        out["train_err_last"] = out["run"].map(m.last()).astype(np.float64)
    best = out["best_test_err"].astype(np.float64).to_numpy()
    last = out["last_test_err"].astype(np.float64).to_numpy()
    first_tr = out["train_err_first"].to_numpy()
    last_tr = out["train_err_last"].to_numpy()
    out["converged"] = last - best <= last_within + 1e-12
    known = np.isfinite(last_tr)
    # one epoch has no "fell": a run whose single epoch ends below chance counts as having learnt
    fell = (last_tr < near * chance) & ((last_tr < first_tr) | (first_tr == last_tr))
    out["train_fell"] = np.where(known, fell, True)
    out["collapsed"] = (best < near * chance) & (last >= near * chance)
    out["well_trained"] = out["converged"] & out["train_fell"].astype(bool)
    reasons = []
    for i in range(len(out)):
        why = []
        if out["collapsed"].iloc[i]:
            why.append(f"collapsed: best {100 * best[i]:.1f} %, last epoch {100 * last[i]:.1f} % (chance "
                       f"{100 * chance[i]:g} %)")
        elif not out["converged"].iloc[i]:
            why.append(f"last epoch {100 * last[i]:.1f} % is {100 * (last[i] - best[i]):.1f} points above the best "
                       f"{100 * best[i]:.1f} %")
        if not out["train_fell"].iloc[i]:
            why.append(f"training error did not fall ({100 * first_tr[i]:.1f} % -> {100 * last_tr[i]:.1f} %)")
        reasons.append("; ".join(why))
    out["reason"] = reasons
    return out


def with_convergence(output: pd.DataFrame, conv: pd.DataFrame) -> pd.DataFrame:
    """``output`` (any run table with a ``run`` column) with the columns of :func:`convergence` joined
    by run: ``best_test_err``, ``last_test_err``, ``well_trained``, ``collapsed``, ``converged``,
    ``train_fell``. A run missing from ``conv`` keeps nan (treated as well trained by
    :func:`well_trained_cnns`: nothing says otherwise)."""
    require_columns(output, ["run"], "output")
    require_columns(conv, ["run", "well_trained"], "conv")
    cols = [c for c in ("best_test_err", "last_test_err", "well_trained", "collapsed", "converged", "train_fell")
            if c in conv.columns]
    base = output.drop(columns=[c for c in cols if c in output.columns])
    return base.merge(conv[["run", *cols]], on="run", how="left")


def collapsed_runs(conv: pd.DataFrame) -> pd.DataFrame:
    """The runs of :func:`convergence` that are not well trained, for the page's list: ``net``, ``seed``,
    best and last test error (%) and the reason."""
    bad = conv[~conv["well_trained"].astype(bool)]
    cols = [c for c in ("net", "seed", "noise_std", "ptr") if c in bad.columns]
    out = bad[cols].copy()
    out["best test error (%)"] = (100 * bad["best_test_err"]).round(1)
    out["last test error (%)"] = (100 * bad["last_test_err"]).round(1)
    out["why not well trained"] = bad["reason"]
    return out.reset_index(drop=True)
