"""``System``: components started in dependency order and stopped in reverse."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import WiringError
from .lifecycle import Lifecycle

__all__ = ["Component", "System"]

log = logging.getLogger("koyojobs.system")


class Component(Protocol):
    """Anything with ``async start()`` and ``async stop()``."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Any]
    depends_on: tuple[str, ...]


class System(Lifecycle):
    """A set of named components wired by their dependencies.

    A factory receives the components it depends on positionally, in
    ``depends_on`` order. Starting builds and starts each component after its
    dependencies; stopping goes in reverse. If one fails to start, those
    already started are stopped and the error propagates.

    Example:
        >>> from koyojobs import Broker, Database, System, Worker
        >>> system = System()
        >>> system.add("db", lambda: Database("postgresql://localhost/app"))
        >>> system.add("broker", Broker, depends_on=["db"])
        >>> system.add("worker", lambda b: Worker(b), depends_on=["broker"])
        >>> system.order()
        ['db', 'broker', 'worker']
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._components: dict[str, Any] = {}
        self._started: list[str] = []

    def add(self, name: str, factory: Callable[..., Any], depends_on: Iterable[str] = ()) -> None:
        """Declare component ``name``, built by ``factory(*dependencies)``."""
        if not isinstance(name, str) or not name:
            raise WiringError(f"component name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise WiringError(f"component {name!r} is already added")
        if not callable(factory):
            raise WiringError(f"component {name!r}: factory {factory!r} is not callable")
        deps = tuple(depends_on)
        if isinstance(depends_on, str):
            raise WiringError(f"component {name!r}: depends_on must be a list, not {depends_on!r}")
        if name in deps:
            raise WiringError(f"component {name!r} depends on itself")
        self._entries[name] = _Entry(factory, deps)
        cycle = self._find_cycle()
        if cycle:
            del self._entries[name]
            raise WiringError(f"dependency cycle: {' -> '.join(cycle)}")

    def order(self) -> list[str]:
        """The start order; raises for unknown dependencies and cycles."""
        for name, entry in self._entries.items():
            unknown = [d for d in entry.depends_on if d not in self._entries]
            if unknown:
                raise WiringError(
                    f"component {name!r} depends on unknown {', '.join(map(repr, unknown))}"
                )
        cycle = self._find_cycle()
        if cycle:
            raise WiringError(f"dependency cycle: {' -> '.join(cycle)}")
        ordered: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            for dep in self._entries[name].depends_on:
                visit(dep)
            ordered.append(name)

        for name in self._entries:
            visit(name)
        return ordered

    def _find_cycle(self) -> list[str] | None:
        state: dict[str, int] = {}  # 1: on the path, 2: done
        path: list[str] = []

        def visit(name: str) -> list[str] | None:
            if state.get(name) == 1:
                return [*path[path.index(name) :], name]
            if state.get(name) == 2 or name not in self._entries:
                return None
            state[name] = 1
            path.append(name)
            for dep in self._entries[name].depends_on:
                found = visit(dep)
                if found:
                    return found
            path.pop()
            state[name] = 2
            return None

        for name in self._entries:
            found = visit(name)
            if found:
                return found
        return None

    async def start(self) -> None:
        """Build and start every component in dependency order."""
        order = self.order()
        try:
            for name in order:
                entry = self._entries[name]
                component = entry.factory(*(self._components[d] for d in entry.depends_on))
                self._components[name] = component
                await component.start()
                self._started.append(name)
        except BaseException:
            log.error(
                "component failed to start; stopping the started ones", extra={"component": name}
            )
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the started components in reverse order; errors are logged, not raised."""
        while self._started:
            name = self._started.pop()
            try:
                await self._components[name].stop()
            except Exception:
                log.exception("component failed to stop", extra={"component": name})
        self._components.clear()

    def __getitem__(self, name: str) -> Any:
        try:
            return self._components[name]
        except KeyError:
            raise KeyError(f"component {name!r} is not started") from None
