"""The scale-detection tasks (``book/methods.md``, "Tasks"): two active pixels,
is their distance small or large?

:func:`~stabkit.data.twopoints_pairs`, :class:`~stabkit.data.TwoPoints`, :func:`~stabkit.data.twopoints_probes`
(2-D, d x d images with two active pixels) and :func:`~stabkit.data.scale1d_pairs`,
:class:`~stabkit.data.ScaleDetection1D`, :func:`~stabkit.data.scale1d_probes` (1-D, appendix). Both share
one split protocol (:class:`~stabkit.data.PairTask`; classes shuffled with the fixed seed
:data:`SHUFFLE_SEED`, the test set does not depend on the training seed).
"""
from __future__ import annotations


import torch

from ..checks import check_float, check_int
from ..transforms import noisy_batch

__all__ = ["SHUFFLE_SEED", "PairTask", "twopoints_pairs", "twopoints_images", "TwoPoints", "twopoints_probes",
           "scale1d_pairs", "scale1d_images", "ScaleDetection1D", "scale1d_probes"]

SHUFFLE_SEED = 123456789
"""Seed of the generator shuffling each class of the scale-detection tasks (fixed, as in the paper)."""


# ----------------------------------------------------------------------------------------------------
# Shared split protocol
# ----------------------------------------------------------------------------------------------------
def _check_int(name: str, value, lo: int = 1) -> int:
    return check_int(name, value, minimum=lo)


