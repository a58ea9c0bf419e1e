"""The docs' settings (docs/examples/django_settings.py) plus what any project has.

The database comes from PG* variables, which the tests point at a database of
the throwaway cluster."""

import os
from typing import cast

from docs.examples.django_settings import *  # noqa: F403
from docs.examples.django_settings import INSTALLED_APPS, KOYOJOBS, TASKS

# A key given here rather than in KOYOJOBS_SECRET (which the tests unset): it
# reaches koyojobs.sync and the worker only if the app passes it on.
KOYOJOBS = {**KOYOJOBS, "secret": os.environ.get("DJANGO_TEST_SECRET") or None}

# The Django Tasks tests' app, and a queue of one worker slot (their order is the claim's).
INSTALLED_APPS = [*INSTALLED_APPS, "taskapp"]
KOYOJOBS["queues"] = {**cast("dict[str, int]", KOYOJOBS["queues"]), "serial": 1}
TASKS = {"default": {**TASKS["default"], "QUEUES": [*TASKS["default"]["QUEUES"], "serial"]}}

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
ROOT_URLCONF = "docs.examples.django_shop.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
LOGGING = {"version": 1, "disable_existing_loggers": False}
