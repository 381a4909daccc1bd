"""Many runs: sweep files, their executors, the collected tables and the committed results store.

A sweep is a YAML file under ``sweeps/`` (grammar: :func:`load_sweep`) with scales ``tiny | small | cpu | gpu
| paper``; besides its runs it carries what the book and the campaign know of its figure (the paper's
protocol, the campaign's priority, the smoke test's tiny run). :func:`sweep` skips finished runs, redoes
interrupted ones and records failed ones without stopping. :func:`collect` gathers one table of the finished
runs into one tidy DataFrame with the configuration columns; :func:`results` is the notebooks' entry point
(committed tables under ``results/<sweep>/<scale>/`` first, else run the sweep, then collect); :func:`export`
writes the collected tables and ``provenance.json`` for committing.

- :mod:`~stabkit.sweeps.sweepfile`: the sweep YAML grammar, :class:`Sweep`, :func:`load_sweep` (torch-free);
- :mod:`~stabkit.sweeps.executors`: :func:`sweep`, run by :mod:`~stabkit.sweeps.worker` (one run, fixed thread
  count) in this process, a :mod:`~stabkit.sweeps.local_pool` of workers, or :mod:`~stabkit.sweeps.slurm`
  (submitit);
- :mod:`~stabkit.sweeps.collection`: :func:`collect` and :func:`status` over run folders;
- :mod:`~stabkit.sweeps.resultstore`: ``results/<sweep>/<scale>/``, read; :mod:`~stabkit.sweeps.merging`:
  merge by run key, :func:`export`; :mod:`~stabkit.sweeps.archives`: :func:`import_runs` (a campaign's
  ``runs*.tar.gz``);
- :mod:`~stabkit.sweeps.lookup`: :func:`results`, :func:`resolve_scale`, coverage facts.

Public names load on first use (:mod:`stabkit.lazy`): ``from stabkit.sweeps import load_sweep`` stays
torch-free.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_face

#: Public name -> the module of this package that defines it.
_NAMES = {
    **dict.fromkeys(("SCALES", "Sweep", "load_sweep", "as_sweep", "sweep_path", "sweep_scales"), "sweepfile"),
    **dict.fromkeys(("EXECUTORS", "EMULATED_CHOICES", "sweep", "failure_summary"), "executors"),
    "run_threads": "worker",
    **dict.fromkeys(("collect", "status", "config_columns"), "collection"),
    **dict.fromkeys(("SCALE_ORDER", "load", "committed_keys", "committed_runs", "committed_scales", "store_dir"),
                    "resultstore"),
    "export": "merging",
    "import_runs": "archives",
    **dict.fromkeys(("results", "resolve_scale", "RECOMPUTE_ENV", "recompute_requested", "RunsFailedError"),
                    "lookup"),
}
_SUBMODULES = ("sweepfile", "executors", "worker", "local_pool", "slurm", "collection", "resultstore", "merging",
               "archives", "lookup")

__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES, _SUBMODULES)

if TYPE_CHECKING:  # for type checkers and readers: the names __getattr__ serves
    from .collection import collect, config_columns, status  # noqa: F401
    from .executors import EMULATED_CHOICES, EXECUTORS, failure_summary, sweep  # noqa: F401
    from .lookup import RECOMPUTE_ENV, RunsFailedError, recompute_requested, resolve_scale, results  # noqa: F401
    from .merging import export  # noqa: F401
    from .resultstore import SCALE_ORDER, committed_keys, committed_runs, committed_scales, store_dir  # noqa: F401
    from .resultstore import load  # noqa: F401
    from .archives import import_runs  # noqa: F401
    from .sweepfile import SCALES, Sweep, as_sweep, load_sweep, sweep_path, sweep_scales  # noqa: F401
    from .worker import run_threads  # noqa: F401
