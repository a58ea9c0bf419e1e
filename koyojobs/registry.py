"""The jobs this process knows: name -> definition, filled by ``define_job``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import JobDefinitionError

if TYPE_CHECKING:
    from .jobs import JobDefinition

__all__ = ["definitions", "forget", "lookup", "register"]

_registry: dict[str, JobDefinition[Any, Any]] = {}


def lookup(name: str) -> JobDefinition[Any, Any] | None:
    """The job defined under ``name`` in this process, if any."""
    return _registry.get(name)


def definitions() -> list[JobDefinition[Any, Any]]:
    """Every job defined in this process."""
    return list(_registry.values())


def forget(name: str) -> None:
    """Drop the job defined under ``name`` (as a deploy that removes it would)."""
    _registry.pop(name, None)


def register(definition: JobDefinition[Any, Any]) -> None:
    """Add a definition; a different function under a taken name is an error."""
    existing = _registry.get(definition.name)
    if existing is not None and not _same_function(existing.fn, definition.fn):
        raise JobDefinitionError(
            f"job name {definition.name!r} is already defined by "
            f"{existing.fn.__module__}.{existing.fn.__qualname__}; pass another name="
        )
    _registry[definition.name] = definition


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    # A module imported twice (a reload, a test re-import) redefines the same
    # function as a new object: that is not a conflict.
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)
