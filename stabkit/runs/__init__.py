"""One run: one frozen configuration -> one folder of result tables (resumable).

A run is a :class:`RunConfig`. Its hash (with ``FORMAT_VERSION``) names its folder
``<root>/<key>``; :func:`run` trains the network, then measures it in the same process (output and layer-by-layer
stabilities at initialisation and after training, with/without channel shuffling, filter spectra, test
errors), writes every file atomically and writes the ``done`` marker LAST. Many runs (sweep files,
executors, collected tables, the committed results) are :mod:`stabkit.sweeps`; the GPU campaign is
:mod:`stabkit.campaign`.

The package, one concern per module (each imports only the ones above it and the core of stabkit):

- :mod:`~stabkit.runs.paths`: where runs, results and sweep files live (torch-free);
- :mod:`~stabkit.runs.config`: :class:`RunConfig` and its key (torch-free);
- :mod:`~stabkit.runs.validation`: :func:`validate`, the checks against the registries before training;
- :mod:`~stabkit.runs.folder`: a run's folder, its state and lock (:class:`RunLock`, from :mod:`stabkit.locks`),
  :func:`verify_run`; :mod:`~stabkit.runs.provenance`: the code state and versions of a result;
- :mod:`~stabkit.runs.measurements`: the ``MEASUREMENTS`` / ``AUGMENTATIONS`` registries, the paper's
  measurements, and the related probes of :mod:`~stabkit.runs.probe_measurements` registered;
- :mod:`~stabkit.runs.tasks`: task data, loaders, normalisation, the network, the probe set, ``RunContext``;
- :mod:`~stabkit.runs.execute`: :func:`run` and :func:`remeasure` (one measurement loop).

Extension points: ``MEASUREMENTS`` (name -> ``fn(model, cfg, ctx) -> dict[table, DataFrame]``, registered
with :func:`register_measurement`) and ``AUGMENTATIONS`` (name -> ``fn(x, generator) -> x`` applied on the
device to every training batch after crop/flip, before normalisation, registered with
:func:`register_augmentation`); modules named in ``$STABKIT_PLUGINS`` (comma-separated) are imported before a
run so that the command line finds a user's own measurements.

Public names load on first use (:mod:`stabkit.lazy`): ``from stabkit.runs import RunConfig`` stays torch-free.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_face

#: Public name -> the module of this package that defines it.
_NAMES = {
    **dict.fromkeys(("FORMAT_VERSION", "MEASUREMENT_FIELDS", "RunConfig", "training_key"), "config"),
    **dict.fromkeys(("validate", "known_nets"), "validation"),
    **dict.fromkeys(("run", "remeasure", "resolve_device", "find_trained", "finished_training", "TRAINED_FILE"),
                    "execute"),
    **dict.fromkeys(("MEASUREMENTS", "AUGMENTATIONS", "register_measurement", "register_augmentation"),
                    "measurements"),
    **dict.fromkeys(("TABLES", "KNOWN_TABLES", "RunLock", "RunLocked", "run_dir", "run_state", "verify_run",
                     "progress_line"), "folder"),
    "git_state": "provenance",
    **dict.fromkeys(("default_runs_root", "default_results_root", "sweeps_dir"), "paths"),
}
_SUBMODULES = ("config", "validation", "execute", "measurements", "probe_measurements", "tasks", "folder", "paths",
               "provenance")

__all__ = list(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES, _SUBMODULES)

if TYPE_CHECKING:  # for type checkers and readers: the names __getattr__ serves
    from .config import FORMAT_VERSION, MEASUREMENT_FIELDS, RunConfig, training_key  # noqa: F401
    from .execute import TRAINED_FILE, find_trained, finished_training, remeasure, resolve_device, run  # noqa: F401
    from .folder import KNOWN_TABLES, TABLES, RunLock, RunLocked, progress_line, run_dir, run_state  # noqa: F401
    from .folder import verify_run  # noqa: F401
    from .measurements import AUGMENTATIONS, MEASUREMENTS, register_augmentation, register_measurement  # noqa: F401
    from .paths import default_results_root, default_runs_root, sweeps_dir  # noqa: F401
    from .provenance import git_state  # noqa: F401
    from .validation import known_nets, validate  # noqa: F401
