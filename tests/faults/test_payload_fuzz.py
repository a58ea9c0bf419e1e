"""Mutated and malformed rows, hundreds at a time, through a real worker: every job ends.

A job whose handling raises out of the worker's attempt stays ``running`` while
the heartbeat renews its lease, so "ends" is the property: none is left held.
The rows are built from a fixed seed, so a failure replays exactly.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import random
import time
from collections.abc import Callable
from typing import Any

import dill  # type: ignore[import-untyped]
import pytest

from koyojobs import Broker, Status, Worker, define_job
from tests.conftest import insert_raw_job, wait_for_status
from tests.faults import jobs

SEED = 20_240_610
ROWS = 600
FINISH_WITHIN = 60.0
"""Seconds for every row to reach a final status (they take about 3 s on an idle box)."""

_NAMES = ("faults.takes_arg", "faults.quick", "fuzz.raises_with", "fuzz.never_defined")


@define_job(name="fuzz.raises_with", max_attempts=1)
async def raises_with(value: Any) -> None:
    """A job whose error message carries its argument, as many real ones do."""
    raise ValueError(f"cannot use {value}")


# -- hostile objects: their methods raise, or raise what cannot be printed ------


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class _RaisesEverywhere:
    """Iterating, measuring, comparing, hashing or printing it raises."""

    def __iter__(self) -> Any:
        raise _UnprintableError()

    def __len__(self) -> int:
        raise _UnprintableError()

    def __eq__(self, other: object) -> bool:
        raise _UnprintableError()

    def __hash__(self) -> int:
        return 1

    def __repr__(self) -> str:
        raise _UnprintableError()


class _Pair(tuple):  # type: ignore[type-arg]
    """A tuple whose unpacking raises."""

    def __iter__(self) -> Any:
        raise _UnprintableError()

    def __len__(self) -> int:
        raise _UnprintableError()


class _Kwargs(dict):  # type: ignore[type-arg]
    """A dict whose keys cannot be listed."""

    def keys(self) -> Any:
        raise _UnprintableError()

    def __iter__(self) -> Any:
        raise _UnprintableError()


class _Key(str):
    """A str whose comparison raises (matching it to a parameter name compares)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        raise _UnprintableError()

    def __hash__(self) -> int:
        return str.__hash__(self)


class _ExitsWhenPickled:
    """Unpickles fine; pickling it again (as the job's result) raises SystemExit."""

    def __reduce__(self) -> Any:
        raise SystemExit("pickling this exits")


class _BecomesExitsWhenPickled:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_ExitsWhenPickled, ())


_NOT_A_PAIR = "are not an (args, kwargs) pair: got "
_DONE = "done"


def _wrong_shapes() -> list[tuple[str, Any, str]]:
    """Valid pickles of what is not an (args, kwargs) pair, or of pairs that cannot be a call.

    Each with what ``faults.takes_arg`` (which returns its argument) ends
    with: ``done``, or a part of its ``last_error``.
    """
    return [
        ("None", None, _NOT_A_PAIR + "NoneType"),
        ("int", 7, _NOT_A_PAIR + "int"),
        ("str", "ab", _NOT_A_PAIR + "str"),
        ("bytes", b"ab", _NOT_A_PAIR + "bytes"),
        ("empty tuple", (), _NOT_A_PAIR + "a tuple of length 0"),
        ("1-tuple", ((),), _NOT_A_PAIR + "a tuple of length 1"),
        ("3-tuple", (1, 2, 3), _NOT_A_PAIR + "a tuple of length 3"),
        ("list pair", [("x",), {}], _NOT_A_PAIR + "a list of length 2"),
        ("dict", {(): {}}, _NOT_A_PAIR + "dict"),
        ("set", {1, 2}, _NOT_A_PAIR + "set"),
        ("lists", ([], []), "kwargs is a list of length 0, not a dict"),
        ("kwargs None", ((), None), "kwargs is NoneType, not a dict"),
        ("args None", (None, {}), "args is NoneType, not a tuple or list"),
        ("args str", ("ab", {}), "args is str, not a tuple or list"),
        ("args bytes", (b"ab", {}), "args is bytes, not a tuple or list"),
        ("args dict", ({"value": 1}, {}), "args is dict, not a tuple or list"),
        ("int key", ((), {1: 2}), "kwargs has a key of type int, not str"),
        ("bytes key", ((), {b"value": 1}), "kwargs has a key of type bytes, not str"),
        ("tuple key", ((), {("t",): 1}), "kwargs has a key of type tuple, not str"),
        ("raising key", ((), {_Key("value"): 1}), "kwargs has a key of type _Key, not str"),
        ("raising pair", _Pair((("x",), {})), _NOT_A_PAIR + "_Pair"),
        ("raising args", (_RaisesEverywhere(), {}), "args is _RaisesEverywhere, not a tuple"),
        ("raising kwargs", ((), _Kwargs(value=1)), "kwargs is _Kwargs, not a dict"),
        ("raising object", _RaisesEverywhere(), _NOT_A_PAIR + "_RaisesEverywhere"),
        ("raising arg", ((_RaisesEverywhere(),), {}), _DONE),
        ("too many args", ((1, 2, 3), {}), "TypeError: takes_arg() takes 1 positional"),
        ("unknown kwarg", ((), {"nope": 1}), "unexpected keyword argument 'nope'"),
        ("result exits", ((_BecomesExitsWhenPickled(),), {}), "SystemExit: pickling this exits"),
        ("NUL in error", (("a\x00b",), {}), _DONE),
        ("surrogate in error", (("\udcff",), {}), _DONE),
    ]


