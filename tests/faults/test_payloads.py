"""Bad payloads fail their job, never their worker; signed payloads keep hostile rows inert."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from koyojobs import Broker, Job, PayloadError, Status, Worker, execution, set_current_broker
from koyojobs.serializer import Serializer
from tests.conftest import insert_raw_job, wait_for_status
from tests.faults import jobs


async def _insert(broker: Broker, name: str, args: bytes, max_attempts: int = 1) -> int:
    return await insert_raw_job(broker, name, args, max_attempts)


def _arguments(*args: Any) -> bytes:
    return pickle.dumps((args, {}))


class _Exits:
    def __reduce__(self) -> tuple[Any, ...]:
        return (sys.exit, ("unpickling this exits",))


class _Marks:
    """Unpickling it creates a file: what a hostile row would do, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _vanished_class_payload() -> bytes:
    # An instance of a class a previous deploy defined, gone from the module now.
    cls = type("RemovedInLastDeploy", (), {"__module__": jobs.__name__})
    jobs.RemovedInLastDeploy = cls  # type: ignore[attr-defined]
    try:
        return _arguments(cls())
    finally:
        del jobs.RemovedInLastDeploy  # type: ignore[attr-defined]


@pytest.fixture
async def worker(broker: Broker) -> AsyncIterator[Worker]:
    async with Worker(broker, lease=2.0, poll_interval=0.2) as w:
        yield w


