"""``@job.on_success`` / ``@job.on_failure`` and ``Broker(middleware=...)`` in a real worker."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from koyojobs import (
    Broker,
    CallNext,
    JobOutcome,
    RunningJob,
    Status,
    current_job,
    define_job,
    execute_jobs_synchronously,
    set_current_broker,
)
from tests.integration.conftest import StartWorker

seen: list[Any] = []
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@pytest.fixture(autouse=True)
def _clear() -> None:
    seen.clear()


@define_job(name="tests.hooks.greet")
async def greet(name: str, *, punctuation: str = "!") -> str:
    seen.append(("job", name))
    return f"hello {name}{punctuation}"


@greet.on_success
async def greet_async_hook(outcome: JobOutcome) -> None:
    seen.append(("async hook", outcome.job.name, outcome.args, outcome.kwargs, outcome.result))


@greet.on_success
def greet_plain_hook(outcome: JobOutcome) -> None:
    in_main = threading.current_thread() is threading.main_thread()
    job = current_job()
    seen.append(("plain hook", in_main, job is not None and job.id == outcome.job.id))


@define_job(name="tests.hooks.flaky", max_attempts=3, backoff=lambda attempt: 0.0)
async def flaky(fail_until: int) -> int:
    job = current_job()
    assert job is not None
    if job.attempt < fail_until:
        raise ValueError(f"attempt {job.attempt} fails")
    return job.attempt


@flaky.on_success
async def flaky_succeeded(outcome: JobOutcome) -> None:
    seen.append(("success", outcome.job.attempt, outcome.result, outcome.error))


@flaky.on_failure
def flaky_failed(outcome: JobOutcome) -> None:
    seen.append(("failure", outcome.job.attempt, repr(outcome.error), outcome.result))


@define_job(name="tests.hooks.with_broken_hooks")
async def with_broken_hooks() -> str:
    return "kept"


@with_broken_hooks.on_success
async def broken_async_hook(outcome: JobOutcome) -> None:
    raise RuntimeError("async hook broke")


@with_broken_hooks.on_success
def broken_plain_hook(outcome: JobOutcome) -> None:
    raise RuntimeError("plain hook broke")


@with_broken_hooks.on_success
async def surviving_hook(outcome: JobOutcome) -> None:
    seen.append(("survivor", outcome.result))


@define_job(name="tests.hooks.reads_context")
async def reads_context() -> str:
    return request_id.get()


@define_job(name="tests.hooks.reads_context_in_thread")
def reads_context_in_thread() -> tuple[str, bool]:
    return request_id.get(), threading.current_thread() is threading.main_thread()


@define_job(name="tests.hooks.plain", max_attempts=2, backoff=lambda attempt: 0.0)
async def plain(value: int) -> int:
    seen.append(("job", value))
    return value * 2


async def test_success_hooks_run_in_order_async_in_the_loop_plain_in_the_pool(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job_id = await greet("Ada", punctuation="?")
    assert job_id is not None
    job = await broker.wait(job_id, timeout=10)
    assert job.status is Status.DONE and job.result == "hello Ada?"
    assert seen == [
        ("job", "Ada"),
        ("async hook", "tests.hooks.greet", ("Ada",), {"punctuation": "?"}, "hello Ada?"),
        ("plain hook", False, True),
    ]


async def test_on_failure_runs_only_after_the_last_attempt(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job_id = await flaky(fail_until=99)
    assert job_id is not None
    job = await broker.wait(job_id, timeout=10)
    assert job.status is Status.FAILED and job.attempts == 3
    assert seen == [("failure", 3, "ValueError('attempt 3 fails')", None)]


async def test_a_retried_job_that_succeeds_runs_on_success_only(
    broker: Broker, start_worker: StartWorker
) -> None:
    await start_worker()
    job_id = await flaky(fail_until=2)
    assert job_id is not None
    job = await broker.wait(job_id, timeout=10)
    assert job.status is Status.DONE and job.result == 2
    assert seen == [("success", 2, 2, None)]


async def test_a_hook_that_raises_is_logged_and_changes_nothing(
    broker: Broker, start_worker: StartWorker, caplog: pytest.LogCaptureFixture
) -> None:
    await start_worker()
    with caplog.at_level(logging.WARNING, logger="koyojobs.worker"):
        job_id = await with_broken_hooks()
        assert job_id is not None
        job = await broker.wait(job_id, timeout=10)
    assert job.status is Status.DONE and job.result == "kept" and job.attempts == 1
    assert job.last_error is None
    assert seen == [("survivor", "kept")]
    warnings = [r for r in caplog.records if "hook" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
    assert "on_success hook broken_async_hook of job 'tests.hooks.with_broken_hooks'" in (
        warnings[0].getMessage()
    )
    assert warnings[1].exc_info is not None and "plain hook broke" in str(warnings[1].exc_info[1])


def _recording(label: str) -> Any:
    async def middleware(job: RunningJob, call_next: CallNext) -> Any:
        seen.append((label, "in", job.name, job.attempt))
        result = await call_next()
        seen.append((label, "out", result))
        return result

    return middleware


@pytest.fixture
async def broker_with(dsn: str) -> AsyncIterator[Any]:
    """Starts a broker with the given middleware, set as the current one."""
    brokers: list[Broker] = []

    async def make(*middleware: Any) -> Broker:
        b = Broker(dsn, middleware=list(middleware))
        await b.start()
        set_current_broker(b)
        brokers.append(b)
        return b

    yield make
    set_current_broker(None)
    for b in brokers:
        await b.stop()


async def _run(broker: Broker, call: Any, **worker_options: Any) -> Any:
    from koyojobs import Worker

    worker = Worker(broker, lease=2.0, poll_interval=0.5, shutdown_grace=1.0, **worker_options)
    await worker.start()
    try:
        job_id = await broker.enqueue(call)
        assert job_id is not None
        return await broker.wait(job_id, timeout=10)
    finally:
        await worker.stop()


async def test_middleware_wraps_every_attempt_first_one_outermost(broker_with: Any) -> None:
    broker = await broker_with(_recording("a"), _recording("b"))
    job = await _run(broker, plain(21))
    assert job.result == 42
    assert seen == [
        ("a", "in", "tests.hooks.plain", 1),
        ("b", "in", "tests.hooks.plain", 1),
        ("job", 21),
        ("b", "out", 42),
        ("a", "out", 42),
    ]


async def test_a_middleware_that_raises_fails_the_attempt(broker_with: Any) -> None:
    async def refuses_first(job: RunningJob, call_next: CallNext) -> Any:
        if job.attempt == 1:
            raise ConnectionError("no session for attempt 1")
        return await call_next()

    broker = await broker_with(refuses_first)
    job = await _run(broker, plain(5))
    assert job.status is Status.DONE and job.attempts == 2 and job.result == 10
    assert job.last_error == "ConnectionError: no session for attempt 1"
    assert seen == [("job", 5)]  # the first attempt never reached the job


async def test_middleware_sets_context_variables_async_and_plain_jobs_read(
    broker_with: Any,
) -> None:
    async def with_request_id(job: RunningJob, call_next: CallNext) -> Any:
        token = request_id.set(f"req-{job.id}")
        try:
            return await call_next()
        finally:
            request_id.reset(token)

    broker = await broker_with(with_request_id)
    job = await _run(broker, reads_context())
    assert job.result == f"req-{job.id}"
    job = await _run(broker, reads_context_in_thread())
    assert job.result == (f"req-{job.id}", False)


async def test_hooks_and_middleware_in_the_synchronous_mode(broker_with: Any) -> None:
    broker = await broker_with(_recording("m"))
    with execute_jobs_synchronously():
        await greet("Bo")
        with pytest.raises(ValueError, match="attempt 1 fails"):  # no retries inline
            await flaky(fail_until=99)
    assert broker.middleware
    assert seen == [
        ("m", "in", "tests.hooks.greet", 1),
        ("job", "Bo"),
        ("m", "out", "hello Bo!"),
        ("async hook", "tests.hooks.greet", ("Bo",), {}, "hello Bo!"),
        ("plain hook", True, True),
        ("m", "in", "tests.hooks.flaky", 1),
        ("failure", 1, "ValueError('attempt 1 fails')", None),
    ]


@pytest.mark.parametrize("middleware", [[lambda job, call_next: call_next()], "mw", [print], 3])
def test_middleware_must_be_async_functions(dsn: str, middleware: Any) -> None:
    with pytest.raises(TypeError, match="Broker middleware must be"):
        Broker(dsn, middleware=middleware)


def test_a_hook_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"job 'tests\.hooks\.plain': on_failure needs a function"):
        plain.on_failure("alert")  # type: ignore[type-var]


async def test_hooks_and_middleware_in_testing_drain(broker_with: Any) -> None:
    from koyojobs.testing import drain

    broker = await broker_with(_recording("m"))
    await greet("Cy")
    assert await drain(broker) == {"done": 1}
    assert seen == [
        ("m", "in", "tests.hooks.greet", 1),
        ("job", "Cy"),
        ("m", "out", "hello Cy!"),
        ("async hook", "tests.hooks.greet", ("Cy",), {}, "hello Cy!"),
        ("plain hook", False, True),
    ]
