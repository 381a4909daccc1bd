"""Checkpoint files of a training, written atomically (``stabkit.atomic``) and read with
``torch.load(..., weights_only=True)``: the one module that knows their names and formats.

**Public API**

- ``CheckpointFolder(path, net, key)``: the files one training leaves in its folder: ``best.pt`` /
  ``last.pt`` (:meth:`~CheckpointFolder.save`, :meth:`~CheckpointFolder.load`), ``resume.pt`` (the
  training state while it trains: :meth:`~CheckpointFolder.read_resume`, :meth:`~CheckpointFolder.write_resume`,
  :meth:`~CheckpointFolder.resume_epoch`), and the trained-network record ``trained.json`` +
  ``metrics.parquet`` (:meth:`~CheckpointFolder.finished`, :meth:`~CheckpointFolder.record_finished`);
  :meth:`~CheckpointFolder.copy_from` re-tags another run's checkpoints, :meth:`~CheckpointFolder.problems`
  lists what is wrong with them.
- ``save_checkpoint(path, state_dict, *, net, config_hash, **extra)``, ``load_checkpoint(path, *, net=None,
  config_hash=None) -> (state_dict, meta)``, :class:`CheckpointError`.

Formats (unchanged since they were written by ``stabkit.train``; files of older runs load as they are):
a checkpoint is ``{"meta": {"format": CHECKPOINT_FORMAT, "net", "config_hash", **extra}, "state_dict"}``;
a resume file is ``{"meta": {"format": RESUME_FORMAT, "net", "config_hash"}, "seconds", "rows", "model",
"optimizer", "schedule", "best": {"score", "epoch", "state"}, "gen", "rng_cpu", "rng_cuda",
"loader_epochs"}``.

Torch is imported when a file is read or written, not with the module: the runs layer, which must load
a sweep without torch, names these files and folders at import.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .atomic import atomic_write, atomic_write_json, atomic_write_table

if TYPE_CHECKING:
    import torch

__all__ = ["CHECKPOINT_FORMAT", "RESUME_FILE", "RESUME_FORMAT", "TRAINED_FILE", "CHECKPOINTS", "TRAINING_OUTPUTS",
           "CheckpointError", "CheckpointFolder", "save_checkpoint", "load_checkpoint"]

#: Format tag stored in every checkpoint; checkpoints without it (or with another) are refused.
CHECKPOINT_FORMAT = "stabkit-checkpoint/1"
#: The training state written into the folder while it trains (removed when training ends), and its tag.
RESUME_FILE, RESUME_FORMAT = "resume.pt", "stabkit-resume/1"
#: Written (atomically, after the checkpoints and metrics) when a training has ended: the summary's
#: training columns. A run killed while it measures keeps its training and measures again.
TRAINED_FILE = "trained.json"
#: The checkpoints of a finished training (best test error, last epoch).
CHECKPOINTS = ("best.pt", "last.pt")
#: What a finished training leaves beside :data:`TRAINED_FILE`.
TRAINING_OUTPUTS = (*CHECKPOINTS, "metrics.parquet")


class CheckpointError(ValueError):
    """A checkpoint file is corrupted, is not a stabkit checkpoint, or belongs to another run/net."""


def _torch_save(obj: Any, path: Path) -> Path:
    import torch
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(path: str | Path, state_dict: Mapping[str, torch.Tensor], *, net: str, config_hash: str,
                    **extra: Any) -> Path:
    """Write ``{"meta": {format, net, config_hash, **extra}, "state_dict": ...}`` atomically (tmp + replace).

    ``extra`` values must be plain Python scalars/strings so that the file loads with ``weights_only=True``.
    """
    meta = {"format": CHECKPOINT_FORMAT, "net": str(net), "config_hash": str(config_hash)}
    for k, v in extra.items():
        if not (v is None or isinstance(v, (str, int, float, bool))):
            raise ValueError(f"checkpoint metadata {k!r} must be a str/int/float/bool/None, got {type(v).__name__}")
        meta[k] = v
    import torch
    sd = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state_dict.items()}
    return _torch_save({"meta": meta, "state_dict": sd}, Path(path))


def _load_tagged(path: Path, fmt: str, what: str, kind: str, map_location: Any = "cpu",
                 mmap: bool = False) -> tuple[dict, dict]:
    """``(content, meta)`` of a file written with ``{"meta": {"format": fmt, ...}}``; :class:`CheckpointError`
    naming the file when it is unreadable or of another format. ``what``/``kind``: the file's name in the
    messages ("checkpoint", "torch checkpoint" / "resume file", "torch file")."""
    import torch
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip failure means an unusable file
        raise CheckpointError(f"{what} {path} is corrupted or not a {kind} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path} is not a stabkit {what} (expected format tag {fmt!r}, found {found!r})")
    return obj, meta


def load_checkpoint(path: str | Path, *, net: str | None = None, config_hash: str | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(..., weights_only=True)``.

    Raises :class:`CheckpointError` (a ``ValueError``) naming the file when it is missing, truncated or
    corrupted, not a stabkit checkpoint (no/other format tag), or when ``net`` / ``config_hash`` are given
    and differ from the ones it records.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    obj, meta = _load_tagged(path, CHECKPOINT_FORMAT, "checkpoint", "torch checkpoint", map_location)
    if not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a stabkit checkpoint (expected format tag {CHECKPOINT_FORMAT!r}, "
                              f"found {meta.get('format')!r})")
    if net is not None and meta.get("net") != net:
        raise CheckpointError(f"checkpoint {path} holds net {meta.get('net')!r}, expected {net!r}")
    if config_hash is not None and meta.get("config_hash") != config_hash:
        raise CheckpointError(f"checkpoint {path} belongs to run {meta.get('config_hash')!r}, "
                              f"expected {config_hash!r}")
    return obj["state_dict"], meta


@dataclass(frozen=True)
class CheckpointFolder:
    """The checkpoint files of the training of network ``net`` for run ``key`` in folder ``path``.

    Every read checks that a file belongs to this net and run (:class:`CheckpointError` otherwise); every
    write is atomic. ``kind`` names a checkpoint: ``"best"`` (lowest selection error, the one the paper
    analyses) or ``"last"``.
    """
    path: Path
    net: str
    key: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "net", str(self.net))
        object.__setattr__(self, "key", str(self.key))

    def file(self, kind: str) -> Path:
        """``<path>/<kind>.pt`` for ``kind`` in {"best", "last"}."""
        if kind not in ("best", "last"):
            raise ValueError(f"kind must be one of ['best', 'last'], got {kind!r}")
        return self.path / f"{kind}.pt"

    @property
    def resume_file(self) -> Path:
        return self.path / RESUME_FILE

    # ---------------------------------------------------------------------------------- best / last
    def save(self, which: str, state_dict: Mapping[str, torch.Tensor], **extra: Any) -> Path:
        """Write checkpoint ``which`` ("best" or "last") tagged with this net and run; its metadata records
        ``kind=which`` and ``extra`` (scalars)."""
        return save_checkpoint(self.file(which), state_dict, net=self.net, config_hash=self.key,
                               **{"kind": which, **extra})

    def load(self, kind: str = "best", map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
        """``(state_dict, meta)`` of checkpoint ``kind``, checked against this net and run."""
        return load_checkpoint(self.file(kind), net=self.net, config_hash=self.key, map_location=map_location)

    def problems(self) -> list[str]:
        """What is wrong with :data:`CHECKPOINTS` (missing, truncated or corrupted, another net or run),
        each naming the file; empty when both load."""
        out = []
        for kind in ("best", "last"):
            try:
                self.load(kind)
            except Exception as exc:  # noqa: BLE001 - torch raises several kinds for a damaged file
                out.append(f"{self.file(kind)}: {' '.join(str(exc).split())[:300]}")
        return out

    def copy_from(self, donor: CheckpointFolder, **extra: Any) -> None:
        """Copy ``donor``'s checkpoints here, re-tagged with this run (their metadata kept, ``extra`` added,
        e.g. ``trained_by``)."""
        for kind in ("best", "last"):
            sd, meta = donor.load(kind)
            kept = {k: v for k, v in meta.items() if k not in ("format", "net", "config_hash", "kind")}
            self.save(kind, sd, **{**kept, **extra})

    # ---------------------------------------------------------------------------------- resume.pt
    def read_resume(self, mmap: bool = False) -> dict | None:
        """The training state in :data:`RESUME_FILE` (``None`` when there is none); :class:`CheckpointError`
        when it is unreadable or of another net or run. ``mmap``: tensors mapped, not read (metadata only)."""
        if not self.resume_file.is_file():
            return None
        obj, info = _load_tagged(self.resume_file, RESUME_FORMAT, "resume file", "torch file", mmap=mmap)
        for k, want in (("net", self.net), ("config_hash", self.key)):
            if want != info.get(k):
                raise CheckpointError(f"resume file {self.resume_file} holds {k} {info.get(k)!r}, expected {want!r}")
        return obj

    def write_resume(self, state: Mapping[str, Any]) -> Path:
        """Write the training state ``state`` (the keys of the module's docstring but ``meta``) atomically."""
        meta = {"format": RESUME_FORMAT, "net": self.net, "config_hash": self.key}
        return _torch_save({"meta": meta, **state}, self.resume_file)

    def resume_epoch(self) -> int | None:
        """Epochs done in :data:`RESUME_FILE`, or ``None`` when there is none, it cannot be read, or it
        belongs to another net or run: a state a training can continue from."""
        try:
            state = self.read_resume(mmap=True)
            return None if state is None else len(state["rows"])
        except (CheckpointError, KeyError, TypeError):
            return None

    def drop_resume(self) -> None:
        self.resume_file.unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------- trained.json
    def finished(self) -> tuple[dict, pd.DataFrame] | None:
        """The ended training of this folder (:data:`TRAINED_FILE` of this run beside
        :data:`TRAINING_OUTPUTS`): its summary columns and metrics; else ``None`` (absent or damaged: the
        network is trained again)."""
        try:
            info = json.loads((self.path / TRAINED_FILE).read_text())
            if info.get("key") != self.key or not all((self.path / f).is_file() for f in TRAINING_OUTPUTS):
                return None
            return dict(info["training"]), pd.read_parquet(self.path / "metrics.parquet")
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def record_finished(self, training: Mapping[str, Any], metrics: pd.DataFrame) -> None:
        """Write ``metrics.parquet``, then :data:`TRAINED_FILE` (after what it vouches for)."""
        atomic_write_table(self.path / "metrics.parquet", metrics)
        atomic_write_json(self.path / TRAINED_FILE, {"key": self.key, "training": dict(training)})
