"""What the dashboard's charts show: per queue, jobs finished and failed, and time waited.

Read from the per-minute rollup (:mod:`koyojobs.rollup`) and, for the
minutes not rolled up yet, from the jobs table: a chart of a day reads at
most 1,440 rows per queue, however many jobs the table holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .sql import QUERIES

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["SPANS", "Bucket", "QueueChart", "queue_charts"]

SPANS = {
    "hour": (timedelta(hours=1), timedelta(minutes=1)),
    "day": (timedelta(days=1), timedelta(minutes=10)),
}
"""Each chart's span and the width of its bars."""


@dataclass(slots=True)
class Bucket:
    """One bar of a chart: the jobs that finished in ``[start, start + width)``."""

    start: datetime
    done: int = 0
    failed: int = 0
    waited_sum: float = 0.0
    waited_count: int = 0
    waited_max: float = 0.0

    @property
    def waited_average(self) -> float | None:
        """Seconds the jobs waited from due to start, on average (``None``: none finished)."""
        return self.waited_sum / self.waited_count if self.waited_count else None


@dataclass(slots=True)
class QueueChart:
    """A queue's buckets over a span, oldest first."""

    queue: str
    buckets: list[Bucket] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(b.done for b in self.buckets)

    @property
    def failed(self) -> int:
        return sum(b.failed for b in self.buckets)


async def queue_charts(broker: Broker, span: str = "hour") -> list[QueueChart]:
    """Every queue that finished jobs over ``span`` (``"hour"`` or ``"day"``), by name.

    Example:
        >>> [c.queue for c in await queue_charts(broker, "day")]  # doctest: +SKIP
        ['default', 'emails']
    """
    length, width = SPANS[span]
    async with broker.pool.acquire() as conn, conn.transaction(readonly=True):
        mark = await conn.fetchrow(QUERIES["chart_mark"])
        assert mark is not None  # 0009 writes its one row
        now: datetime = mark["now"]
        start = _floor(now - length, width) + width
        rolled_until: datetime = max(mark["rolled_until"], start)
        rows = list(await conn.fetch(QUERIES["chart_rolled"], start, rolled_until, width))
        rows += await conn.fetch(QUERIES["chart_tail"], rolled_until, now + timedelta(minutes=1))
    count = int(length / width)
    charts: dict[str, QueueChart] = {}
    for row in rows:
        index = int((row["minute"] - start) / width)
        if not 0 <= index < count:
            continue
        chart = charts.get(row["queue"])
        if chart is None:
            chart = charts[row["queue"]] = QueueChart(
                row["queue"], [Bucket(start + i * width) for i in range(count)]
            )
        bucket = chart.buckets[index]
        bucket.done += row["done"]
        bucket.failed += row["failed"]
        bucket.waited_sum += row["waited_sum"]
        bucket.waited_count += row["waited_count"]
        bucket.waited_max = max(bucket.waited_max, row["waited_max"])
    return [charts[q] for q in sorted(charts)]


def _floor(moment: datetime, width: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=moment.tzinfo)
    return epoch + ((moment - epoch) // width) * width
