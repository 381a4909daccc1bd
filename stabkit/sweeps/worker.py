"""One run as every executor starts it (the sequential loop, a local pool's worker, a submitit job, the campaign's
workers): :func:`run_guarded` never raises and runs with :func:`~stabkit.sweeps.run_threads` torch threads,
whatever ``jobs`` is, so that results do not depend on how many runs go at once.
"""
from __future__ import annotations

import os

from ..checks import check_int
from ..runs.config import RunConfig
from ..runs.execute import run
from ..runs.folder import RunLocked

__all__ = ["run_threads", "run_guarded"]


def run_threads(threads: int | None = None) -> int:
    """Torch threads of every run: ``threads``, else ``$STABKIT_THREADS``, else the CPUs this process
    may use. A property of the machine, never of ``jobs``: float reductions depend on the thread count,
    so the same run gives the same numbers whether the sweep runs 1 or N at a time (with N > 1 the
    threads of the workers oversubscribe the cores: set ``threads`` = cores / N for speed, knowing that
    the last digits may then differ from a run made with another count)."""
    if threads is None:
        env = os.environ.get("STABKIT_THREADS", "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ValueError(f"$STABKIT_THREADS must be an integer >= 1, got {env!r}") from None
        else:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return check_int("threads", threads, minimum=1)


def run_guarded(cfg_dict: dict, root: str, device: str, progress: bool = False, force: bool = False,
                threads: int | None = None) -> tuple[str, str, str]:
    """Worker: run one config with :func:`~stabkit.sweeps.run_threads` torch threads (restored afterwards); never raises.
    Returns (key, status, error line); status ``running`` when another live process holds the run."""
    import torch
    cfg = RunConfig.from_dict(cfg_dict)
    before = torch.get_num_threads()
    torch.set_num_threads(run_threads(threads))
    try:
        run(cfg, root, device=device, progress=progress, force=force)
        return cfg.key, "done", ""
    except RunLocked as exc:
        return cfg.key, "running", str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded in the run folder by run()
        return cfg.key, "failed", f"{type(exc).__name__}: {exc}"
    finally:
        torch.set_num_threads(before)
