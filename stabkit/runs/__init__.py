"""Runs and sweeps: one frozen configuration -> one folder of result tables (resumable, like ``grid``).

A run is a :class:`RunConfig`. Its hash (with :data:`~stabkit.runs.config.FORMAT_VERSION`) names its folder
``<root>/<key>``; :func:`run` trains the network, then measures it in the same process (output and layer-by-layer
stabilities at initialisation and after training, with/without channel shuffling, filter spectra, test
errors), writes every file atomically and writes the ``done`` marker LAST.

A sweep is a YAML file under ``sweeps/`` (see :func:`load_sweep` for the format) with scales
``tiny | small | cpu | gpu | paper``. :func:`sweep` skips finished runs, redoes interrupted ones and
records failed ones (``status.json`` + ``error.txt``) without stopping. :func:`collect` gathers one table
of the finished runs into one tidy DataFrame with the configuration columns; :func:`~stabkit.runs.lookup.results` is the
notebooks' entry point (committed tables under ``results/<sweep>/<scale>/`` first, else run the sweep,
then collect); :func:`~stabkit.runs.resultstore.export` writes the collected tables and ``provenance.json`` for
committing.

The package, one concern per module (each imports only the ones above it and the core of stabkit):

- :mod:`~stabkit.runs.paths`: where runs, results and sweep files live (torch-free);
- :mod:`~stabkit.runs.config`: :class:`RunConfig` and its key (torch-free);
- :mod:`~stabkit.runs.sweepfile`: the sweep YAML grammar, :class:`Sweep`, :func:`load_sweep` (torch-free);
- :mod:`~stabkit.runs.store`: run folders, locks, states, :func:`collect`, :func:`status`,
  :func:`~stabkit.runs.resultstore.export`, provenance;
- :mod:`~stabkit.runs.measurements`: the :data:`~stabkit.runs.measurements.MEASUREMENTS` /
  :data:`~stabkit.runs.measurements.AUGMENTATIONS` registries and every built-in measurement;
- :mod:`~stabkit.runs.tasks`: task data, loaders, normalisation, the network, the probe set,
  :class:`RunContext`;
- :mod:`~stabkit.runs.execute`: :func:`run` and :func:`remeasure` (one measurement loop);
- :mod:`~stabkit.runs.executors`: :func:`sweep` (local pool, submitit) and :func:`~stabkit.runs.lookup.results`.

Extension points: :data:`~stabkit.runs.measurements.MEASUREMENTS`
(name -> ``fn(model, cfg, ctx) -> dict[table, DataFrame]``, registered with :func:`register_measurement`) and
:data:`~stabkit.runs.measurements.AUGMENTATIONS` (name -> ``fn(x, generator) -> x`` applied on the device to every
training batch after crop/flip, before normalisation, registered with :func:`register_augmentation`); modules named
in ``$STABKIT_PLUGINS`` (comma-separated) are imported before a run so that the command line finds a user's own
measurements.
"""
from __future__ import annotations

from .config import (DERIVED_FIELDS, FORMAT_VERSION, MEASUREMENT_FIELDS, STATES, TASKS, RunConfig,
                     deferred_registry_checks, known_nets, training_key)
from .execute import (TRAINED_FILE, check_measurements, device_name, find_trained, finished_training, measure_states,
                      remeasure, resolve_device, run)
from .executors import EXECUTORS, failure_summary, run_threads, sweep
from .locks import RunLock, lock_held
from .measurements import AUGMENTATIONS, MEASUREMENTS, load_plugins, register_augmentation, register_measurement
from .paths import default_results_root, default_runs_root, sweeps_dir
from .lookup import RECOMPUTE_ENV, RunsFailedError, coverage_facts, recompute_requested, resolve_scale, results
from .resultstore import (SCALE_ORDER, committed_keys, committed_runs, committed_scales, export, import_runs, load,
                          merge_runs, store_dir)
from .store import (KNOWN_TABLES, TABLES, RunLocked, collect, config_columns, git_state, progress_line, provenance,
                    run_dir, run_state, status, verify_run)
from .sweepfile import SCALES, Sweep, as_sweep, load_sweep, sweep_path, sweep_scales
from .tasks import RunContext, TaskData, build_net, loader, normalize, probe_set, task_data

__all__ = [
    "FORMAT_VERSION", "RunConfig", "RunContext", "Sweep", "MEASUREMENTS", "AUGMENTATIONS",
    "register_measurement", "register_augmentation", "default_runs_root", "default_results_root",
    "sweeps_dir", "run", "remeasure", "run_dir", "RunLocked", "run_state", "progress_line", "load_sweep", "sweep",
    "collect", "status", "results", "export", "resolve_device", "TABLES", "SCALES",
    # new names of the package split
    "TASKS", "STATES", "DERIVED_FIELDS", "EXECUTORS", "TaskData", "as_sweep", "build_net", "check_measurements",
    "config_columns", "deferred_registry_checks", "device_name", "git_state", "known_nets",
    "load_plugins", "loader", "measure_states", "normalize", "probe_set", "provenance", "sweep_path",
    "sweep_scales", "task_data",
    # the results store (runs/resultstore.py) and the notebooks' lookup (runs/lookup.py)
    "RECOMPUTE_ENV", "SCALE_ORDER", "committed_keys", "committed_runs", "committed_scales", "coverage_facts",
    "import_runs", "load", "merge_runs", "recompute_requested", "resolve_scale", "store_dir",
    # runs reliability (issue 15)
    "KNOWN_TABLES", "RunLock", "lock_held", "run_threads", "verify_run",
    # a network trained once for every run that measures it
    "MEASUREMENT_FIELDS", "training_key", "find_trained", "finished_training", "TRAINED_FILE",
    # failures carry their cause (issue 25)
    "RunsFailedError", "failure_summary",
]
