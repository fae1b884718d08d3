"""Sweep the routing threshold ``min_score`` over eval cases and pick the setting to use.

Each point replays the same cases with another ``min_score``: a higher threshold hands more
conversations to a person (less containment) and resolves fewer of them wrongly. ``recommend``
picks the point that contains the most conversations while keeping the wrong-resolution rate at or
under a target, and ``plot`` draws the trade-off as a PNG for the HTML report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from eval.cases import Case
    from eval.harness import Evaluator

# The default grid: 0.05 to 0.95 in steps of 0.05 (the trained head's scores run from 0 to 1).
GRID_START = 0.05
GRID_STOP = 0.95
GRID_STEP = 0.05
_SAME = 1e-6


@dataclass(frozen=True)
class SweepPoint:
    """The summary metrics of one eval run at one ``min_score``."""

    min_score: float
    containment_rate: float | None
    wrong_resolution_rate: float | None
    routing_accuracy: float | None
    handoff_recall: float | None
    passed: int
    cases: int


def _point(min_score: float, summary: dict[str, Any]) -> SweepPoint:
    return SweepPoint(
        min_score=min_score,
        containment_rate=summary.get("containment_rate"),
        wrong_resolution_rate=summary.get("wrong_resolution_rate"),
        routing_accuracy=summary.get("routing_accuracy"),
        handoff_recall=summary.get("handoff_recall"),
        passed=int(summary.get("passed", 0)),
        cases=int(summary.get("cases", 0)),
    )


def run_sweep(
    evaluator: Evaluator,
    cases: list[Case],
    scores: list[float],
    *,
    workers: int = 1,
    on_point: Callable[[SweepPoint], None] | None = None,
) -> list[SweepPoint]:
    """Play the cases once per ``min_score`` and collect each run's summary.

    The whole boundary moves with ``min_score``: ``clarify_floor`` keeps its distance below it, so
    the band in which the bot asks for more detail has the same width at every point.

    Args:
        evaluator: The pack, indexed once, to play the cases against.
        cases: The eval cases to play at every threshold.
        scores: The ``min_score`` values to try, in the order given.
        workers: Cases played at once within one run.
        on_point: Called with each point as soon as its run is done (for progress output).

    Returns:
        One point per score, in the order of ``scores``.
    """
    routing = evaluator.pack.policy.routing
    band = max(0.0, routing.min_score - routing.clarify_floor)
    points: list[SweepPoint] = []
    for score in scores:
        floor = round(max(0.0, score - band), 4)
        report = evaluator.run(cases, routing={"min_score": score, "clarify_floor": floor}, workers=workers)
        point = _point(score, report["summary"])
        points.append(point)
        if on_point is not None:
            on_point(point)
    return points


def default_scores(current: float) -> list[float]:
    """The grid to sweep: 0.05 to 0.95 in steps of 0.05, plus today's threshold.

    Args:
        current: Today's ``min_score`` (kept to 4 decimals, so that it is always on the grid).

    Returns:
        The thresholds, sorted ascending, without duplicates, all within [0, 1].
    """
    steps = round((GRID_STOP - GRID_START) / GRID_STEP)
    grid = {round(GRID_START + i * GRID_STEP, 2) for i in range(steps + 1)}
    grid.add(round(current, 4))
    return sorted(s for s in grid if 0.0 <= s <= 1.0)


def _or_low(value: float | None) -> float:
    return -math.inf if value is None else value


def recommend(points: list[SweepPoint], target_wrong_resolution: float) -> SweepPoint | None:
    """The point that contains the most conversations while meeting the wrong-resolution target.

    Ties go to the higher routing accuracy, then to the lower ``min_score``.

    Args:
        points: The sweep's points.
        target_wrong_resolution: The highest acceptable wrong-resolution rate (e.g. 0.02).

    Returns:
        The recommended point, or None when no point has a wrong-resolution rate at or under the
        target (a point that contains nothing has no rate and never qualifies).
    """
    eligible = [
        p for p in points if p.wrong_resolution_rate is not None and p.wrong_resolution_rate <= target_wrong_resolution
    ]
    if not eligible:
        return None
    return max(eligible, key=lambda p: (_or_low(p.containment_rate), _or_low(p.routing_accuracy), -p.min_score))


def is_setting(point: SweepPoint, min_score: float | None) -> bool:
    """Whether a point is the run at a given threshold (up to float noise).

    Args:
        point: A sweep point.
        min_score: A threshold, or None.

    Returns:
        True when the point was played at that threshold.
    """
    return min_score is not None and abs(point.min_score - min_score) < _SAME


def percent(value: float | None, digits: int = 1) -> str:
    """A rate as a percentage for people, e.g. ``0.0123`` -> ``"1.2%"``.

    Args:
        value: A rate in [0, 1], or None.
        digits: Decimals to keep.

    Returns:
        The percentage, or an em dash for None.
    """
    if value is None:
        return "\u2014"
    text = f"{value * 100:.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"


def describe(recommended: SweepPoint | None, target: float) -> str:
    """One sentence that says what the recommended threshold does.

    Args:
        recommended: The point ``recommend`` chose, or None.
        target: The wrong-resolution target it was chosen for.

    Returns:
        E.g. "min_score 0.45 keeps wrong resolutions at 1.2% (target 2%) and contains 55% of
        conversations."
    """
    if recommended is None:
        return f"No min_score in the sweep keeps wrong resolutions at or under the target of {percent(target)}."
    return (
        f"min_score {recommended.min_score:g} keeps wrong resolutions at "
        f"{percent(recommended.wrong_resolution_rate)} (target {percent(target)}) and contains "
        f"{percent(recommended.containment_rate, 0)} of conversations."
    )


# Where a point's label may go, in pixels from the point, tried in this order: (dx, dy, align).
_LABEL_SPOTS: tuple[tuple[float, float, str], ...] = (
    (8, 6, "left"),
    (8, -18, "left"),
    (-8, 6, "right"),
    (-8, -18, "right"),
    (0, 12, "center"),
    (0, -26, "center"),
    (14, 18, "left"),
    (-14, 18, "right"),
    (14, -32, "left"),
    (-14, -32, "right"),
)
_Box = tuple[float, float, float, float]


def _overlap(a: _Box, b: _Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return width * height if width > 0 and height > 0 else 0.0


def _label_box(x: float, y: float, spot: tuple[float, float, str], text: str) -> _Box:
    dx, dy, align = spot
    width, height = 7.5 * len(text) + 2, 15.0
    left = {"left": x + dx, "right": x + dx - width, "center": x + dx - width / 2}[align]
    return (left, y + dy - 2, left + width, y + dy + height - 2)


def _place_labels(anchors: list[tuple[float, float]], texts: list[str], marks: list[_Box], frame: _Box) -> list[int]:
    """Pick a spot per label (an index into _LABEL_SPOTS), greedily, in the order given.

    A spot costs the area it shares with the marks (other than its own point's) and the labels
    placed before it, a lot more when it leaves the frame or sits nearer another point than its
    own (it would read as that point's label), and a little for each spot tried before it.
    """
    taken = list(marks)
    chosen = []
    for (x, y), text in zip(anchors, texts, strict=True):
        best, best_cost = 0, math.inf
        for i, spot in enumerate(_LABEL_SPOTS):
            box = _label_box(x, y, spot, text)
            inside = box[0] >= frame[0] and box[2] <= frame[2] and box[1] >= frame[1] and box[3] <= frame[3]
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            own = math.hypot(cx - x, cy - y)
            misread = any(math.hypot(cx - ax, cy - ay) < own for ax, ay in anchors if (ax, ay) != (x, y))
            overlap = sum(
                _overlap(box, other)
                for other in taken
                if abs((other[0] + other[2]) / 2 - x) > 0.5 or abs((other[1] + other[3]) / 2 - y) > 0.5
            )
            cost = (0.0 if inside else 1e6) + (400.0 if misread else 0.0) + overlap + i * 0.5
            if cost < best_cost:
                best, best_cost = i, cost
        chosen.append(best)
        taken.append(_label_box(x, y, _LABEL_SPOTS[best], text))
    return chosen


def _draw_points(
    ax: Axes, shown: list[SweepPoint], *, current: float, recommended: SweepPoint | None, target: float
) -> tuple[list[float], list[float]]:
    """Draw the sweep's line and dots, the target line, today's star and the recommended ring.

    Returns:
        The dots' x (containment) and y (wrong resolutions).
    """
    xs = [float(p.containment_rate or 0.0) for p in shown]
    ys = [float(p.wrong_resolution_rate or 0.0) for p in shown]
    ax.plot(xs, ys, color="#94a3b8", linewidth=1.5, zorder=1)
    ax.scatter(xs, ys, s=42, color="#2563eb", zorder=2, label="min_score setting (labelled)")
    ax.axhline(target, color="#dc2626", linestyle="--", linewidth=1.3, label=f"target ({percent(target)})", zorder=0)
    today = [(x, y) for p, x, y in zip(shown, xs, ys, strict=True) if is_setting(p, current)]
    if today:
        ax.scatter(
            [today[0][0]],
            [today[0][1]],
            s=240,
            marker="*",
            color="#f59e0b",
            edgecolors="#92400e",
            linewidths=0.8,
            zorder=3,
            label=f"today (min_score {current:g})",
        )
    if recommended is not None and recommended.containment_rate is not None:
        ax.scatter(
            [recommended.containment_rate],
            [recommended.wrong_resolution_rate or 0.0],
            s=420,
            facecolors="none",
            edgecolors="#16a34a",
            linewidths=2.2,
            zorder=4,
            label=f"recommended (min_score {recommended.min_score:g})",
        )
    return xs, ys


def _set_axes(ax: Axes, xs: list[float], ys: list[float], target: float) -> None:
    """Scale, label and style the axes, then draw the legend."""
    from matplotlib.ticker import FixedLocator, NullLocator, PercentFormatter

    top = max([target, *ys]) if ys else max(target, 0.01)
    if target > 0 and top > 5 * target:
        ax.set_yscale("symlog", linthresh=2 * target, linscale=1.5)
        steps = (t for t in (0.05, 0.1, 0.2, 0.5, 1.0) if 3 * target <= t <= top * 1.05)
        ticks = sorted({0.0, target, 2 * target, *steps})
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_ylim(-0.1 * target, top * 1.25)
        ax.set_ylabel("Wrong-resolution rate (log scale above 2x target)", fontsize=12)
    else:
        ax.set_ylim(0.0, top * 1.2 + 0.002)
        ax.set_ylabel("Wrong-resolution rate (of contained conversations)", fontsize=12)
    if xs:
        spread = max(max(xs) - min(xs), 0.05)
        ax.set_xlim(max(0.0, min(xs) - 0.08 * spread), min(1.0, max(xs) + 0.08 * spread))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1 if target < 0.1 else 0))
    ax.set_xlabel("Containment rate (conversations the bot keeps)", fontsize=12)
    ax.set_title("min_score sweep: containment against wrong resolutions", fontsize=14, pad=12)
    ax.tick_params(labelsize=10)
    ax.grid(True, color="#e2e8f0", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="best", fontsize=10, framealpha=0.95, edgecolor="#e2e8f0")


def _label_points(
    fig: Figure,
    ax: Axes,
    shown: list[SweepPoint],
    xs: list[float],
    ys: list[float],
    *,
    current: float,
    recommended: SweepPoint | None,
) -> None:
    """Label each dot with its min_score, placed clear of the other labels, marks and legend."""
    # Lay the labels out in pixels, once the layout is known, so that they overlap as little as
    # possible with each other, the dots and the legend.
    fig.draw_without_rendering()
    anchors = [(float(px), float(py)) for px, py in ax.transData.transform(list(zip(xs, ys, strict=True)))]
    marks: list[_Box] = [(x - 6, y - 6, x + 6, y + 6) for x, y in anchors]
    marks += [
        (x - 13, y - 13, x + 13, y + 13) for (x, y), p in zip(anchors, shown, strict=True) if is_setting(p, current)
    ]
    if recommended is not None:
        marks += [
            (x - 13, y - 13, x + 13, y + 13)
            for (x, y), p in zip(anchors, shown, strict=True)
            if is_setting(p, recommended.min_score)
        ]
    legend = ax.get_legend()
    if legend is not None:
        extent = legend.get_window_extent()
        marks.append((extent.x0, extent.y0, extent.x1, extent.y1))
    frame = ax.get_window_extent()
    texts = [
        f"{p.min_score:g}"
        + (" today" if is_setting(p, current) else "")
        + (" recommended" if recommended is not None and is_setting(p, recommended.min_score) else "")
        for p in shown
    ]
    # The marked points are labelled first, so that they get the best spots.
    order = sorted(range(len(shown)), key=lambda i: (len(texts[i]) == len(f"{shown[i].min_score:g}"), i))
    placed = _place_labels(
        [anchors[i] for i in order], [texts[i] for i in order], marks, (frame.x0, frame.y0, frame.x1, frame.y1)
    )
    spots = [0] * len(shown)
    for i, spot in zip(order, placed, strict=True):
        spots[i] = spot
    for x, y, text, spot in zip(xs, ys, texts, spots, strict=True):
        dx, dy, align = _LABEL_SPOTS[spot]
        ax.annotate(
            text,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset pixels",
            ha=align,
            va="bottom",
            fontsize=10,
            color="#1e293b",
            zorder=5,
        )


def plot(points: list[SweepPoint], *, current: float, recommended: SweepPoint | None, target: float, out: Path) -> Path:
    """Draw containment against wrong resolutions, one labelled dot per threshold, as a PNG.

    When some rates run far above the target, the y axis is linear up to twice the target and
    logarithmic above it, so that the points near the target stay apart.

    Args:
        points: The sweep's points (those without both rates are left out of the chart).
        current: Today's ``min_score``, marked apart.
        recommended: The recommended point, ringed; None when there is none.
        target: The wrong-resolution target, drawn as a horizontal line.
        out: Where to write the PNG (900x600 px); its folder is created if needed.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    shown = sorted(
        (p for p in points if p.containment_rate is not None and p.wrong_resolution_rate is not None),
        key=lambda p: p.min_score,
    )
    fig = Figure(figsize=(9, 6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    xs, ys = _draw_points(ax, shown, current=current, recommended=recommended, target=target)
    _set_axes(ax, xs, ys, target)
    _label_points(fig, ax, shown, xs, ys, current=current, recommended=recommended)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def sweep_to_dict(
    points: list[SweepPoint], current: float, recommended: SweepPoint | None, target: float
) -> dict[str, Any]:
    """The sweep as plain data, for the JSON report and the HTML one.

    Args:
        points: The sweep's points.
        current: Today's ``min_score``.
        recommended: The recommended point, or None.
        target: The wrong-resolution target.

    Returns:
        A dict with ``target_wrong_resolution``, ``current``, ``recommended`` (a point or None),
        ``sentence`` and ``points`` (each a dict with the SweepPoint's fields).
    """
    return {
        "target_wrong_resolution": target,
        "current": current,
        "recommended": dataclasses.asdict(recommended) if recommended is not None else None,
        "sentence": describe(recommended, target),
        "points": [dataclasses.asdict(p) for p in points],
    }
