"""How far ahead of its free slots a claim loop claims: the round trip against the jobs' pace.

A claim loop sends one statement per round: it writes the outcomes of the
jobs that ended and claims jobs. Claiming only its free slots, a loop whose
jobs are short spends most of its time waiting for the next round's answer:
a round costs a commit (a WAL flush, about a millisecond on a durable
server) and, far from the database (a managed database in another zone),
1 to 6 ms of network more. Its slots stand empty meanwhile.

So each loop also claims the jobs its slots will finish while a round is in
flight: ``ahead = slots x round time / run time``, from two moving averages
(:class:`Pace`): the time its rounds take, first set by the quickest of
:data:`PROBES` ``SELECT 1`` when it connects, and the time its jobs run. At
most :data:`MOST_AHEAD` rounds of slots. Jobs of a second or more claim
nothing ahead near the database; no-op jobs claim the most; a far worker
claims more than a near one for the same jobs. Still one statement per round.
Queues with limits (flow control) claim nothing ahead: a job waiting for a
slot would hold its key's limit.

Jobs claimed ahead wait in the worker for a free slot, under their lease like
any claimed job (renewed with the others; one that waited past its lease is
put back unbegun, without counting an attempt), and are put back at a
graceful stop like an unfinished run. A worker killed with jobs claimed
ahead loses them as it loses its running jobs: they run again once their
leases lapse.
"""

from __future__ import annotations

import math
import time
from typing import Any

from .sql import QUERIES

__all__ = ["FAR", "MOST_AHEAD", "PROBES", "Pace", "round_trip"]

FAR = 0.001
"""A connection's round trip from which the claim loop says it is far (a log line)."""

MOST_AHEAD = 15
"""The most rounds of slots a loop claims beyond its free slots."""

PROBES = 3

_WEIGHT = 0.1
"""Of each new measure in the moving averages."""


class Pace:
    """A claim loop's round time and its jobs' run time, and what to claim ahead.

    Example:
        >>> pace = Pace(slots=8)
        >>> pace.connected(0.0065)  # a database 6.5 ms away
        >>> pace.ahead  # no job has run yet
        0
        >>> pace.ran(0.002)
        >>> pace.ahead  # 8 slots x 6.5 ms / 2 ms
        26
        >>> pace.ran(10.0)  # a long job pulls the average up
        >>> pace.ahead
        1
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.round: float | None = None
        """Seconds a round takes (moving average), ``None`` before the first."""
        self.run: float | None = None
        """Seconds a job runs (moving average), ``None`` before the first."""

    def connected(self, round_trip: float) -> None:
        """A new connection's round trip: a round takes at least that."""
        self.round = round_trip if self.round is None else max(self.round, round_trip)

    def round_took(self, seconds: float) -> None:
        self.round = seconds if self.round is None else _average(self.round, seconds)

    def ran(self, seconds: float) -> None:
        self.run = seconds if self.run is None else _average(self.run, seconds)

    @property
    def ahead(self) -> int:
        """Jobs to claim beyond the free slots."""
        if self.round is None or self.run is None:
            return 0
        most = MOST_AHEAD * self.slots
        if self.run <= 0:
            return most
        return min(most, math.ceil(self.slots * self.round / self.run - 1e-9))


def _average(old: float, new: float) -> float:
    return old + _WEIGHT * (new - old)


async def round_trip(connection: Any) -> float:
    """The quickest of :data:`PROBES` ``SELECT 1`` on ``connection``, in seconds."""
    quickest = math.inf
    for _ in range(PROBES):
        sent = time.perf_counter()
        await connection.fetchval(QUERIES["ping"])
        quickest = min(quickest, time.perf_counter() - sent)
    return quickest
