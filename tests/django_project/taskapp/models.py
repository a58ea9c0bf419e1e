from django.db import models


class Run(models.Model):
    """One thing that happened in the worker: a task ran, a signal was received."""

    label = models.CharField(max_length=200)
