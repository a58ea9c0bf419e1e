"""The jobs page's filters, read once from a query string or an action's form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from ..models import Status

__all__ = ["MAX_ID", "BadFilterError", "JobFilter"]

MAX_ID = 2**63 - 1
"""Job ids are PostgreSQL bigints: a bigger one names no job (and the driver would refuse it)."""
_MAX_TEXT = 200


class BadFilterError(ValueError):
    """A filter no job can match as written: a 400, never a database error."""


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Status, queue (exact), name and label (by prefix) and the page's cursor.

    Example:
        >>> f = JobFilter.read({"status": "failed", "queue": "emails", "before": "90"})
        >>> f.status, f.queue, f.before, f.query(before=12)
        (<Status.FAILED: 'failed'>, 'emails', 90, 'status=failed&queue=emails&before=12')
        >>> JobFilter.read({"status": "nope"})
        Traceback (most recent call last):
        ...
        koyojobs.dashboard.filters.BadFilterError: bad filter: status 'nope' is not a status
    """

    status: Status | None = None
    queue: str | None = None
    name: str | None = None
    label: str | None = None
    before: int | None = None

    @classmethod
    def read(cls, params: Mapping[str, str]) -> JobFilter:
        """The filter in ``params`` (query or form fields); :class:`BadFilterError` if bad."""
        status_text = params.get("status") or None
        try:
            status = None if status_text is None else Status(status_text)
        except ValueError:
            raise BadFilterError(f"bad filter: status {status_text!r} is not a status") from None
        before_text = params.get("before") or None
        before = None
        if before_text is not None:
            if not before_text.isdigit() or int(before_text) > MAX_ID:
                raise BadFilterError(f"bad filter: before={before_text!r} is not a job id")
            before = int(before_text)
        texts = {}
        for key in ("queue", "name", "label"):
            value = params.get(key) or None
            if value is not None and len(value) > _MAX_TEXT:
                raise BadFilterError(f"bad filter: {key} is longer than {_MAX_TEXT} characters")
            texts[key] = value
        return cls(status, texts["queue"], texts["name"], texts["label"], before)

    @property
    def narrows(self) -> bool:
        """Whether any filter but the cursor is set."""
        return any(v is not None for v in (self.status, self.queue, self.name, self.label))

    def fields(self) -> dict[str, str]:
        """The filters set, as form fields or query parameters (no cursor)."""
        pairs = (
            ("status", None if self.status is None else self.status.value),
            ("queue", self.queue),
            ("name", self.name),
            ("label", self.label),
        )
        return {k: v for k, v in pairs if v is not None}

    def query(self, before: int | None = None) -> str:
        """The query string of these filters, with ``before`` as the cursor if given."""
        fields = self.fields()
        if before is not None:
            fields["before"] = str(before)
        return urlencode(fields)
