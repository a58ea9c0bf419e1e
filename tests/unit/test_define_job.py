"""define_job: options, names, validation; job calls before any database."""

from __future__ import annotations

import gc
import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any

import pendulum
import pytest

from koyojobs import JobCall, JobDefinitionError, SerializationError, define_job, schedule_at


@define_job
async def bare_job(name: str) -> str:
    return name


@define_job(queue="emails", priority=0, max_attempts=5, timeout=30, name="unit.send_email")
def send_email(to: str) -> None:
    return None


def test_bare_definition_has_the_defaults() -> None:
    assert bare_job.name == f"{__name__}.bare_job"
    assert (bare_job.queue, bare_job.priority, bare_job.max_attempts, bare_job.timeout) == (
        "default",
        50,
        3,
        None,
    )
    assert bare_job.is_async


def test_options_are_kept_and_the_function_stays_reachable() -> None:
    assert (send_email.queue, send_email.priority, send_email.max_attempts) == ("emails", 0, 5)
    assert send_email.timeout == 30.0
    assert send_email.name == "unit.send_email"
    assert send_email.fn("a@b.c") is None
    assert not send_email.is_async


def test_two_functions_under_one_name_is_an_error() -> None:
    with pytest.raises(JobDefinitionError, match=r"'unit.send_email' is already defined by"):

        @define_job(name="unit.send_email")
        def other(to: str) -> None: ...


def test_redefining_the_same_function_is_not_a_conflict() -> None:
    # What a module reload does: same module and qualname, a new object.
    again = define_job(bare_job.fn)
    assert again.name == bare_job.name


def test_a_job_in_main_or_a_function_body_needs_a_name() -> None:
    def local() -> None: ...

    with pytest.raises(JobDefinitionError, match="pass name="):
        define_job(local)
    local.__module__ = "__main__"
    local.__qualname__ = "local"
    with pytest.raises(JobDefinitionError, match="__main__"):
        define_job(local)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("queue", ""),
        ("queue", 3),
        ("queue", "q" * 201),
        ("priority", -1),
        ("priority", 1.5),
        ("priority", True),
        ("max_attempts", 0),
        ("max_attempts", "3"),
        ("timeout", 0),
        ("timeout", -2),
        ("timeout", "10"),
        ("timeout", float("inf")),
        ("timeout", float("nan")),
        ("backoff", 5),
        ("priority", 2**31),
        ("max_attempts", 2**31),
        ("queue", "a\x00b"),
        ("queue", "emails\n"),
        ("queue", "d\u202eefault"),
        ("queue", "zero\u200bwidth"),
    ],
)
def test_bad_options_are_refused_naming_the_option(option: str, value: object) -> None:
    with pytest.raises(JobDefinitionError, match=rf"job 'unit.bad': {option}=.* is invalid"):
        define_job(name="unit.bad", **{option: value})(lambda: None)  # type: ignore[call-overload]


@pytest.mark.parametrize("name", ["unit.a\x00b", "unit.line\nINFO forged", "invoice\u202egpj.exe"])
def test_a_name_with_a_control_or_invisible_character_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(JobDefinitionError) as raised:
        define_job(name=name)(lambda: None)
    message = str(raised.value)
    assert message.startswith(f"job {name!r}: the name holds a control or invisible character")
    assert "\n" not in message and "\x00" not in message and "\u202e" not in message


def test_a_call_is_an_awaitable_job_call_that_touches_nothing() -> None:
    call = bare_job("Bogdan")
    assert isinstance(call, JobCall)
    assert call.args == ("Bogdan",)
    call.consume()


def test_a_dropped_call_warns_naming_the_job() -> None:
    with pytest.warns(RuntimeWarning, match=r"bare_job\(...\) was never awaited"):
        bare_job("x")
        gc.collect()


def test_bad_arguments_fail_at_the_call_site() -> None:
    with pytest.raises(TypeError, match=r"job '.*bare_job' called with bad arguments"):
        bare_job()  # type: ignore[call-arg]


def test_positional_calls_are_checked_as_inspect_binds_them() -> None:
    @define_job(name="unit.defaults")
    def with_defaults(a: int, b: int = 2, /, c: int = 3) -> None: ...

    @define_job(name="unit.star")
    def star(a: int, *rest: int) -> None: ...

    for call in (with_defaults(1), with_defaults(1, 2), with_defaults(1, 2, 3), star(1, 2, 3)):
        assert call.args[0] == 1
        call.consume()
    loose: Any = with_defaults
    for args in ((), (1, 2, 3, 4)):
        with pytest.raises(TypeError, match="called with bad arguments"):
            loose(*args)
    with pytest.raises(TypeError, match="called with bad arguments"):
        star()  # type: ignore[call-arg]
    call = with_defaults(1, c=4)  # a keyword: inspect checks it
    call.consume()
    with pytest.raises(TypeError, match="called with bad arguments"):
        with_defaults(1, d=4)  # type: ignore[call-arg]


def test_an_unserializable_argument_is_named() -> None:
    @define_job(name="unit.takes_conn")
    def takes_conn(count: int, conn: object) -> None: ...

    with pytest.raises(SerializationError, match=r"argument 'conn' of job 'unit.takes_conn'"):
        takes_conn(1, sqlite3.connect(":memory:"))
    with pytest.raises(SerializationError, match=r"argument 'conn' of job 'unit.takes_conn'"):
        takes_conn(1, conn=sqlite3.connect(":memory:"))


def test_schedule_at_wants_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule_at(datetime(2030, 1, 1), bare_job("x"))
    with pytest.raises(TypeError, match="needs a datetime"):
        schedule_at("tomorrow", bare_job("x"))  # type: ignore[arg-type]
    later = schedule_at(pendulum.now().add(minutes=5), bare_job("x"))
    aware = schedule_at(datetime.now(timezone(timedelta(hours=2))), bare_job("y"))
    assert later.scheduled_at is not None
    assert aware.scheduled_at is not None
    later.consume()
    aware.consume()


async def test_awaiting_without_a_broker_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="set_current_broker"):
        await bare_job("x")
