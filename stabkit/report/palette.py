"""One colour and one marker per architecture, the same on every page of the book.

Every network name of :mod:`stabkit.nets` has a fixed entry in ``NET_STYLES``; a name built on
another (``LowRes-ResNet18`` on ``ResNet18``) takes its base's style. Figures call :func:`net_colours`
and :func:`net_markers` (or :func:`hue_colours` for a column that may or may not hold network names)
instead of picking colours by position, so VGG11bn has the same colour in Fig. 1, Fig. 3 and on the
probe pages. :func:`set_style` sets the book's plot style.
"""
from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

__all__ = ["NET_STYLES", "FAMILY_MARKERS", "net_style", "net_colours", "net_markers", "hue_colours", "set_style"]

#: Marker of each family of ``stabkit.nets.model_info`` (VGG split: without / with batch norm).
FAMILY_MARKERS = {"VGG": "o", "VGGbn": "s", "ResNet": "^", "AlexNet": "D", "LeNet": "v",
                  "EfficientNet": "P", "FCN": "X", "CNN1D": "*"}

_COLOURS = {  # distinct within every figure page's set of networks (tab10, tab20 and tab20b hues)
    "VGG11": "#1f77b4", "VGG11bn": "#d62728", "VGG13": "#aec7e8", "VGG13bn": "#ff9896",
    "VGG16": "#17becf", "VGG16bn": "#9467bd", "VGG19": "#c5b0d5", "VGG19bn": "#7b4173",
    "ResNet18": "#2ca02c", "ResNet34": "#98df8a", "ResNet50": "#637939",
    "AlexNet": "#ff7f0e", "LeNet": "#8c564b", "EfficientNetB0": "#e377c2",
    "DenseNetL2": "#7f7f7f", "DenseNetL4": "#bcbd22", "DenseNetL6": "#393b79", "CNN1D": "#8c6d31",
}


@functools.cache
def _net_styles() -> dict[str, tuple[str, str]]:
    # not at import: stabkit.nets imports torch, which a page that only draws needs not load
    from ..nets import model_info

    def marker(name: str) -> str:
        info = model_info(name)
        return FAMILY_MARKERS[info["family"] + ("bn" if info["family"] == "VGG" and info["batch_norm"] else "")]
    return {n: (c, marker(n)) for n, c in _COLOURS.items()}


if TYPE_CHECKING:
    #: ``name -> (colour, marker)`` for every network of :mod:`stabkit.nets` (built on first access).
    NET_STYLES: dict[str, tuple[str, str]]


def __getattr__(name: str):
    if name == "NET_STYLES":
        return _net_styles()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SPARE = ("#843c39", "#5254a3", "#8ca252", "#bd9e39", "#ad494a", "#a55194", "#6b6ecf", "#b5cf6b")
_SPARE_MARKERS = ("h", "p", "<", ">", "d", "H", "8")


def net_style(name: str) -> tuple[str, str]:
    """``(colour, marker)`` of a network name. ``"<prefix>-<base>"`` (e.g. ``LowRes-ResNet18``) takes
    the style of ``<base>``; a name the palette does not know gets a spare style chosen by a hash of the
    name (the same in every process), so it is still fixed from page to page."""
    if not isinstance(name, str):
        name = str(name)
    styles = _net_styles()
    if name in styles:
        return styles[name]
    base = name.rsplit("-", 1)[-1]
    if base in styles:
        return styles[base]
    h = zlib.crc32(name.encode())
    return _SPARE[h % len(_SPARE)], _SPARE_MARKERS[h % len(_SPARE_MARKERS)]


def _order(values: Iterable) -> list:
    vals = list(dict.fromkeys(v for v in values if v == v))  # drop NaN
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=str)


def net_colours(names: Iterable) -> dict:
    """``{name: colour}`` for the distinct network names of ``names`` (sorted)."""
    return {n: net_style(n)[0] for n in _order(names)}


def net_markers(names: Iterable) -> dict:
    """``{name: marker}`` for the distinct network names of ``names`` (sorted)."""
    return {n: net_style(n)[1] for n in _order(names)}


def hue_colours(values: Iterable, hue: str = "net", cmap: str = "tab10") -> dict:
    """Colours of the distinct ``values`` of column ``hue``: the palette's for ``hue == "net"``, else one
    colour per value in sorted order from ``cmap`` (``tab20`` beyond 10 values)."""
    if hue == "net":
        return net_colours(values)
    import matplotlib.pyplot as plt

    vals = _order(values)
    cm = plt.get_cmap(cmap if len(vals) <= 10 else "tab20")
    return {v: cm(i % cm.N) for i, v in enumerate(vals)}


def set_style(font_scale: float = 1.0) -> None:
    """The book's plot style: seaborn's ``whitegrid`` theme when seaborn is installed (the ``book``
    extra), else matplotlib's defaults with a light grid."""
    try:
        import seaborn as sns
    except ImportError:
        import matplotlib.pyplot as plt

        plt.rcParams.update({"axes.grid": True, "grid.color": "0.9", "axes.axisbelow": True})
        return
    sns.set_theme(style="whitegrid", context="notebook", font_scale=font_scale)
