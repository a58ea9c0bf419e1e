"""The dashboard's workflow page: a workflow's steps, their states, what each waits for.

Its statements are in ``sql/queries/dashboard_workflows.sql``; it reads no
payload (nothing is unpickled), and at most :data:`STEPS_SHOWN` steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..models import Status
from ..sql import QUERIES
from ..workflows import overall_status

if TYPE_CHECKING:
    from ..broker import Broker

__all__ = ["STEPS_SHOWN", "StepRow", "WorkflowView", "workflow_view"]

STEPS_SHOWN = 500
"""Steps listed on the page; the counts above the list cover them all."""


@dataclass(frozen=True, slots=True)
class StepRow:
    """One step on the workflow page."""

    id: int
    step: str
    name: str
    queue: str
    status: str
    attempts: int
    max_attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    progress: float | None
    progress_message: str | None
    after: list[str]
    waiting_for: list[str]
    always: bool


@dataclass(frozen=True, slots=True)
class WorkflowView:
    """A workflow as its page shows it.

    Example:
        >>> view = WorkflowView(1, "nightly", None, {"done": 2, "pending": 1}, [])
        >>> view.status, view.total, view.unfinished
        ('running', 3, True)
    """

    id: int
    name: str | None
    created_at: datetime | None
    counts: dict[str, int]
    steps: list[StepRow]

    @property
    def status(self) -> str:
        return overall_status(Status(s) for s in self.counts).value

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unfinished(self) -> bool:
        return any(not Status(s).finished for s in self.counts)


async def workflow_view(broker: Broker, workflow_id: int) -> WorkflowView | None:
    """The page's data for ``workflow_id``, or ``None`` for an unknown workflow."""
    async with broker.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        found = await conn.fetchrow(QUERIES["dashboard_workflow"], workflow_id)
        if found is None:
            return None
        rows = await conn.fetch(QUERIES["dashboard_workflow_steps"], workflow_id, STEPS_SHOWN)
    counts: Any = found["counts"]
    if isinstance(counts, str):  # jsonb arrives as text unless a codec is set
        counts = json.loads(counts)
    return WorkflowView(
        id=found["id"],
        name=found["name"],
        created_at=found["created_at"],
        counts={str(k): int(v) for k, v in counts.items()},
        steps=[StepRow(**dict(row)) for row in rows],
    )