def _split(neg: torch.Tensor, pos: torch.Tensor, ptr: int, train: bool, seed: int, testsize: int | None,
           task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The split protocol (``book/methods.md``, "Tasks"). Each class is shuffled by one generator seeded
    :data:`SHUFFLE_SEED` (class 0 first, then class 1); the test set is the last ``testsize/2`` samples of
    each class (class 0 first);
    the training pool is the rest of each class truncated to the smaller of the two; the training set is
    ``ptr`` samples of the pool drawn without replacement by a generator seeded ``seed``.

    Returns ``(items, labels)`` with labels 0 for ``neg`` and 1 for ``pos``.
    """
    g = torch.Generator().manual_seed(SHUFFLE_SEED)
    neg = neg[torch.randperm(len(neg), generator=g)]
    pos = pos[torch.randperm(len(pos), generator=g)]
    half = testsize // 2
    n_min = min(len(neg), len(pos))
    if half < 1 or half > n_min:
        raise ValueError(f"{task}: testsize must be between 2 and {2 * n_min} (the smaller class has {n_min} "
                         f"samples), got {testsize} (default 4*ptr; lower ptr or pass testsize)")
    if not train:
        items = torch.cat([neg[len(neg) - half:], pos[len(pos) - half:]])
        labels = torch.cat([torch.zeros(half, dtype=torch.long), torch.ones(half, dtype=torch.long)])
        return items, labels
    n_pool = min(len(neg), len(pos)) - half
    if ptr > 2 * n_pool:
        raise ValueError(f"{task}: ptr={ptr} is larger than the balanced training pool ({2 * n_pool} samples "
                         f"after setting {2 * half} aside for the test set); lower ptr or testsize")
    pool = torch.cat([neg[:n_pool], pos[:n_pool]])
    labels = torch.cat([torch.zeros(n_pool, dtype=torch.long), torch.ones(n_pool, dtype=torch.long)])
    idx = torch.randperm(2 * n_pool, generator=torch.Generator().manual_seed(seed))[:ptr]
    return pool[idx], labels[idx]


def _subset_probes(positions: torch.Tensor, P: int, generator: torch.Generator) -> torch.Tensor:
    P = _check_int("P", P)
    if P >= len(positions):
        return positions
    return positions[torch.randperm(len(positions), generator=generator)[:P]]


def _matched_noise(x: torch.Tensor, x_tau: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return noisy_batch(x, x_tau, generator=generator)


# ----------------------------------------------------------------------------------------------------
# 2-D scale detection ("twopoints")
# ----------------------------------------------------------------------------------------------------
_NORMS = ("L2", "Linf")


def _norm_name(norm: str) -> str:
    key = str(norm).lower()
    for n in _NORMS:
        if key == n.lower():
            return n
    if key in ("inf", "max", "chebyshev"):
        return "Linf"
    raise ValueError(f"norm must be one of {list(_NORMS)}, got {norm!r}")


def twopoints_pairs(d: int = 28, xi: float = 14.0, gap: float = 2.0, norm: str = "L2",
                    pbc: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """All kept pairs of the 2-D scale-detection task, before balancing and shuffling.

    Candidate positions: every ``(row, col)`` of the ``d x d`` grid with ``row != col`` (the diagonal is
    never used, as in the original), in row-major order. Samples: every unordered pair of distinct
    candidates (``itertools.combinations`` order). Distance: componentwise absolute difference (with
    ``pbc``, ``min(delta, d - delta)``), then its L2 or Linf norm. "Far" if ``dist >= xi + gap/2``,
    "close" if ``dist < xi - gap/2``; pairs in between are dropped.

    Returns:
        ``(far, close)``: int64 ``[n_far, 2, 2]`` and ``[n_close, 2, 2]``: (row, col) of the two points.

    Raises:
        ValueError: ``xi <= 0``, ``gap < 0``, ``d < 2`` or an unknown ``norm``. (A class may be empty
            here; :class:`TwoPoints` refuses that, naming ``xi`` and ``gap``.)
        TypeError: ``d``, ``xi`` or ``gap`` is not a number.
    """
    d = _check_int("d", d, 2)
    norm = _norm_name(norm)
    check_float("xi", xi, positive=True)
    check_float("gap", gap, minimum=0)
    r, c = torch.meshgrid(torch.arange(d), torch.arange(d), indexing="ij")
    keep = r != c
    cand = torch.stack([r[keep], c[keep]], dim=1)                       # [M, 2]
    i, j = torch.triu_indices(len(cand), len(cand), offset=1)
    delta = (cand[i] - cand[j]).abs()
    if pbc:
        delta = torch.minimum(delta, d - delta)
    delta = delta.double()
    dist = delta.norm(dim=1) if norm == "L2" else delta.max(dim=1).values
    pairs = torch.stack([cand[i], cand[j]], dim=1)                      # [n, 2, 2]
    far = pairs[dist >= xi + gap / 2]
    close = pairs[dist < xi - gap / 2]
    return far, close


def twopoints_images(positions: torch.Tensor, d: int) -> torch.Tensor:
    """Images ``float32 [N, 1, d, d]``: zeros with the pixels at ``positions [N, k, 2]`` (row, col) set to
    ``d^2/2`` (two points: mean pixel value 1; coinciding points give one active pixel)."""
    positions = torch.as_tensor(positions, dtype=torch.long)
    n, k = positions.shape[:2]
    x = torch.zeros(n, 1, d, d)
    b = torch.arange(n)[:, None].expand(n, k)
    x[b, 0, positions[..., 0], positions[..., 1]] = d * d / 2
    return x


class PairTask(torch.utils.data.Dataset):
    """Common access of the two-active-pixel tasks: ``.x``, ``.y`` (labels 0/1) and ``.positions``."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def targets(self) -> torch.Tensor:
        return self.y

    @property
    def y_hinge(self) -> torch.Tensor:
        """Hinge targets ``float32``: +1 for label 1, -1 for label 0."""
        return self.y.float() * 2 - 1

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class TwoPoints(PairTask):
    """2-D scale detection: is the distance of the two active pixels of a ``d x d`` image small or large?

    Built on :func:`twopoints_pairs` with the split protocol (``book/methods.md``): each class shuffled by a
    generator seeded 123456789 (far first, then close); test set = the last ``testsize/2`` pairs of each
    class (``testsize = 4*ptr`` by default); training set = ``ptr`` pairs drawn (seeded ``seed``) from the
    rest, truncated to balanced classes. The test set does not depend on ``seed``.

    Attributes:
        x: ``float32 [N, 1, d, d]``, two pixels at ``d^2/2`` (mean pixel value 1).
        y: ``int64 [N]``: 0 far (hinge target -1), 1 close (hinge target +1); ``y_hinge`` = ``2y - 1``.
        positions: ``int64 [N, 2, 2]``: (row, col) of each active pixel.
    """

    def __init__(self, d: int = 28, xi: float = 14.0, gap: float = 2.0, norm: str = "L2", pbc: bool = False,
                 ptr: int = 1024, train: bool = True, seed: int = 0, testsize: int | None = None):
        self.ptr = _check_int("ptr", ptr)
        self.d, self.xi, self.gap, self.norm, self.pbc = int(d), float(xi), float(gap), _norm_name(norm), bool(pbc)
        self.train, self.seed = bool(train), int(seed)
        self.testsize = 4 * self.ptr if testsize is None else _check_int("testsize", testsize, 2)
        far, close = twopoints_pairs(d, xi, gap, norm, pbc)
        for cls, pairs in (("far", far), ("close", close)):
            if len(pairs) == 0:
                raise ValueError(f"TwoPoints: xi={xi!r}, gap={gap!r} leave no {cls} pairs on a {d}x{d} grid "
                                 f"(norm {self.norm}{', periodic' if pbc else ''}): close needs xi - gap/2 > 1, "
                                 f"far needs xi + gap/2 <= the largest distance")
        self.positions, self.y = _split(far, close, self.ptr, self.train, self.seed, self.testsize, "TwoPoints")
        self.x = twopoints_images(self.positions, self.d)


def twopoints_probes(positions: torch.Tensor, d: int, P: int = 500, generator: torch.Generator | None = None,
                     *, return_positions: bool = False):
    """Probe set of the 2-D scale-detection task: clean images, one-pixel moves, matched noise.

    ``P`` pairs are drawn without replacement from ``positions [N, 2, 2]`` (all of them, in order, if
    ``P >= N``). Each of the two active pixels moves by one pixel in one of the 8 directions: a Gaussian
    2-vector ``v`` is normalised and rounded componentwise (``round(v/|v|)``: never zero, one of the 8
    neighbours, each 45-degree sector of directions), and the result is clipped to the image (a pixel on
    the border may then stay). ``x_eta = stabkit.transforms.noisy_batch(x, x_tau)``: Gaussian noise with
    ``||x_eta - x|| = ||x_tau - x||`` per image.

    Args:
        positions: ``int [N, 2, 2]`` (row, col) of the active pixels (e.g. ``TwoPoints(...).positions``).
        d: image side.
        P: number of probes.
        generator: CPU generator for every draw (default: seeded 0).
        return_positions: also return the positions before and after the move.

    Returns:
        ``(x, x_tau, x_eta)``, each ``float32 [P, 1, d, d]`` (``+ (pos, moved)`` ``int64 [P, 2, 2]``).
    """
    d = _check_int("d", d, 2)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.ndim != 3 or positions.shape[1:] != (2, 2):
        raise ValueError(f"positions must be [N, 2, 2] (row, col of two points), got {tuple(positions.shape)}")
    pos = _subset_probes(positions, P, g)
    v = torch.randn(pos.shape, generator=g, dtype=torch.float64)
    step = torch.round(v / v.norm(dim=-1, keepdim=True)).long()
    moved = (pos + step).clamp(0, d - 1)
    x = twopoints_images(pos, d)
    x_tau = twopoints_images(moved, d)
    x_eta = _matched_noise(x, x_tau, g)
    return (x, x_tau, x_eta, pos, moved) if return_positions else (x, x_tau, x_eta)


# ----------------------------------------------------------------------------------------------------
# 1-D scale detection (appendix)
# ----------------------------------------------------------------------------------------------------
def scale1d_pairs(L: int = 128, xi: int = 32, gap: int = 2, task: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of the 1-D scale-detection tasks (before shuffling and balancing).

    Samples: every unordered pair ``i < j`` of positions ``0..L-1``. Task 1: periodic distance
    ``min(j-i, L-(j-i))``; label 1 (+1) if ``< xi - gap``, label 0 (-1) if ``>= xi + gap``, others dropped.
    Task 2: label 1 (+1) iff both points are in the same block ``[k xi, (k+1) xi)``, else 0 (-1).

    Returns:
        ``(neg, pos)``: int64 ``[n, 2]`` positions of the label-0 and label-1 pairs.
    """
    L = _check_int("L", L, 2)
    xi = _check_int("xi", xi, 1)
    if task not in (1, 2):
        raise ValueError(f"task must be 1 (distance) or 2 (same block), got {task!r}")
    i, j = torch.triu_indices(L, L, offset=1)
    pairs = torch.stack([i, j], dim=1)
    if task == 1:
        check_float("gap", gap, minimum=0)
        dist = torch.minimum(j - i, L - (j - i))
        return pairs[dist >= xi + gap], pairs[dist < xi - gap]
    same = (i // xi) == (j // xi)
    return pairs[~same], pairs[same]


def scale1d_images(positions: torch.Tensor, L: int) -> torch.Tensor:
    """Signals ``float32 [N, 1, L]``: zeros with the points of ``positions [N, k]`` set to ``L/2`` (two
    points: mean value 1)."""
    positions = torch.as_tensor(positions, dtype=torch.long)
    n, k = positions.shape
    x = torch.zeros(n, 1, L)
    x[torch.arange(n)[:, None].expand(n, k), 0, positions] = L / 2
    return x


class ScaleDetection1D(PairTask):
    """1-D scale detection (appendix): two active points on a line of ``L`` pixels.

    Task 1: close (periodic distance ``< xi - gap``, label 1, hinge +1) against far (``>= xi + gap``,
    label 0, hinge -1). Task 2: both points in the same block of length ``xi`` (label 1) or not (0).
    Same split protocol as :class:`TwoPoints` (classes shuffled with seed 123456789, test = last
    ``testsize/2`` of each class, training = ``ptr`` samples of the balanced rest drawn with ``seed``).
    Default ``testsize``: ``4*ptr``, lowered when needed so that the balanced training pool keeps at least
    ``ptr`` samples (task 2 has only ``(L/xi) * xi(xi-1)/2`` positive pairs: 1984 for the defaults).

    Attributes: ``x float32 [N, 1, L]`` (points at ``L/2``), ``y int64``, ``positions int64 [N, 2]``,
    ``y_hinge``.
    """

    def __init__(self, L: int = 128, xi: int = 32, gap: int = 2, task: int = 1, ptr: int = 1024,
                 train: bool = True, seed: int = 0, testsize: int | None = None):
        self.ptr = _check_int("ptr", ptr)
        self.L, self.xi, self.gap, self.task = int(L), int(xi), gap, task
        self.train, self.seed = bool(train), int(seed)
        neg, pos = scale1d_pairs(L, xi, gap, task)
        if testsize is None:
            n_min = min(len(neg), len(pos))
            testsize = min(4 * self.ptr, 2 * (n_min - (self.ptr + 1) // 2))
            if testsize < 2:
                raise ValueError(f"ScaleDetection1D: ptr={ptr} is too large for L={L}, xi={xi}, task={task} "
                                 f"(the smaller class has {n_min} pairs)")
        self.testsize = _check_int("testsize", testsize, 2)
        self.positions, self.y = _split(neg, pos, self.ptr, self.train, self.seed, self.testsize,
                                        "ScaleDetection1D")
        self.x = scale1d_images(self.positions, self.L)


def scale1d_probes(positions, L: int | None = None, P: int = 500, generator: torch.Generator | None = None, *,
                   xi: int | None = None, task: int | None = None, return_positions: bool = False):
    """Probe set of the 1-D tasks: clean signals, +-1 pixel moves, matched noise.

    ``positions`` is ``int [N, 2]`` (then ``L`` and ``task``, and ``xi`` for task 2, are required) or a
    :class:`ScaleDetection1D` (then ``L``, ``xi`` and ``task`` default to its own). ``P`` samples are drawn
    without replacement (all if ``P >= N``). Each point moves by +1 or -1 (fair coin). Task 1: positions
    wrap around (periodic line). Task 2: a move that would leave the
    point's block (or the line) is rejected and the other direction taken, so the label never changes.
    ``x_eta = stabkit.transforms.noisy_batch(x, x_tau)`` (norm-matched Gaussian noise).

    Returns:
        ``(x, x_tau, x_eta)``, each ``float32 [P, 1, L]`` (``+ (pos, moved)`` ``int64 [P, 2]``).
    """
    if isinstance(positions, ScaleDetection1D):
        ds = positions
        positions = ds.positions
        L = ds.L if L is None else L
        xi = ds.xi if xi is None else xi
        task = ds.task if task is None else task
    if L is None or task is None:
        raise ValueError("L (signal length) and task (1 or 2) are required when positions is a tensor; "
                         "or pass the ScaleDetection1D data set itself as positions")
    L = _check_int("L", L, 2)
    if task not in (1, 2):
        raise ValueError(f"task must be 1 or 2, got {task!r}")
    if task == 2:
        if xi is None:
            raise ValueError("xi (block length) is required for task 2")
        xi = _check_int("xi", xi, 2)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.ndim != 2:
        raise ValueError(f"positions must be [N, k], got {tuple(positions.shape)}")
    pos = _subset_probes(positions, P, g)
    step = torch.randint(0, 2, pos.shape, generator=g) * 2 - 1
    if task == 1:
        moved = (pos + step) % L
    else:
        moved = pos + step
        bad = (moved < 0) | (moved >= L) | (torch.div(moved, xi, rounding_mode="floor") != pos // xi)
        moved = torch.where(bad, pos - step, moved)
    x = scale1d_images(pos, L)
    x_tau = scale1d_images(moved, L)
    x_eta = _matched_noise(x, x_tau, g)
    return (x, x_tau, x_eta, pos, moved) if return_positions else (x, x_tau, x_eta)
