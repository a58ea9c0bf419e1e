from __future__ import annotations

from django.db import models


class Run(models.Model):
    """One thing that happened in the worker: a task ran, a signal was received."""

    label: models.CharField[str, str] = models.CharField(max_length=200)
