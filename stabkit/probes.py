"""The probe set of the stability measurements (``book/methods.md``, sections "Random diffeomorphisms" to
"Stabilities"): :class:`Probes` ``(x, x_tau, x_eta)``, the clean probes, their deformed versions and their noisy
versions, and :func:`draw_probes`, which makes them from images. :func:`stabkit.stability.measure` measures a
network on them; the checks here are the ones every probe tensor goes through (floating network inputs,
``P >= 2``, finite values).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .checks import check_choice, check_device, check_int
from .transforms.diffeo import deform, diffeo_batch
from .transforms.noise import noisy_batch

__all__ = ["Probes", "draw_probes", "as_probes", "check_network_input", "check_probe_tensor"]


class Probes(NamedTuple):
    """A probe set (``book/methods.md``, sections "Random diffeomorphisms" to "Stabilities"): three
    tensors of the same shape ``[P, ...]`` (``P >= 2``), the clean probes ``x``, their deformed versions
    ``x_tau`` and their noisy versions ``x_eta`` (per-probe noise norm ``||x_tau_i - x_i||``)."""

    x: torch.Tensor
    x_tau: torch.Tensor
    x_eta: torch.Tensor


def draw_probes(x: torch.Tensor, *, delta: float = 1.0, cut: int = 3, interpolation: str = "bilinear",
                generator: torch.Generator | None = None, seed: int = 0,
                device: str | torch.device | None = None) -> Probes:
    """The probe set of images ``x``: ``Probes(x, x_tau, x_eta)``, float64, on ``device`` (default: ``x``'s).

    Args:
        x: ``[P, C, n, n]`` images as the network takes them (``P >= 2``, floating, square).
        delta: typical displacement of the diffeomorphisms in pixels (the paper: 1).
        cut: mode cut-off of the diffeomorphisms (the paper: 3).
        interpolation: ``"bilinear"`` (the paper's), ``"nearest"`` or ``"gaussian"``; see
            :func:`stabkit.transforms.deform`.
        generator: source of every draw (default: a CPU generator seeded with ``seed``, so that the same
            seed gives the same probes bit for bit on any device).
        seed: used only when ``generator`` is ``None``.
        device: where the probes are made and returned.

    ``x_tau = diffeo_batch(x, delta, cut, interpolation)`` (one field per image), then
    ``x_eta = noisy_batch(x, x_tau)`` (per-image noise of norm ``||x_tau_i - x_i||``), drawn in this order.
    The returned ``x`` is ``x`` itself (in float64) except for ``interpolation="gaussian"``, whose kernel
    blurs: then it is ``deform(x, 0, cut, "gaussian")``, so that clean and deformed probes are blurred alike.
    """
    check_choice("interpolation", interpolation, ("bilinear", "nearest", "gaussian"))
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be images [P, C, n, n] to draw diffeomorphisms; got {shape} "
                         f"(for other inputs make a Probes(x, x_tau, x_eta) and pass it to measure)")
    x = check_network_input(x, "x")
    if generator is None:
        generator = torch.Generator().manual_seed(check_int("seed", seed))
    if device is not None:
        device = torch.device(check_device("device", device))
    x64 = x.to(device=device if device is not None else x.device, dtype=torch.float64)
    x_tau = diffeo_batch(x64, delta=delta, cut=cut, interpolation=interpolation, generator=generator)
    x0 = deform(x64, 0.0, cut, interpolation="gaussian") if interpolation == "gaussian" else x64
    x_eta = noisy_batch(x0, x_tau, generator=generator)
    return Probes(x0, x_tau, x_eta)


def check_probe_tensor(t: torch.Tensor, name: str) -> torch.Tensor:
    """A tensor ``[P, ...]`` of ``P >= 2`` probes (or of a function's values on them), finite; integer values
    are converted to float64. ``TypeError`` / ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [P, ...]; got {type(t).__name__}")
    if t.ndim < 1 or t.shape[0] < 2:
        raise ValueError(f"{name} must have shape [P, ...] with at least P = 2 probes; "
                         f"got shape {tuple(t.shape)}")
    if not (t.dtype.is_floating_point or t.dtype.is_complex):
        t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must not contain NaN or inf")
    return t


def check_network_input(t: torch.Tensor, name: str) -> torch.Tensor:
    """A network input ``[P, ...]``: floating (pixel bytes refused), finite, ``P >= 2``."""
    if isinstance(t, torch.Tensor) and t.dtype == torch.uint8:
        # Other entry points take pixel-space images and normalise them; measure takes the network's input
        # as it is, so a silent /255 would feed unnormalised images to a net trained on normalised ones.
        raise ValueError(f"{name} is uint8 (pixel values 0..255); measure takes the network's input as "
                         f"floats: convert with {name}.float() / 255 (then normalise as in training)")
    if isinstance(t, torch.Tensor) and not t.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating tensor (the network's input); got dtype {t.dtype}")
    return check_probe_tensor(t, name)


def as_probes(probes: Probes | Sequence[torch.Tensor] | torch.Tensor, delta: float | None, cut: int | None,
              interpolation: str | None, seed: int | None, device: torch.device) -> tuple[Probes, str]:
    """The probe set :func:`stabkit.stability.measure` measures, and the name of its clean part for error
    messages: images ``x`` ``[P, C, n, n]`` drawn into probes (:func:`draw_probes`, defaults 1, 3, "bilinear",
    0), or a given :class:`Probes` checked as it is (then ``delta``, ``cut``, ``interpolation`` must be None)."""
    if isinstance(probes, torch.Tensor):
        check_network_input(probes, "x")
        drawn = draw_probes(probes, delta=1.0 if delta is None else delta, cut=3 if cut is None else cut,
                            interpolation="bilinear" if interpolation is None else interpolation,
                            seed=0 if seed is None else seed, device=device)
        return drawn, "x"
    if any(v is not None for v in (delta, cut, interpolation)):
        raise ValueError("delta, cut and interpolation apply only when measure is given images x to draw "
                         "probes from; a Probes set is measured as it is")
    if probes is None:
        raise ValueError("probes must be a Probes(x, x_tau, x_eta) (see draw_probes) or images x [P, C, n, n]; "
                         "got None")
    if not (isinstance(probes, (list, tuple)) and len(probes) == 3):
        raise ValueError(f"probes must be a Probes(x, x_tau, x_eta) of three tensors [P, ...] or images x "
                         f"[P, C, n, n]; got {type(probes).__name__}")
    parts = [check_network_input(t, f"probes.{field}") for t, field in zip(probes, Probes._fields)]
    if not (parts[0].shape == parts[1].shape == parts[2].shape):
        raise ValueError(f"probes must have equal shapes; got {[tuple(t.shape) for t in parts]}")
    return Probes(*parts), "probes.x"
