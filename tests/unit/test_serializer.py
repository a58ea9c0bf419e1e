"""Payloads: dill round trips, signatures bound to job and kind, rotation, empty keys."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import pickle
from collections.abc import Callable
from typing import Any

import pendulum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from koyojobs import Broker, PayloadError
from koyojobs.serializer import Serializer, to_bytes


@dataclasses.dataclass
class Point:
    x: int
    y: int


def make_adder(n: int):  # type: ignore[no-untyped-def]
    return lambda x: x + n


JOB = "app.job"


@pytest.mark.parametrize("secrets", [(), ("k1",)])
def test_round_trips_what_dill_can(secrets: tuple[str, ...]) -> None:
    s = Serializer(secrets)
    when = pendulum.datetime(2030, 1, 2, 3, 4, 5, tz="Europe/Paris")
    value = (Point(1, 2), when, b"\x00\xff", make_adder(3), lambda: 7)
    back = s.load_result(s.dump_result(value, JOB), JOB)
    assert back[0] == Point(1, 2)
    assert back[1] == when
    assert back[1].timezone_name == "Europe/Paris"
    assert back[2] == b"\x00\xff"
    assert back[3](1) == 4
    assert back[4]() == 7
    args, kwargs = s.load_arguments(s.sign_arguments(to_bytes((value, {"k": 1})), JOB), JOB)
    assert (args[0], kwargs) == (Point(1, 2), {"k": 1})


def test_a_tampered_payload_is_refused() -> None:
    s = Serializer(["key"])
    payload = bytearray(s.dump_result({"a": 1}, JOB))
    payload[-3] ^= 0xFF
    with pytest.raises(PayloadError, match="bad signature"):
        s.load_result(bytes(payload), JOB)


def test_an_unsigned_payload_is_refused_when_a_key_is_set() -> None:
    with pytest.raises(PayloadError, match="bad signature: payload is not signed"):
        Serializer(["key"]).load_result(Serializer().dump_result(1, JOB), JOB)


def test_a_wrong_key_is_refused_and_old_keys_verify() -> None:
    old = Serializer(["old"]).dump_result("x", JOB)
    with pytest.raises(PayloadError, match="bad signature"):
        Serializer(["other"]).load_result(old, JOB)
    assert Serializer(["new", "old"]).load_result(old, JOB) == "x"
    # The first key signs.
    rotated = Serializer(["new", "old"]).dump_result("y", JOB)
    assert Serializer(["new"]).load_result(rotated, JOB) == "y"
    with pytest.raises(PayloadError, match="bad signature"):
        Serializer(["old"]).load_result(rotated, JOB)


def test_a_signature_binds_the_payload_to_its_job_name_and_kind() -> None:
    s = Serializer(["key"])
    arguments = s.sign_arguments(to_bytes((("x",), {})), "app.a")
    result = s.dump_result((("x",), {}), "app.a")
    assert s.load_arguments(arguments, "app.a") == (("x",), {})
    assert s.load_result(result, "app.a") == (("x",), {})
    refused: dict[str, Callable[[], object]] = {
        "arguments of another job": lambda: s.load_arguments(arguments, "app.b"),
        "a result as arguments": lambda: s.load_arguments(result, "app.a"),
        "arguments as a result": lambda: s.load_result(arguments, "app.a"),
        "a result of another job": lambda: s.load_result(result, "app.b"),
        # The name is length-prefixed: no name and body can pass for another split.
        "a name shifted into the body": lambda: s.load_arguments(arguments, "app."),
    }
    for what, load in refused.items():
        with pytest.raises(
            PayloadError, match=r"^bad signature: no known key signed this payload as"
        ):
            load()
            pytest.fail(f"{what} was accepted")
    with pytest.raises(PayloadError) as caught:
        s.load_arguments(result, "app.a")
    assert str(caught.value) == (
        "bad signature: no known key signed this payload as the arguments of job 'app.a'"
    )


def _kjs1(key: bytes, body: bytes) -> bytes:
    # The first signed format, as koyojobs wrote it before payloads were bound to their job.
    return b"KJS1" + hmac.new(key, body, hashlib.sha256).digest() + body


def test_a_payload_in_the_unbound_kjs1_format_is_refused_with_a_key_read_without() -> None:
    old = _kjs1(b"key", to_bytes((("x",), {})))
    with pytest.raises(PayloadError) as caught:
        Serializer(["key"]).load_arguments(old, JOB)
    assert str(caught.value) == (
        "bad signature: payload is signed in the KJS1 format, which predates binding "
        "payloads to their job; enqueue the job again"
    )
    # Without a key nothing is verified, in either format: the table is trusted as it is.
    assert Serializer().load_arguments(old, JOB) == (("x",), {})
    assert Serializer().load_arguments(Serializer(["k"]).sign_arguments(old[36:], JOB), JOB)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, "are not an (args, kwargs) pair: got NoneType"),
        ((1, 2, 3), "are not an (args, kwargs) pair: got a tuple of length 3"),
        ([(), {}], "are not an (args, kwargs) pair: got a list of length 2"),
        (([], []), ": kwargs is a list of length 0, not a dict"),
        (("ab", {}), ": args is str, not a tuple or list"),
        (((), {1: 2}), ": kwargs has a key of type int, not str"),
    ],
)
def test_arguments_must_be_an_args_kwargs_pair(value: object, error: str) -> None:
    for s in (Serializer(), Serializer(["key"])):
        payload = s.sign_arguments(pickle.dumps(value), JOB)
        with pytest.raises(PayloadError) as caught:
            s.load_arguments(payload, JOB)
        separator = "" if error.startswith(":") else " "
        assert str(caught.value) == f"arguments of job 'app.job'{separator}{error}"
    # A list of arguments is as good as a tuple.
    assert Serializer().load_arguments(pickle.dumps(([1], {"a": 2})), JOB) == ((1,), {"a": 2})


def test_what_is_not_bytes_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="expected bytes, got NoneType"):
        Serializer().load_arguments(None, JOB)  # type: ignore[arg-type]


def test_corrupt_bytes_raise_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="cannot deserialize payload"):
        Serializer().load_result(b"\x80\x04not a pickle", JOB)


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


def _raise_unprintable() -> None:
    raise _UnprintableError()


class _RaisesWhenLoaded:
    def __reduce__(self) -> tuple[object, ...]:
        return (_raise_unprintable, ())


def test_an_error_while_loading_that_cannot_be_printed_is_still_one_clear_line() -> None:
    with pytest.raises(PayloadError) as caught:
        Serializer().load_result(pickle.dumps(_RaisesWhenLoaded()), JOB)
    assert str(caught.value) == "cannot deserialize payload: _UnprintableError: <str() failed>"


@given(st.binary(max_size=200), st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_bytes_load_as_a_call_or_raise_a_payload_error(data: bytes, keyed: bool) -> None:
    s = Serializer(["key"] if keyed else [])
    try:
        args, kwargs = s.load_arguments(data, JOB)
    except PayloadError:
        return
    assert type(args) is tuple and type(kwargs) is dict
    assert all(type(k) is str for k in kwargs)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_mutated_calls_load_as_a_call_or_raise_a_payload_error(data: st.DataObject) -> None:
    keyed = data.draw(st.booleans())
    s = Serializer(["key"] if keyed else [])
    payload = bytearray(s.sign_arguments(to_bytes((("x", 1, [2.5]), {"k": b"v"})), JOB))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    try:
        args, kwargs = s.load_arguments(bytes(payload[:cut]), JOB)
    except PayloadError:
        return
    assert type(args) is tuple and type(kwargs) is dict


@pytest.mark.parametrize(
    ("secret", "error"),
    [
        ("", "secret='' is empty: an empty key signs nothing (None runs unsigned)"),
        (b"", "secret=b'' is empty: an empty key signs nothing (None runs unsigned)"),
        ([], "secret is an empty list: give at least one key (None runs unsigned)"),
        (
            [""],
            "secret has an empty key at index 0: an empty key signs nothing (None runs unsigned)",
        ),
        (
            ["new", b""],
            "secret has an empty key at index 1: an empty key signs nothing (None runs unsigned)",
        ),
    ],
)
def test_an_empty_key_is_an_error_not_unsigned(secret: Any, error: str) -> None:
    # The Broker builds its serializer at construction: no database needed to see it.
    with pytest.raises(ValueError, match="secret") as caught:
        Broker("postgresql://nowhere/db", secret=secret)
    assert str(caught.value) == error


def test_a_secret_of_the_wrong_type_says_so_without_showing_it() -> None:
    with pytest.raises(TypeError) as caught:
        Broker("postgresql://nowhere/db", secret=12345)  # type: ignore[arg-type]
    assert str(caught.value) == "secret must be a str or bytes key or a list of keys, got int"
    with pytest.raises(TypeError, match="got int at index 1"):
        Serializer.from_options(["key", 12345])  # type: ignore[list-item]


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOYOJOBS_SECRET", "env-key")
    assert Serializer.from_options(None).signs
    signed = Serializer.from_options(None).dump_result(5, JOB)
    assert Serializer(["env-key"]).load_result(signed, JOB) == 5
    monkeypatch.delenv("KOYOJOBS_SECRET")
    assert not Serializer.from_options(None).signs


def test_an_empty_koyojobs_secret_is_an_error_not_unsigned(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in a compose file's KOYOJOBS_SECRET=${SECRET} with SECRET missing.
    monkeypatch.setenv("KOYOJOBS_SECRET", "")
    with pytest.raises(ValueError, match="KOYOJOBS_SECRET") as caught:
        Broker("postgresql://nowhere/db")
    assert str(caught.value) == (
        "KOYOJOBS_SECRET is set but empty: set it to a key, or unset it to run unsigned"
    )
    # An explicit secret wins over the environment.
    assert Broker("postgresql://nowhere/db", secret="key").serializer.signs


def test_what_main_defines_travels_by_value_to_another_process() -> None:
    import subprocess
    import sys

    def shout(word: str) -> str:
        return word.upper() + "!"

    main = sys.modules["__main__"]
    shout.__module__, shout.__qualname__ = "__main__", "shout_for_test"
    main.shout_for_test = shout  # type: ignore[attr-defined]
    try:
        payload = Serializer().dump_result(shout, JOB)
    finally:
        del main.shout_for_test
    loader = (
        "import sys; from koyojobs.serializer import Serializer; "
        "print(Serializer().load_result(sys.stdin.buffer.read(), 'app.job')('hey'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", loader], input=payload, capture_output=True, check=True
    )
    assert result.stdout.decode().strip() == "HEY!"


def test_plain_values_use_the_fast_standard_pickler() -> None:
    value = {"id": 7, "tags": ["a", "b"]}
    assert Serializer().dump_result(value, JOB) == pickle.dumps(
        value, protocol=pickle.HIGHEST_PROTOCOL
    )
