"""The outage soak's judge (benchmarks/soak_outages.py) finds what it must find."""

from __future__ import annotations

from typing import Any

from benchmarks import soak_outages as soak


def _run(job: int, kind: str, key: str, first: float, last: float) -> dict[str, Any]:
    return {"job": job, "attempt": 1, "pid": job, "kind": kind, "key": key,
            "first": first, "last": last, "outcome": "done"}  # fmt: skip


def test_two_runs_of_one_job_that_overlap_are_a_double_run() -> None:
    runs = {"a": _run(1, "def", "-", 0.0, 2.0), "b": _run(1, "def", "-", 1.9, 3.0)}
    assert [d["job"] for d in soak.double_runs(runs)] == [1]
    runs["b"] = _run(1, "def", "-", 2.01, 3.0)
    assert soak.double_runs(runs) == []


def test_more_runs_of_a_key_alive_than_its_limit_is_a_violation() -> None:
    runs = {
        "a": _run(1, "limited", "k0", 0, 5),
        "b": _run(2, "limited", "k0", 1, 5),
        "c": _run(3, "limited", "k0", 4.99, 6),
    }
    assert soak.limit_violations(runs) == [{"key": "k0", "at": 4.99, "alive": 3}]
    runs["c"] = _run(3, "limited", "k0", 5.01, 6)
    assert soak.limit_violations(runs) == []


def test_two_jobs_of_one_unique_key_alive_at_once_overlap() -> None:
    runs = {"a": _run(1, "unique", "u1", 0, 1), "b": _run(2, "unique", "u1", 0.5, 2)}
    assert len(soak.overlaps_across_jobs(runs, "unique")) == 1


def test_more_claims_than_the_count_in_any_window_is_a_rate_violation() -> None:
    assert soak.rate_violations([0, 0.1, 0.2, 0.3, 0.4, 0.99], 5, 1.0) == 1
    assert soak.rate_violations([0, 0.1, 0.2, 0.3, 0.4, 1.0], 5, 1.0) == 0
