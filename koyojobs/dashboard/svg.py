"""Charts drawn as inline SVG on the server: no script, no CDN, nothing to load.

Colours come from classes in ``dashboard.css`` (the content security policy
allows no inline style).
"""

from __future__ import annotations

from markupsafe import Markup, escape

from ..charts import QueueChart
from .formatting import age

__all__ = ["throughput", "waiting"]

_WIDTH, _HEIGHT, _TOP = 600, 120, 14


def _frame(label: str, peak: str, bars: list[str], kind: str) -> Markup:
    # Built as one string (a day's charts hold a thousand bars): every text
    # in it is escaped here, the rest are numbers.
    text, top = escape(label), escape(peak)
    return Markup(
        f'<svg class="chart {kind}" viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" '
        f'height="{_HEIGHT}" role="img" aria-label="{text}"><title>{text}</title>'
        f'<line class="axis" x1="0" y1="{_HEIGHT}" x2="{_WIDTH}" y2="{_HEIGHT}"></line>'
        f'<text class="peak" x="2" y="11">{top}</text>{"".join(bars)}</svg>'
    )


def _bar(cls: str, index: int, count: int, low: float, high: float, title: str) -> str:
    step = _WIDTH / count
    return (
        f'<rect class="{cls}" x="{index * step:.1f}" y="{_HEIGHT - high:.1f}" '
        f'width="{max(step - 1, 1):.1f}" height="{high - low:.1f}">'
        f"<title>{escape(title)}</title></rect>"
    )


def throughput(chart: QueueChart, unit: str) -> Markup:
    """Jobs done and failed per bucket, stacked (failed on top, in red).

    Example:
        >>> from datetime import datetime, UTC
        >>> from koyojobs.charts import Bucket
        >>> bucket = Bucket(datetime(2026, 1, 1, tzinfo=UTC), 3, 1)
        >>> svg = throughput(QueueChart("q", [bucket]), "minute")
        >>> svg.count('class="done"'), svg.count('class="failed"')
        (1, 1)
    """
    peak = max((b.done + b.failed for b in chart.buckets), default=0)
    scale = (_HEIGHT - _TOP) / peak if peak else 0.0
    bars = []
    count = len(chart.buckets)
    for i, b in enumerate(chart.buckets):
        when = b.start.strftime("%H:%M")
        if b.done:
            bars.append(_bar("done", i, count, 0, b.done * scale, f"{when}: {b.done} done"))
        if b.failed:
            low = b.done * scale
            title = f"{when}: {b.failed} failed"
            bars.append(_bar("failed", i, count, low, low + b.failed * scale, title))
    label = f"{chart.queue}: jobs finished per {unit} (peak {peak})"
    return _frame(label, f"{peak} per {unit}", bars, "throughput")


def waiting(chart: QueueChart) -> Markup:
    """The time jobs waited from due to start, on average per bucket.

    Example:
        >>> from datetime import datetime, UTC
        >>> from koyojobs.charts import Bucket
        >>> b = Bucket(datetime(2026, 1, 1, tzinfo=UTC), 2, 0, 8.0, 2, 6.0)
        >>> 'class="wait"' in waiting(QueueChart("q", [b]))
        True
    """
    averages = [b.waited_average for b in chart.buckets]
    peak = max((a for a in averages if a is not None), default=0.0)
    scale = (_HEIGHT - _TOP) / peak if peak else 0.0
    bars = []
    count = len(chart.buckets)
    for i, (b, average) in enumerate(zip(chart.buckets, averages, strict=True)):
        if average is None:
            continue
        title = (
            f"{b.start.strftime('%H:%M')}: waited {age(average)} on average, "
            f"{age(b.waited_max)} at most"
        )
        bars.append(_bar("wait", i, count, 0, max(average * scale, 1), title))
    label = f"{chart.queue}: time waited from due to start (peak {age(peak)})"
    return _frame(label, f"average wait, up to {age(peak)}", bars, "waiting")