def _deep(depth: int) -> bytes:
    """A pickle of ``((a list nested depth deep,), {})``: more than pickling it back can take."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"\x85}\x86."


def _valid_calls() -> list[bytes]:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        (("x",), {}),
        ((1,), {}),
        ((), {"value": "v"}),
        (([1, 2, 3],), {}),
        (({"a": (1, 2.5, None)},), {}),
        ((b"\x00\xff" * 20,), {}),
        (("é" * 30,), {}),
    ]
    bases = [pickle.dumps(c, protocol=p) for c in calls for p in range(pickle.HIGHEST_PROTOCOL + 1)]
    bases.append(dill.dumps(((lambda: 1,), {}), recurse=True))
    return bases


def _mutations() -> list[Callable[[random.Random, bytes], bytes]]:
    def flip_bits(rng: random.Random, data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        return bytes(out)

    def truncate(rng: random.Random, data: bytes) -> bytes:
        return data[: rng.randrange(len(data))]

    def set_byte(rng: random.Random, data: bytes) -> bytes:
        out = bytearray(data)
        out[rng.randrange(len(out))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        return bytes(out)

    def splice(rng: random.Random, data: bytes) -> bytes:
        i = rng.randrange(len(data))
        j = min(len(data), i + rng.randint(1, 8))
        return data[:i] + rng.randbytes(rng.randint(0, 8)) + data[j:]

    def duplicate(rng: random.Random, data: bytes) -> bytes:
        i = rng.randrange(len(data))
        j = min(len(data), i + rng.randint(1, 16))
        return data[:j] + data[i:j] + data[j:]

    return [flip_bits, truncate, set_byte, splice, duplicate]


def fuzz_rows(seed: int, count: int) -> list[tuple[str, str, bytes]]:
    """``count`` rows ``(what, job name, args)``: a tenth wrong shapes, the rest mutated."""
    rng = random.Random(seed)
    shapes = [(what, pickle.dumps(value)) for what, value, _ in _wrong_shapes()]
    shapes += [("deep", _deep(100_000)), ("huge", pickle.dumps((("x" * 5_000_000,), {})))]
    bases = _valid_calls()
    mutations = _mutations()
    rows: list[tuple[str, str, bytes]] = []
    # Every wrong shape once, for each job that runs...
    for name in _NAMES[:3]:
        rows.extend((f"shape {what}", name, data) for what, data in shapes)
    # ...then mutations, of valid calls mostly and of wrong shapes sometimes.
    while len(rows) < count:
        base = rng.choice(bases) if rng.random() < 0.85 else rng.choice(shapes)[1]
        mutate = rng.choice(mutations)
        data = base
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            data = mutate(rng, data) if data else data
        name = rng.choices(_NAMES, weights=(70, 15, 10, 5))[0]
        rows.append((f"{mutate.__name__} of {base[:12]!r}", name, data))
    return rows[:count]


def test_the_rows_are_the_same_for_the_same_seed() -> None:
    assert fuzz_rows(SEED, 200) == fuzz_rows(SEED, 200)
    assert len({args for _, _, args in fuzz_rows(SEED, ROWS)}) > ROWS * 0.8


async def test_every_mutated_row_reaches_a_final_status_and_none_stays_held(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    caplog.set_level(logging.ERROR, logger="koyojobs")
    rows = fuzz_rows(SEED, ROWS)
    ids: dict[int, tuple[str, str]] = {}
    async with Worker(broker, pool_size=8, lease=2.0, poll_interval=0.2) as worker:
        for what, name, args in rows:
            ids[await insert_raw_job(broker, name, args, max_attempts=1)] = (what, name)

        deadline = time.monotonic() + FINISH_WITHIN
        while True:
            unfinished = await broker.pool.fetch(
                "SELECT id, status, attempts FROM koyojobs_jobs"
                " WHERE status NOT IN ('done', 'failed') ORDER BY id"
            )
            if not unfinished or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)  # polling the table for the end state
        stuck = [(r["id"], r["status"], *ids[r["id"]]) for r in unfinished]
        assert not stuck, f"{len(stuck)} of {ROWS} rows never finished: {stuck[:10]}"
        assert worker.running == 0
        # The same worker goes on with the next job.
        after = await wait_for_status(broker, await jobs.quick("after"), Status.DONE)
        assert after.result == "after"

    # What the worker's tasks raised would show here ("Task exception was never
    # retrieved", or the worker's own "attempt raised").
    assert not caplog.records, caplog.text

    ended = {
        r["id"]: r
        for r in await broker.pool.fetch("SELECT id, status, last_error FROM koyojobs_jobs")
    }
    for job_id, (what, _) in ids.items():
        row = ended[job_id]
        assert row["status"] == "done" or row["last_error"], (what, row)
    # The wrong shapes each end as they should, with a clear error.
    outcome = {ids[i]: (r["status"], r["last_error"]) for i, r in ended.items() if i in ids}
    for what, _, expected in _wrong_shapes():
        status, error = outcome[f"shape {what}", "faults.takes_arg"]
        if expected == _DONE:
            assert status == "done", (what, error)
        else:
            assert status == "failed" and expected in error, (what, error)
    # A job whose exception cannot even be printed is an ordinary failed attempt.
    assert outcome["shape raising arg", "fuzz.raises_with"] == (
        "failed",
        "_UnprintableError: <str() failed>",
    )
    # A job's error carrying NUL or a lone surrogate is stored, escaped.
    assert outcome["shape NUL in error", "fuzz.raises_with"] == (
        "failed",
        "ValueError: cannot use a\\x00b",
    )
    assert outcome["shape surrogate in error", "fuzz.raises_with"] == (
        "failed",
        "ValueError: cannot use \\udcff",
    )
