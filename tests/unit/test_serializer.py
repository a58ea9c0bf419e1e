"""Payloads: dill round trips, signatures, rotation."""

from __future__ import annotations

import dataclasses

import pendulum
import pytest

from koyojobs import PayloadError
from koyojobs.serializer import Serializer


@dataclasses.dataclass
class Point:
    x: int
    y: int


def make_adder(n: int):  # type: ignore[no-untyped-def]
    return lambda x: x + n


@pytest.mark.parametrize("secrets", [(), ("k1",)])
def test_round_trips_what_dill_can(secrets: tuple[str, ...]) -> None:
    s = Serializer(secrets)
    when = pendulum.datetime(2030, 1, 2, 3, 4, 5, tz="Europe/Paris")
    args = (Point(1, 2), when, b"\x00\xff", make_adder(3), lambda: 7)
    back = s.loads(s.dumps(args))
    assert back[0] == Point(1, 2)
    assert back[1] == when
    assert back[1].timezone_name == "Europe/Paris"
    assert back[2] == b"\x00\xff"
    assert back[3](1) == 4
    assert back[4]() == 7


def test_a_tampered_payload_is_refused() -> None:
    s = Serializer(["key"])
    payload = bytearray(s.dumps({"a": 1}))
    payload[-3] ^= 0xFF
    with pytest.raises(PayloadError, match="bad signature"):
        s.loads(bytes(payload))


def test_an_unsigned_payload_is_refused_when_a_key_is_set() -> None:
    with pytest.raises(PayloadError, match="bad signature: payload is not signed"):
        Serializer(["key"]).loads(Serializer().dumps(1))


def test_a_wrong_key_is_refused_and_old_keys_verify() -> None:
    old = Serializer(["old"]).dumps("x")
    with pytest.raises(PayloadError, match="bad signature"):
        Serializer(["other"]).loads(old)
    assert Serializer(["new", "old"]).loads(old) == "x"


def test_corrupt_bytes_raise_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="cannot deserialize payload"):
        Serializer().loads(b"\x80\x04not a pickle")


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOYOJOBS_SECRET", "env-key")
    assert Serializer.from_options(None).signs
    assert Serializer(["env-key"]).loads(Serializer.from_options(None).dumps(5)) == 5
    monkeypatch.delenv("KOYOJOBS_SECRET")
    assert not Serializer.from_options(None).signs


def test_what_main_defines_travels_by_value_to_another_process() -> None:
    import subprocess
    import sys

    def shout(word: str) -> str:
        return word.upper() + "!"

    main = sys.modules["__main__"]
    shout.__module__, shout.__qualname__ = "__main__", "shout_for_test"
    main.shout_for_test = shout  # type: ignore[attr-defined]
    try:
        payload = Serializer().dumps(shout)
    finally:
        del main.shout_for_test  # type: ignore[attr-defined]
    loader = (
        "import sys; from koyojobs.serializer import Serializer; "
        "print(Serializer().loads(sys.stdin.buffer.read())('hey'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", loader], input=payload, capture_output=True, check=True
    )
    assert result.stdout.decode().strip() == "HEY!"


def test_plain_values_use_the_fast_standard_pickler() -> None:
    import pickle

    value = {"id": 7, "tags": ["a", "b"]}
    assert Serializer().dumps(value) == pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
