"""How far a worker is from its database, and how far ahead its claim loops claim.

A claim loop sends one statement per round: it writes the outcomes of the
jobs that ended and claims as many jobs as it has free slots. Near the
database (a round trip well under a millisecond) that round costs little,
and the loop claims no more than it can start: every other worker gets its
share. Far from it (a managed database in another zone: 1-6 ms), a round
trip is longer than running a round of short jobs, and a loop that claims
only its free slots spends most of its time waiting for the answer.

So each claim loop measures the round trip when it opens its connection
(the quickest of :data:`PROBES` ``SELECT 1``), and from :data:`NEAR` up claims
ahead: ``depth`` times its slots, less what it holds. Jobs claimed ahead wait
in the worker for a free slot, under their lease like any claimed job (their
leases are renewed with the others; one that waited past its lease is put
back unbegun, without counting an attempt), and are put back at a graceful
stop like an unfinished run. A worker killed with jobs claimed ahead loses
them as it loses its running jobs: they run again once their leases lapse.
"""

from __future__ import annotations

import math
import time
from typing import Any

from .sql import QUERIES

__all__ = ["MOST_DEPTH", "NEAR", "PROBES", "claim_depth", "round_trip"]

NEAR = 0.001
"""A round trip below this (seconds) is near: the loop claims only its free slots."""

MOST_DEPTH = 8
"""The most rounds of slots a far loop claims at once."""

PROBES = 3

_PER_DEPTH = 0.001
"""A round of short jobs takes about this long to run here: one more round
claimed ahead per such slice of the round trip."""


def claim_depth(round_trip: float) -> int:
    """How many times its slots a claim loop claims, ``round_trip`` seconds away.

    Example:
        >>> claim_depth(0.0002), claim_depth(0.0013), claim_depth(0.0065), claim_depth(0.05)
        (1, 3, 8, 8)
    """
    if round_trip < NEAR:
        return 1
    return min(MOST_DEPTH, 1 + math.ceil(round_trip / _PER_DEPTH))


async def round_trip(connection: Any) -> float:
    """The quickest of :data:`PROBES` ``SELECT 1`` on ``connection``, in seconds."""
    quickest = math.inf
    for _ in range(PROBES):
        sent = time.perf_counter()
        await connection.fetchval(QUERIES["ping"])
        quickest = min(quickest, time.perf_counter() - sent)
    return quickest
