"""The look every figure shares: one colour, marker and hatch per method, label placement that
covers nothing, faceting, and deterministic PNG/SVG output (reruns give identical files)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seqpeft.util.atomic import atomic_file

# Okabe & Ito's colour-blind-safe palette, without its yellow (too pale on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
# 9 markers with 7 colours: the (colour, marker) pairs of the first 63 methods are all distinct.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")
# Bar hatches: the first 7 methods plain, the next 7 hatched, ... (28 distinct before repeating).
HATCHES = ("", "////", "....", "xxxx")
# candidate label positions around a point: (dx, dy) in points, horizontal and vertical alignment
LABEL_OFFSETS = (
    (7, 0, "left", "center"), (-7, 0, "right", "center"),
    (5, 5, "left", "bottom"), (5, -5, "left", "top"), (-5, 5, "right", "bottom"), (-5, -5, "right", "top"),
    (0, 8, "center", "bottom"), (0, -8, "center", "top"),
    (8, 12, "left", "bottom"), (8, -12, "left", "top"), (-8, 12, "right", "bottom"), (-8, -12, "right", "top"),
)
# A label is never further from its marker than this (points): the placement test's bound.
LABEL_MAX_DISTANCE_PT = 16.0


@dataclass(frozen=True)
class MethodStyle:
    colour: str
    marker: str
    hatch: str  # for bars, where colour is the only other mark: distinct (colour, hatch) per method


# A published baseline drawn beside the methods (SignalP 6.0 in the signal-peptide figures): grey,
# which the palette never gives a method, with a dark outline.
BASELINE_STYLE = MethodStyle("#A6A6A6", "s", "")


def method_styles(methods: Sequence[str], order: Sequence[str] | None = None) -> dict[str, MethodStyle]:
    """One colour and marker per method, the same in every figure of a results set.

    ``order`` is the canonical method list (the config's ``methods:`` keys, which the workflow
    passes to every figure); a method's style depends only on its place there, so a figure
    showing a subset of methods colours each as the others do. Methods not in ``order`` follow
    it, sorted by name.
    """
    canonical = list(dict.fromkeys(order or []))
    canonical += sorted(set(map(str, methods)) - set(canonical))
    return {name: MethodStyle(PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)],
                              HATCHES[(i // len(PALETTE)) % len(HATCHES)])
            for i, name in enumerate(canonical) if name in set(map(str, methods))}


def new_figure(width: float = 8.0, height: float = 5.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out_png: str | Path, out_svg: str | Path) -> None:
    """Save ``fig`` as PNG (150 dpi) and SVG, each atomically; SVG keeps text as ``<text>``
    elements and carries no date, so reruns give identical files."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "seqpeft"}):
        with atomic_file(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=150, metadata={"Software": None})
        with atomic_file(out_svg) as tmp:
            fig.savefig(tmp, format="svg", metadata={"Date": None})


def facets(fig, count: int, sharey: bool = True):
    """``count`` axes in a row (up to 3 per row), sharing the y axis."""
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    axes = fig.subplots(rows, columns, sharey=sharey, squeeze=False).ravel()
    for extra in axes[count:]:
        extra.set_visible(False)
    return list(axes[:count])


def label_points(fig, placements) -> int:
    """Write each point's label next to it, at the first candidate offset (``LABEL_OFFSETS``, all
    within ``LABEL_MAX_DISTANCE_PT``) that overlaps no marker, error bar, front segment or earlier
    label and stays inside its axes. A label with no such place is left out (the legend names
    every method): a label that covers another, or floats away from its marker, misleads.

    ``placements``: per axes, ``(ax, points, obstacles)`` with points ``(x, y, sd, text, colour)``
    and obstacles as data-space segments ``((x0, y0), (x1, y1))``. Returns the labels left out.
    """
    from matplotlib.transforms import Bbox

    fig.canvas.draw()  # run the layout once, then freeze it so label positions stay valid
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    pt = fig.dpi / 72.0
    left_out = 0
    for ax, points, segments in placements:
        obstacles = []
        for x, y, sd, _, _ in points:
            px, py = ax.transData.transform((x, y))
            obstacles.append(Bbox.from_extents(px - 6 * pt, py - 6 * pt, px + 6 * pt, py + 6 * pt))
            if sd > 0:
                low, high = ax.transData.transform([(x, y - sd), (x, y + sd)])[:, 1]
                obstacles.append(Bbox.from_extents(px - 3 * pt, low, px + 3 * pt, high))
        for a, b in segments:
            (x0, y0), (x1, y1) = ax.transData.transform([a, b])
            obstacles.append(Bbox.from_extents(min(x0, x1) - pt, min(y0, y1) - pt, max(x0, x1) + pt, max(y0, y1) + pt))
        inside = ax.get_window_extent(renderer)
        for x, y, _, text, colour in sorted(points, key=lambda t: (t[0], -t[1])):
            placed = None
            for dx, dy, ha, va in LABEL_OFFSETS:
                note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                                   fontsize=7.5, color=colour, ha=ha, va=va, gid="point-label")
                box = note.get_window_extent(renderer)
                fits = inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1)
                if fits and not any(box.overlaps(other) for other in obstacles):
                    placed = box
                    break
                note.remove()
            if placed is None:
                left_out += 1
            else:
                obstacles.append(placed)
    return left_out
