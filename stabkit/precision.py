"""How training arithmetic runs: the precision modes, TF32 flags and deterministic algorithms
(``book/methods.md``, "Training"). :func:`stabkit.train.train` enters them; the smoke test and the
benchmarks read them.

**Public API**
``float32_mode(device_type, fast, precision) -> "strict" | "tf32" | None``, ``float32_flags(mode)`` (context)
``autocast(device, fast, precision)``                    bf16 autocast for ``bf16`` / ``fast`` on CUDA, else nothing
``cpu_supports_bf16() -> bool``                          native bfloat16 on this CPU
``cpu_name() -> str``                                    this CPU's model and widest vector instructions
``deterministic_mode(enabled)``                          context: deterministic algorithms and cuDNN flags
``tf32_state() -> {"matmul", "cudnn_conv"}``              whether float32 may use TF32 (never raises)
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch

from . import graph

__all__ = ["float32_mode", "float32_flags", "autocast", "cpu_supports_bf16", "cpu_name", "deterministic_mode",
           "tf32_state"]

#: Vector instruction sets, widest first: what sets a CPU's training speed here (bf16 is native from avx512_bf16).
_ISAS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "avx")


def float32_mode(device_type: str, fast: bool, precision: str) -> str | None:
    """How float32 matmuls and convolutions run in training: ``"strict"`` (TF32 off: ``precision="float32"``
    on CUDA without ``fast``; torch's default would round cuDNN convolutions' inputs to TF32), ``"tf32"``
    (``precision="tf32"`` on CUDA: TF32 on for both), or None (torch's flags untouched: the CPU, where
    TF32 does not exist, and the bf16 modes)."""
    if device_type != "cuda" or fast or precision == "bf16":
        return None
    return "tf32" if precision == "tf32" else "strict"


@contextlib.contextmanager
def float32_flags(mode: str | None) -> Iterator[None]:
    with (graph.strict_float32(mode == "strict") if mode != "tf32" else graph.tf32_float32()):
        yield


def autocast(device: torch.device, fast: bool, precision: str = "float32"):
    """bf16 autocast for ``precision="bf16"`` (CPU or CUDA) and for ``fast`` on CUDA; else nothing."""
    if precision == "bf16" or (fast and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of ``/proc/cpuinfo`` (``{}`` where there is none: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        k, sep, v = line.partition(":")
        if sep:
            info[k.strip()] = v.strip()
    return info


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (avx512_bf16 or AMX), where ``precision="bf16"``
    measured 1.7-1.9x faster per training step; elsewhere bf16 autocast is emulated and may be slower."""
    try:
        from torch.backends import cpu as _cpu
        caps = str(_cpu.get_cpu_capability()).lower()
    except Exception:  # noqa: BLE001 - old torch: read the flags directly
        caps = ""
    flags = _cpuinfo().get("flags", "").split()
    return "amx" in caps or "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_name() -> str:
    """This CPU as run records name it, e.g. ``"AMD EPYC (family 25 model 1, avx2)"``: the model name, then
    family and model (virtual machines show one model name for several generations: the AVX2-only and the
    avx512_bf16 EPYC of this project both read "AMD EPYC") and the widest vector instruction set, which set
    a training step's pace. Where ``/proc/cpuinfo`` is absent: ``platform.processor()``."""
    import platform

    info = _cpuinfo()
    if not info:
        return platform.processor() or platform.machine() or "cpu"
    flags = set(info.get("flags", "").split())
    isa = next((f for f in _ISAS if f in flags), None)
    parts = [f"family {info['cpu family']} model {info['model']}" if "cpu family" in info and "model" in info
             else None, isa]
    detail = ", ".join(p for p in parts if p)
    name = info.get("model name") or platform.processor() or platform.machine() or "cpu"
    return f"{name} ({detail})" if detail else name


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[list[str]]:
    """Within the block: ``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN deterministic
    and not benchmarking, and (for cuBLAS) ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set; every flag is
    restored afterwards. ``enabled=False`` changes nothing.

    Yields a list that collects the names of the operations that have no deterministic implementation
    and ran in the block (torch warns instead of failing: e.g. the CUDA backward of adaptive average
    pooling), so that a run can record how deterministic it really was. On the CPU the kernels used by
    stabkit's networks are deterministic already: results are the same with and without this mode.
    """
    ops: list[str] = []
    if not enabled:
        yield ops
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    # read by cuBLAS when its handle is created: effective if nothing ran on CUDA before in this process
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    show = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if category is UserWarning and "does not have a deterministic implementation" in text:
            name = text.split(" does not have")[0].strip()
            if name not in ops:
                ops.append(name)
            return
        show(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            # every such op is seen in every block (not once per process); other warnings keep their filters
            warnings.filterwarnings("always", message=".*does not have a deterministic implementation",
                                    category=UserWarning)
            warnings.showwarning = record
            yield ops
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def tf32_state() -> dict[str, bool | None]:
    """Whether float32 matrix products (``matmul``) and cuDNN convolutions (``cudnn_conv``) may use TF32.

    Read through the per-backend ``fp32_precision`` flags where torch has them (2.9 and later), else the
    legacy ``allow_tf32`` flags, and never raises: on torch 2.9-2.11 reading a legacy flag after a write
    through the new API (as ``stabkit.graph.strict_float32`` does) raises a "mix of the legacy and new
    APIs" ``RuntimeError``. ``None`` where neither can be read."""
    b = torch.backends

    def read(new_obj, legacy_obj, legacy_attr):
        prec = getattr(new_obj, "fp32_precision", None) if new_obj is not None else None
        if prec == "tf32":
            return True
        if prec == "ieee":
            return False
        try:  # "none" (never set through the new API) or no new API: the legacy flag decides
            return bool(getattr(legacy_obj, legacy_attr))
        except (RuntimeError, AttributeError):
            return None
    return {"matmul": read(b.cuda.matmul, b.cuda.matmul, "allow_tf32"),
            "cudnn_conv": read(getattr(b.cudnn, "conv", None), b.cudnn, "allow_tf32")}
