"""The workflow page's graph: steps in layers by depth, drawn on the server as inline SVG.

A step's layer is 0 when it waits for nothing, else one more than its deepest
upstream step's. Layers are columns, left to right; a line goes from each step
to each of its dependents. Boxes are coloured by status through classes of
``dashboard.css`` (the content security policy allows no inline style), every
label goes through :func:`~koyojobs.dashboard.formatting.visible_svg`, and the
graph is drawn for at most :data:`GRAPH_MOST` steps: past that it would not be
read, and the page says so in a line instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from .._text import escape_controls
from .formatting import visible_svg
from .workflow_page import StepRow

__all__ = ["GRAPH_MOST", "Layout", "draw", "layers", "layout"]

GRAPH_MOST = 60
"""Steps a graph is drawn for at most."""

_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _PAD = 160, 30, 56, 12, 6
_LABEL_CHARS = 22


def layers(after: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each step's layer: 0 if it waits for nothing, else 1 + its deepest upstream step's.

    ``after`` maps each step to the steps it waits for; a name it does not
    hold is left out (a step the page did not read). A cycle, which a
    workflow cannot have, would put its steps one layer past the others.

    Example:
        >>> layers({"fetch": [], "resize": ["fetch"], "notify": ["resize"],
        ...         "cleanup": ["fetch", "resize"]})
        {'fetch': 0, 'resize': 1, 'notify': 2, 'cleanup': 2}
    """
    known = {step: [u for u in ups if u in after and u != step] for step, ups in after.items()}
    waiting = {step: len(set(ups)) for step, ups in known.items()}
    dependents: dict[str, list[str]] = {step: [] for step in known}
    for step, ups in known.items():
        for upstream in set(ups):
            dependents[upstream].append(step)
    found: dict[str, int] = {}
    ready = [step for step, count in waiting.items() if count == 0]
    while ready:  # in topological order, without recursion (a chain may be long)
        step = ready.pop()
        found[step] = 1 + max((found[u] for u in known[step]), default=-1)
        for dependent in dependents[step]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    past = 1 + max(found.values(), default=-1)
    return {step: found.get(step, past) for step in after}


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each step goes: ``columns[layer]`` lists its steps top to bottom.

    ``rows`` gives each step's row, centred against the tallest column (a
    half row for an odd difference); ``edges`` are ``(upstream, step)``.
    """

    columns: list[list[str]]
    rows: dict[str, float]
    edges: list[tuple[str, str]]

    @property
    def tallest(self) -> int:
        """The most steps in one layer."""
        return max((len(column) for column in self.columns), default=0)


def layout(after: Mapping[str, Sequence[str]]) -> Layout:
    """The steps of ``after`` (in its order) laid out in layers, with their edges.

    Within a layer, steps are ordered by the mean row of their upstream steps
    (fewer crossing lines), ties in the order given.

    Example:
        >>> lay = layout({"a": [], "b": [], "c": ["b"], "d": ["a"]})
        >>> lay.columns, lay.edges
        ([['a', 'b'], ['d', 'c']], [('b', 'c'), ('a', 'd')])
    """
    depth = layers(after)
    columns: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for step in after:
        columns[depth[step]].append(step)
    tallest = max((len(column) for column in columns), default=0)
    rows: dict[str, float] = {}
    for index, column in enumerate(columns):
        if index:
            column.sort(key=lambda step: _mean([rows[u] for u in after[step] if u in rows]))
        offset = (tallest - len(column)) / 2
        for row, step in enumerate(column):
            rows[step] = offset + row
    edges = [(upstream, step) for step in after for upstream in after[step] if upstream in rows]
    return Layout(columns, rows, edges)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _label(step: str) -> Markup:
    short = step if len(step) <= _LABEL_CHARS else step[: _LABEL_CHARS - 1] + "\u2026"
    return visible_svg(short)


def _spot(lay: Layout, depth: dict[str, int], step: str) -> tuple[float, float]:
    return _PAD + depth[step] * (_BOX_W + _GAP_X), _PAD + lay.rows[step] * (_BOX_H + _GAP_Y)


def draw(steps: Sequence[StepRow], base: str) -> Markup:
    """The graph of ``steps`` as an ``<svg>``: a box per step linking to its job page.

    Example:
        >>> from koyojobs.dashboard.workflow_page import StepRow
        >>> def row(id, step, after):
        ...     return StepRow(id, step, "job", "q", "done", 1, 1, None, None, None,
        ...                    None, None, after, [], False)
        >>> svg = draw([row(1, "fetch", []), row(2, "<b>notify</b>", ["fetch"])], "/ops")
        >>> svg.count('class="node '), svg.count('class="edge'), "<b>" in svg
        (2, 1, False)
    """
    after = {s.step: s.after for s in steps}
    lay = layout(after)
    depth = {step: index for index, column in enumerate(lay.columns) for step in column}
    by_step = {s.step: s for s in steps}
    width = _PAD * 2 + max(len(lay.columns) * (_BOX_W + _GAP_X) - _GAP_X, 0)
    height = _PAD * 2 + max(lay.tallest * (_BOX_H + _GAP_Y) - _GAP_Y, 0)
    parts = [
        f'<svg class="workflow-graph" id="graph" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="the steps and what each '
        f'waits for"><defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" '
        f'markerWidth="8" markerHeight="8" orient="auto"><path d="M0,0 L8,4 L0,8 z"></path>'
        f"</marker></defs>"
    ]
    for upstream, step in lay.edges:  # under the boxes
        ux, uy = _spot(lay, depth, upstream)
        sx, sy = _spot(lay, depth, step)
        x1, y1, x2, y2 = ux + _BOX_W, uy + _BOX_H / 2, sx, sy + _BOX_H / 2
        middle = (x1 + x2) / 2
        kind = "edge always" if by_step[step].always else "edge"
        title = escape(escape_controls(f"{upstream} \u2192 {step}"))
        parts.append(
            f'<path class="{kind}" marker-end="url(#arrow)" d="M{x1:.1f},{y1:.1f} '
            f'C{middle:.1f},{y1:.1f} {middle:.1f},{y2:.1f} {x2:.1f},{y2:.1f}">'
            f"<title>{title}</title></path>"
        )
    for s in steps:
        x, y = _spot(lay, depth, s.step)
        title = escape(escape_controls(f"{s.step}: {s.status}"))
        parts.append(
            f'<a class="node node-{escape(s.status)}" href="{escape(base)}/jobs/{s.id}" '
            f'data-step-id="{s.id}"><rect x="{x:.1f}" y="{y:.1f}" width="{_BOX_W}" '
            f'height="{_BOX_H}" rx="4"></rect><text x="{x + 8:.1f}" y="{y + _BOX_H / 2 + 4:.1f}">'
            f"{_label(s.step)}</text><title>{title}</title></a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
