"""The app that ``INSTALLED_APPS`` names: ``"koyojobs.contrib.django"``."""

from __future__ import annotations

import contextlib

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ... import sync
from .conf import KoyojobsSettings, dsn_from_database, read_settings

__all__ = ["KoyojobsConfig", "koyojobs_settings"]


def koyojobs_settings() -> KoyojobsSettings:
    """``settings.KOYOJOBS``, checked (see :mod:`koyojobs.contrib.django.conf`).

    Example:
        >>> koyojobs_settings().modules  # doctest: +SKIP
        ('shop.jobs',)
    """
    return read_settings(getattr(settings, "KOYOJOBS", None))


def database_dsn(config: KoyojobsSettings) -> str:
    """The URL of the database jobs live in: ``DATABASES[KOYOJOBS["database"]]``."""
    return dsn_from_database(config.database, settings.DATABASES)


class KoyojobsConfig(AppConfig):
    """Checks ``settings.KOYOJOBS`` at start and points :mod:`koyojobs.sync` at Django's database.

    Example:
        >>> INSTALLED_APPS = [..., "koyojobs.contrib.django"]  # doctest: +SKIP
    """

    name = "koyojobs.contrib.django"
    label = "koyojobs"
    verbose_name = "koyojobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        config = koyojobs_settings()
        try:
            dsn: str | None = database_dsn(config)
        except ImproperlyConfigured:
            if "database" in (getattr(settings, "KOYOJOBS", None) or {}):
                raise
            # Not PostgreSQL (a test settings file on SQLite, say): enqueue without
            # connection= falls back to KOYOJOBS_DSN, the command says what is wrong.
            dsn = None
        sync.configure(dsn=dsn, secret=config.secret)
        if getattr(settings, "TASKS", None):
            # Django 6 registers the Tasks backends' system checks (ours among them)
            # only once django.tasks is imported: make sure it is.
            with contextlib.suppress(ImportError):  # TASKS without the framework: not ours
                from . import _tasks_api  # noqa: F401