async def test_bad_payloads_fail_their_job_clearly_and_the_worker_goes_on(
    broker: Broker, worker: Worker
) -> None:
    good = _arguments("fine")
    corrupt = await _insert(broker, "faults.takes_arg", good[: len(good) // 2], max_attempts=3)
    garbage = await _insert(broker, "faults.takes_arg", os.urandom(64), max_attempts=3)
    vanished = await _insert(broker, "faults.takes_arg", _vanished_class_payload(), 3)
    exits = await _insert(broker, "faults.takes_arg", _arguments(_Exits()), max_attempts=3)
    unknown = await _insert(broker, "faults.renamed_away", good, max_attempts=2)
    unserializable = await jobs.unserializable_result()
    assert unserializable is not None

    job: Job | None
    for job_id in (corrupt, garbage, vanished, exits):
        # Unreadable: failed at once, whatever attempts remain.
        job = await wait_for_status(broker, job_id, Status.FAILED, Status.DONE)
        assert (job.status, job.attempts) == (Status.FAILED, 1), job
        assert job.last_error is not None
        assert job.last_error.startswith("cannot deserialize payload: "), job.last_error
    job = await broker.get_job(vanished)
    assert job is not None and "RemovedInLastDeploy" in (job.last_error or "")
    job = await broker.get_job(exits)
    assert job is not None and "SystemExit" in (job.last_error or "")

    job = await wait_for_status(broker, unserializable, Status.FAILED, Status.DONE)
    assert job.status is Status.FAILED
    assert "result of job 'faults.unserializable_result' cannot be serialized" in (
        job.last_error or ""
    )

    # An unknown name is an ordinary failure: retried (a rolling deploy may bring
    # the code), then failed.
    job = await wait_for_status(broker, unknown, Status.FAILED, timeout=15)
    assert job.attempts == 2
    assert "unknown job 'faults.renamed_away'" in (job.last_error or ""), job.last_error

    # The same worker goes on with the next job.
    assert (await wait_for_status(broker, await jobs.quick("next"), Status.DONE)).result == "next"
    counts = await broker.pool.fetch("SELECT status, count(*) AS n FROM koyojobs_jobs GROUP BY 1")
    assert {r["status"]: r["n"] for r in counts} == {"failed": 6, "done": 1}


async def test_a_hostile_row_is_never_unpickled_by_a_worker_with_a_secret(
    dsn: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    hostile = pickle.dumps(((_Marks(marker),), {}))
    name = "faults.takes_arg"
    assert not marker.exists()
    async with Broker(dsn, secret="s3cret") as broker, Worker(broker, lease=2.0, poll_interval=0.2):
        set_current_broker(broker)
        try:
            rows = {
                "unsigned": hostile,
                "signed with another key": Serializer(["attacker"]).sign_arguments(hostile, name),
                "signature cut short": Serializer(["s3cret"]).sign_arguments(hostile, name)[:20],
            }
            ids = {what: await _insert(broker, name, data, 3) for what, data in rows.items()}
            for what, job_id in ids.items():
                job = await wait_for_status(broker, job_id, Status.FAILED, Status.DONE)
                assert (job.status, job.attempts) == (Status.FAILED, 1), (what, job)
                assert "bad signature" in (job.last_error or ""), (what, job.last_error)
                # The bytes stay for inspection.
                kept = await broker.pool.fetchval(
                    "SELECT args FROM koyojobs_jobs WHERE id = $1", job_id
                )
                assert kept == rows[what], what
            # A job signed with the right key still runs.
            job = await wait_for_status(broker, await jobs.quick("ok"), Status.DONE)
            assert job.result == "ok"
        finally:
            set_current_broker(None)
    assert not marker.exists(), "a hostile payload was unpickled"


async def test_key_rotation_accepts_the_old_key_and_signs_with_the_new(dsn: str) -> None:
    async def enqueue_signed_with_old(value: str) -> int:
        set_current_broker(old)
        try:
            job_id = await jobs.quick(value)
        finally:
            set_current_broker(None)
        assert job_id is not None
        return job_id

    async with Broker(dsn, secret="old") as old:
        # A worker that knows only the new key refuses the old signature...
        refused = await enqueue_signed_with_old("refused")
        async with Broker(dsn, secret="new") as new, Worker(new, lease=2.0, poll_interval=0.2):
            job = await wait_for_status(new, refused, Status.FAILED, Status.DONE)
            assert job.status is Status.FAILED and "bad signature" in (job.last_error or "")

        # ...one that rotates (signs with new, still accepts old) runs it.
        accepted = await enqueue_signed_with_old("accepted")
        async with (
            Broker(dsn, secret=["new", "old"]) as rotating,
            Worker(rotating, lease=2.0, poll_interval=0.2),
        ):
            job = await wait_for_status(rotating, accepted, Status.DONE, Status.FAILED)
            assert (job.status, job.result) == (Status.DONE, "accepted"), job

        # The result was signed with the new key: the old key alone cannot read it.
        with pytest.raises(PayloadError, match="bad signature"):
            await old.get_job(accepted)


async def test_the_secret_can_come_from_the_environment(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOYOJOBS_SECRET", "from-env")
    async with Broker(dsn) as broker, Worker(broker, lease=2.0, poll_interval=0.2):
        hostile = await _insert(broker, "faults.takes_arg", _arguments("unsigned"), 3)
        job = await wait_for_status(broker, hostile, Status.FAILED, Status.DONE)
        assert "bad signature" in (job.last_error or "")
        set_current_broker(broker)
        try:
            job = await wait_for_status(broker, await jobs.quick("env"), Status.DONE)
        finally:
            set_current_broker(None)
        assert job.result == "env"


async def _args_of(broker: Broker, job_id: int) -> bytes:
    args: bytes = await broker.pool.fetchval("SELECT args FROM koyojobs_jobs WHERE id = $1", job_id)
    return args


async def test_a_signed_payload_runs_only_as_what_it_was_signed_for(dsn: str) -> None:
    async with Broker(dsn, secret="s3cret") as broker:
        set_current_broker(broker)
        try:
            # Signed arguments of faults.quick, not yet run (no worker yet).
            quick = await jobs.quick("meant for quick")
            assert quick is not None
            quick_args = await _args_of(broker, quick)
            async with Worker(broker, lease=2.0, poll_interval=0.2):
                done = await wait_for_status(broker, quick, Status.DONE, Status.FAILED)
                assert (done.status, done.result) == (Status.DONE, "meant for quick")
                result = await broker.pool.fetchval(
                    "SELECT result FROM koyojobs_jobs WHERE id = $1", quick
                )
                replays = {
                    "arguments of another job": ("faults.takes_arg", quick_args),
                    "a result as arguments": ("faults.quick", result),
                }
                ids = {
                    what: await _insert(broker, name, data, 3)
                    for what, (name, data) in replays.items()
                }
                for what, job_id in ids.items():
                    job = await wait_for_status(broker, job_id, Status.FAILED, Status.DONE)
                    assert (job.status, job.attempts) == (Status.FAILED, 1), (what, job)
                    name = replays[what][0]
                    assert job.last_error == (
                        "bad signature: no known key signed this payload as "
                        f"the arguments of job {name!r}"
                    ), what
                # The same arguments in a row of their own job still run (no freshness:
                # see the Security page).
                again = await _insert(broker, "faults.quick", quick_args, 1)
                job = await wait_for_status(broker, again, Status.DONE, Status.FAILED)
                assert (job.status, job.result) == (Status.DONE, "meant for quick")
            # A result copied into another job's row reads as nothing but an error.
            await broker.pool.execute(
                "UPDATE koyojobs_jobs SET result = $1 WHERE id = $2",
                result,
                ids["arguments of another job"],
            )
            with pytest.raises(PayloadError, match=r"as the result of job 'faults\.takes_arg'$"):
                await broker.get_job(ids["arguments of another job"])
        finally:
            set_current_broker(None)


async def test_a_payload_signed_in_the_unbound_kjs1_format_is_refused(dsn: str) -> None:
    body = _arguments("old")
    old = b"KJS1" + hmac.new(b"s3cret", body, hashlib.sha256).digest() + body
    async with Broker(dsn, secret="s3cret") as broker, Worker(broker, lease=2.0, poll_interval=0.2):
        job_id = await _insert(broker, "faults.takes_arg", old, 3)
        job = await wait_for_status(broker, job_id, Status.FAILED, Status.DONE)
        assert (job.status, job.attempts) == (Status.FAILED, 1)
        assert job.last_error == (
            "bad signature: payload is signed in the KJS1 format, which predates binding "
            "payloads to their job; enqueue the job again"
        )


def _security_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "payloads are not signed" in r.getMessage()
    ]


async def test_a_worker_without_a_secret_warns_once_what_that_means(
    dsn: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KOYOJOBS_SECRET", raising=False)
    monkeypatch.setattr(execution, "_warned_unsigned", False, raising=False)  # a fresh process
    caplog.set_level(logging.INFO, logger="koyojobs")
    async with Broker(dsn, secret="s3cret") as signed, Worker(signed, poll_interval=0.2):
        pass
    assert _security_warnings(caplog) == []

    async with Broker(dsn) as broker:
        async with Worker(broker, poll_interval=0.2), Worker(broker, "other", poll_interval=0.2):
            pass
        async with Worker(broker, poll_interval=0.2):
            pass
    assert _security_warnings(caplog) == [
        "payloads are not signed: anyone who can write the jobs table can run code in this "
        "worker; set Broker(secret=...) or KOYOJOBS_SECRET (see the Security page)"
    ]
