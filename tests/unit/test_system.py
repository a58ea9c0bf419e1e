"""System: dependency order, errors that name components, failed starts."""

from __future__ import annotations

import pytest

from koyojobs import System, WiringError

events: list[str] = []


class Thing:
    def __init__(self, name: str, *deps: Thing, fail: bool = False) -> None:
        self.name, self.deps, self.fail = name, deps, fail

    async def start(self) -> None:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        events.append(f"start {self.name}")

    async def stop(self) -> None:
        events.append(f"stop {self.name}")


@pytest.fixture(autouse=True)
def _clear() -> None:
    events.clear()


async def test_starts_in_dependency_order_and_stops_in_reverse() -> None:
    system = System()
    system.add("worker", lambda b, d: Thing("worker", b, d), depends_on=["broker", "db"])
    system.add("broker", lambda d: Thing("broker", d), depends_on=["db"])
    system.add("db", lambda: Thing("db"))
    async with system:
        worker = system["worker"]
        assert [d.name for d in worker.deps] == ["broker", "db"]  # positional, in order
    assert events == [
        "start db",
        "start broker",
        "start worker",
        "stop worker",
        "stop broker",
        "stop db",
    ]


def test_a_cycle_is_refused_at_add_naming_the_components() -> None:
    system = System()
    system.add("a", lambda b: Thing("a"), depends_on=["b"])
    system.add("b", lambda c: Thing("b"), depends_on=["c"])
    with pytest.raises(WiringError, match=r"dependency cycle: a -> b -> c -> a"):
        system.add("c", lambda a: Thing("c"), depends_on=["a"])
    with pytest.raises(WiringError, match="depends on itself"):
        system.add("d", lambda d: Thing("d"), depends_on=["d"])


async def test_an_unknown_dependency_is_refused_at_start() -> None:
    system = System()
    system.add("broker", lambda d: Thing("broker"), depends_on=["database"])
    with pytest.raises(WiringError, match=r"'broker' depends on unknown 'database'"):
        await system.start()


def test_duplicates_and_bad_factories() -> None:
    system = System()
    system.add("a", lambda: Thing("a"))
    with pytest.raises(WiringError, match="'a' is already added"):
        system.add("a", lambda: Thing("a"))
    with pytest.raises(WiringError, match="not callable"):
        system.add("b", "nope")  # type: ignore[arg-type]


async def test_a_failed_start_stops_what_had_started() -> None:
    system = System()
    system.add("db", lambda: Thing("db"))
    system.add("broker", lambda d: Thing("broker", d), depends_on=["db"])
    system.add("worker", lambda b: Thing("worker", b, fail=True), depends_on=["broker"])
    with pytest.raises(RuntimeError, match="worker cannot start"):
        await system.start()
    assert events == ["start db", "start broker", "stop broker", "stop db"]
    with pytest.raises(KeyError, match="not started"):
        system["db"]
