"""The jobs table as Django sees it: read-only, never created nor altered by Django."""

from __future__ import annotations

from typing import Any

from django.db import models

__all__ = ["Job"]

_STATUSES = [(s, s) for s in ("ready", "running", "done", "failed", "cancelled")]


class Job(models.Model):
    """A row of ``koyojobs_jobs`` (koyojobs' migrations own the table).

    The payloads (``args`` and ``result``) are raw bytes (pickles, signed
    when a secret is set): nothing here unpickles them, and the admin never
    even fetches them. (Fields are typed ``Any``: typing them needs
    django-stubs' mypy plugin and a settings module.)

    Example:
        >>> Job.objects.filter(status="failed").count()  # doctest: +SKIP
        2
    """

    id: Any = models.BigIntegerField(primary_key=True)
    name: Any = models.TextField()
    queue: Any = models.TextField()
    priority: Any = models.IntegerField()
    status: Any = models.TextField(choices=_STATUSES)
    args: Any = models.BinaryField(editable=False)
    result: Any = models.BinaryField(null=True, editable=False)
    attempts: Any = models.IntegerField()
    max_attempts: Any = models.IntegerField()
    scheduled_at: Any = models.DateTimeField()
    created_at: Any = models.DateTimeField()
    started_at: Any = models.DateTimeField(null=True)
    finished_at: Any = models.DateTimeField(null=True)
    lease_expires_at: Any = models.DateTimeField(null=True)
    worker_id: Any = models.TextField(null=True)
    last_error: Any = models.TextField(null=True)
    last_traceback: Any = models.TextField(null=True)

    objects: Any = models.Manager()

    class Meta:
        managed = False
        db_table = "koyojobs_jobs"
        ordering = ("-id",)
        verbose_name = "job"

    def __str__(self) -> str:
        return f"{self.name} #{self.id} ({self.status})"
