"""What Django's ``my_task.enqueue()`` costs on koyojobs' backend, next to
``koyojobs.sync.enqueue`` of the same call, in the same run.

Both inside ``transaction.atomic()`` on Django's connection (one transaction per
round, committed at its end), one enqueue after the other, each timed alone, in
alternating rounds so that both see the same server and the same machine load.
The goal: the task's enqueue at most 1.2x the plain one.

    python3 benchmarks/django_tasks_enqueue.py            # a throwaway cluster of its own
    python3 benchmarks/django_tasks_enqueue.py --dsn postgresql://postgres@127.0.0.1/bench

Prints a markdown table and one JSON line. Point ``--dsn`` at a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import django
from django.conf import settings

from koyojobs import Broker, define_job, sync
from koyojobs.testing import TemporaryPostgres


def _configure(dsn: str) -> None:
    parts = urlsplit(dsn)
    settings.configure(
        INSTALLED_APPS=[
            "koyojobs.contrib.django",
            *([] if django.VERSION >= (6,) else ["django_tasks"]),
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parts.path.lstrip("/"),
                "USER": parts.username or "",
                "PASSWORD": parts.password or "",
                "HOST": parts.hostname or "",
                "PORT": str(parts.port or 5432),
            }
        },
        TASKS={"default": {"BACKEND": "koyojobs.contrib.django.tasks.KoyojobsBackend"}},
        USE_TZ=True,
    )
    django.setup()


@define_job(name="django_tasks_enqueue.noop_job")
def noop_job(seq: int) -> int:
    return seq


def noop(seq: int) -> int:
    """The task's function: made a task in main(), once Django is set up."""
    return seq


def _timed(enqueue_one: Callable[[int], Any], n: int) -> list[float]:
    from django.db import transaction

    timings = []
    with transaction.atomic():
        for i in range(n):
            started = time.perf_counter()
            enqueue_one(i)
            timings.append(time.perf_counter() - started)
    return timings


def _summary(timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        "mean_us": statistics.fmean(timings) * 1e6,
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p90_us": ordered[int(len(ordered) * 0.9)] * 1e6,
    }


def main(dsn: str, n: int, rounds: int) -> None:
    asyncio.run(_migrate(dsn))
    _configure(dsn)
    from django.db import connection

    try:
        from django.tasks import task
    except ImportError:
        from django_tasks import task

    noop_task = task(noop)  # settings first: @task looks its backend up

    def plain(i: int) -> None:
        sync.enqueue(noop_job(i), connection=connection)

    def django_task(i: int) -> None:
        noop_task.enqueue(i)

    _timed(plain, 200), _timed(django_task, 200)  # warm: connection, prepared paths, caches
    times: dict[str, list[float]] = {"plain": [], "task": []}
    for r in range(rounds):  # each goes first in every other round
        pair = [("plain", plain), ("task", django_task)]
        for name, enqueue_one in pair if r % 2 == 0 else pair[::-1]:
            times[name] += _timed(enqueue_one, n)
    found = {name: _summary(t) for name, t in times.items()}
    ratio = found["task"]["mean_us"] / found["plain"]["mean_us"]
    ratio_p50 = found["task"]["p50_us"] / found["plain"]["p50_us"]
    print("| enqueue one, in transaction.atomic() | mean | p50 | p90 |")
    print("|---|---:|---:|---:|")
    for name, label in (
        ("plain", "`koyojobs.sync.enqueue(call, connection=connection)`"),
        ("task", "`my_task.enqueue(...)` (KoyojobsBackend)"),
    ):
        s = found[name]
        print(f"| {label} | {s['mean_us']:.0f} µs | {s['p50_us']:.0f} µs | {s['p90_us']:.0f} µs |")
    print(f"\ntask / plain: {ratio:.2f}x (mean), {ratio_p50:.2f}x (p50); goal <= 1.2x")
    print(
        json.dumps(
            {
                "django": django.__version__,
                **found,
                "ratio_mean": ratio,
                "ratio_p50": ratio_p50,
                "n": n,
                "rounds": rounds,
            }
        )
    )


async def _migrate(dsn: str) -> None:
    async with Broker(dsn) as broker:
        await broker.pool.execute("TRUNCATE koyojobs_jobs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a database of its own (default: a throwaway cluster)")
    parser.add_argument("-n", type=int, default=1000, help="enqueues per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each, alternating")
    options = parser.parse_args()
    with contextlib.ExitStack() as stack:
        dsn = options.dsn or stack.enter_context(TemporaryPostgres()).dsn
        main(dsn, options.n, options.rounds)
