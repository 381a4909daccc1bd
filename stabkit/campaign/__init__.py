"""The GPU campaign: as many missing runs as fit before a deadline on a time-limited allocation.

- :mod:`~stabkit.campaign.plan`: the runs missing from ``results/`` in the priority order the sweep files
  give (their ``campaign:`` block), checked options, time-model estimates;
- :mod:`~stabkit.campaign.smoke`: the smoke test (versions, a tiny run per task, float64 parity, step-time
  probes, concurrency);
- :mod:`~stabkit.campaign.timemodel`: how long a run takes (:class:`TimeModel`);
- :mod:`~stabkit.campaign.workers`: the worker processes; :mod:`~stabkit.campaign.packing`: the packed
  runs (``runs*.tar.gz``);
- :mod:`~stabkit.campaign.scheduler`: :func:`campaign`, the schedule under the deadline;
- :mod:`~stabkit.campaign.forecast`: the core-hours a sweep's unfinished runs still need on a CPU, from the
  pace of finished runs (:func:`forecast_sweep`, ``stabkit status --forecast``).

Public names load on first use (:mod:`stabkit.lazy`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_face

#: Public name -> the module of this package that defines it.
_NAMES = {
    "campaign": "scheduler",
    **dict.fromkeys(("check_options", "make_plan", "Plan", "PlanItem", "simulate", "estimate_plan"), "plan"),
    **dict.fromkeys(("pack_runs", "Packer", "part_name", "MANIFEST_FORMAT", "PART_LIMIT"), "packing"),
    "failure_kind": "workers", "TimeModel": "timemodel",
    **dict.fromkeys(("forecast_sweep", "paces", "admit_before"), "forecast"),
}
_SUBMODULES = ("plan", "smoke", "timemodel", "workers", "packing", "scheduler", "forecast")

__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES, _SUBMODULES)

if TYPE_CHECKING:  # for type checkers and readers: the names __getattr__ serves
    from .forecast import admit_before, forecast_sweep, paces  # noqa: F401
    from .packing import MANIFEST_FORMAT, PART_LIMIT, Packer, pack_runs, part_name  # noqa: F401
    from .plan import Plan, PlanItem, check_options, estimate_plan, make_plan, simulate  # noqa: F401
    from .scheduler import campaign  # noqa: F401
    from .timemodel import TimeModel  # noqa: F401
    from .workers import failure_kind  # noqa: F401
