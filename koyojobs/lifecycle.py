"""What every component shares: ``start()``/``stop()``, used as an async context manager."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Lifecycle", "cancel_and_wait", "raise_if_stopping"]


_CANCEL_AGAIN_AFTER = 0.5


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a component's background task and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    # On Python 3.11 a cancel that lands as an ``asyncio.timeout()`` inside the
    # task expires can come out as ``TimeoutError``, which a loop's ``except
    # Exception`` takes for a failed round: the task goes on, cancelling but
    # never cancelled, and a stop waited for it for good. Ask again until it ends.
    while not (await asyncio.wait([task], timeout=_CANCEL_AGAIN_AFTER))[0]:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def raise_if_stopping(exc: BaseException) -> None:
    """Raise a cancel if the current task is being stopped, whatever ``exc`` it caught.

    A background loop's ``except Exception`` calls this first: on Python 3.11
    the cancel of :func:`cancel_and_wait` can land as an inner
    ``asyncio.timeout()`` expires and come out as ``TimeoutError``, which the
    loop would take for a failed round. :func:`cancel_and_wait` asks again
    until the task ends; this ends it at the first ask.

    Example:
        >>> raise_if_stopping(TimeoutError())  # outside a task: nothing to stop
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop
        return
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


class Lifecycle(ABC):
    """A component with ``async start()`` and ``async stop()``; ``async with`` runs both.

    Example:
        >>> class Clock(Lifecycle):
        ...     async def start(self) -> None: print("tick")
        ...     async def stop(self) -> None: print("tock")
        >>> async with Clock():  # doctest: +SKIP
        ...     pass
        tick
        tock
    """

    @abstractmethod
    async def start(self) -> None:
        """Acquire what the component needs."""

    @abstractmethod
    async def stop(self) -> None:
        """Release it."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
