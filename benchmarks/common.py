"""Shared helpers of the benchmark suite: timing, machine description, peak memory, CIFAR samples."""
from __future__ import annotations

import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
#: The shared CIFAR-10 archive (32x32 JPEGs); random images are used when it is absent.
CIFAR_TAR = Path(os.environ.get("STABKIT_CIFAR_TAR", "/work/shared/data/cifar10-jpeg.tar.gz"))
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class Result:
    """One benchmark line: ``seconds`` are the repeats of one variant of one case."""

    case: str
    variant: str
    seconds: list[float]
    items: int | None = None          # images processed per repeat (for a throughput column)
    unit: str = "images"
    memory: dict | None = None        # peak_memory_mb(...) of a fresh process running it once
    cpu_seconds: list[float] | None = None  # CPU time of the process per repeat (all threads)
    notes: str = ""
    baseline: bool = False            # the naive reference of its case (speed-ups are relative to it)
    extra: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else None

    @property
    def throughput(self) -> float | None:
        return None if not self.items else self.items / self.median


def sync(device: torch.device | str | None = None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 1,
           device: torch.device | str | None = None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                device: torch.device | str | None = None,
                cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Time several variants round-robin (A B C A B C ...) so that they share any drift in the load of a
    shared machine; ``warmup`` untimed rounds first. Returns ``{name: [wall seconds per repeat]}``; if
    ``cpu`` is a dict it receives ``{name: [CPU seconds of this process (all threads) per repeat]}``,
    which a busy machine distorts much less than wall time."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for name in fns:
        if cpu is not None:
            cpu[name] = []
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t, c = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            out[name].append(time.perf_counter() - t)
            if cpu is not None:
                cpu[name].append(time.process_time() - c)
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the numbers were measured on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    info = {
        "cpu": cpu_model(),
        "cores_usable": cores,
        "cores_total": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    else:
        info["gpu"] = "none (torch.cuda.is_available() is False)"
    return info | load_average("load_average_at_start")


def load_average(key: str) -> dict[str, str]:
    """``{key: "1-, 5- and 15-minute load averages"}``, or ``{}`` where the platform has none."""
    try:
        return {key: " ".join(f"{v:.2f}" for v in os.getloadavg())}
    except OSError:
        return {}


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "numpy", "pandas", "pillow", "psutil", "stabkit"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


# ------------------------------------------------------------------------------------------ data
def cifar_sample(n: int, train: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    key = (str(CIFAR_TAR), n, train, seed)
    if key not in _SAMPLES:
        _SAMPLES[key] = _cifar_sample(n, train, seed)
    return _SAMPLES[key]


_SAMPLES: dict = {}


def _cifar_sample(n: int, train: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` CIFAR-10 images as uint8 ``[n, 32, 32, 3]`` (HWC, like torchvision's CIFAR10) and labels.

    Read straight from the shared JPEG archive (the first ``n`` of the split in archive order after a
    seeded shuffle of the members); when the archive is absent, seeded random images. The third value says
    which ("cifar10-jpeg" or "random").
    """
    from PIL import Image

    if CIFAR_TAR.exists():
        split = "train" if train else "test"
        members = []
        with tarfile.open(CIFAR_TAR) as tf:
            names = [m for m in tf.getmembers() if m.isfile() and f"/{split}/" in m.name]
            rng = np.random.default_rng(seed)
            pick = rng.permutation(len(names))[:n]
            chosen = sorted((names[i] for i in pick), key=lambda m: m.offset)
            for m in chosen:
                label = CLASSES.index(m.name.split("/")[-2])
                img = np.asarray(Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB"))
                members.append((img, label))
        if len(members) == n:
            return (np.stack([m[0] for m in members]), np.array([m[1] for m in members], np.int64),
                    "cifar10-jpeg")
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, size=n).astype(np.int64), "random")


def random_images(n: int, side: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Smooth-ish random float32 images ``[n, C, side, side]`` in [0, 1] (a blurred noise field)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, side // 4 + 1, side // 4 + 1, generator=g)
    return torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=True)


# --------------------------------------------------------------------------------- peak memory
def peak_memory_mb(case: str, variant: str, args: dict, timeout: float = 900) -> dict | None:
    """Peak resident memory of a fresh interpreter that prepares ``case``'s inputs and runs ``variant``
    once: ``{"peak_mb": VmHWM of the child, "before_mb": its peak once the inputs were ready}`` (MiB;
    the difference is what the variant itself added). None if the child failed."""
    cmd = [sys.executable, "-m", "benchmarks._memprobe", case, variant, json.dumps(args)]
    env = dict(os.environ)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-2000:])
        return None
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, KeyError, IndexError):
        return None


def self_peak_mb() -> float:
    """Peak resident memory of this process so far, MiB: ``VmHWM`` of ``/proc/self/status`` (per address
    space, so a fresh child does not inherit its parent's peak, as ``ru_maxrss`` does across fork + exec
    on Linux); ``ru_maxrss`` where there is no ``/proc``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
