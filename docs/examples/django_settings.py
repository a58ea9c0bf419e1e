"""What koyojobs adds to a Django project's settings (the rest is Django's usual)."""

import os

import django

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "koyojobs.contrib.django",  # the command, the admin, and koyojobs.sync on DATABASES
    "docs.examples.django_shop",
]
if django.VERSION < (6,):
    INSTALLED_APPS.append("django_tasks")  # Django 5.2: the Tasks framework's backport

# Jobs live in this database, next to the app's tables: a job enqueued in a
# transaction.atomic() block commits or rolls back with the rest.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "shop"),
        "HOST": os.environ.get("PGHOST", "localhost"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "shop"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
    }
}

KOYOJOBS = {
    "modules": ["docs.examples.django_shop.jobs"],  # what `manage.py koyojobs worker` imports
    "queues": {"default": 4, "emails": 2},  # queue: concurrency
    "secret": os.environ.get("KOYOJOBS_SECRET") or None,  # signs payloads; None: unsigned
    "retention": 7 * 24 * 3600,  # the workers keep finished jobs a week
}

# Django's Tasks framework (django.tasks; the django-tasks backport on 5.2) on koyojobs.
TASKS = {
    "default": {
        "BACKEND": "koyojobs.contrib.django.tasks.KoyojobsBackend",
        "QUEUES": ["default", "emails"],  # the koyojobs queues tasks may name
        "OPTIONS": {"max_attempts": 3, "timeout": 60},  # each task's, unless it says otherwise
    }
}
