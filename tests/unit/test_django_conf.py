"""settings.KOYOJOBS and the DSN from DATABASES (no Django settings configured)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from koyojobs.contrib.django.conf import dsn_from_database, read_settings

PG = "django.db.backends.postgresql"


def test_defaults_and_a_full_setting() -> None:
    empty = read_settings(None)
    assert (empty.database, empty.modules, empty.queues, empty.secret) == ("default", (), {}, None)
    full = read_settings(
        {
            "database": "jobs",
            "modules": ["a.jobs", "b.jobs"],
            "queues": {"default": 4, "emails": 1},
            "secret": ["new", "old"],
            "retention": timedelta(days=7),
            "processes": 2,
        }
    )
    assert (empty.processes, full.processes) == (None, 2)
    assert full.modules == ("a.jobs", "b.jobs")
    assert full.queues == {"default": 4, "emails": 1}
    assert full.secret == ("new", "old")
    assert full.retention == 7 * 86400
    assert read_settings({"queues": ["a", "b"]}).queues == {"a": 8, "b": 8}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ([], "settings.KOYOJOBS: must be a dict, got list"),
        ({"queue": {}}, "settings.KOYOJOBS: unknown key 'queue' (known: database, modules,"),
        ({"modules": "a.jobs"}, "settings.KOYOJOBS['modules']: must be a list of module names"),
        ({"queues": {"a": 0}}, "settings.KOYOJOBS['queues']: a: concurrency must be an int >= 1"),
        ({"queues": "a"}, "settings.KOYOJOBS['queues']: must be a dict of queue: concurrency"),
        ({"secret": ""}, "settings.KOYOJOBS['secret']: secret='' is empty"),
        ({"secret": []}, "settings.KOYOJOBS['secret']: secret is an empty list"),
        ({"retention": -1}, "settings.KOYOJOBS['retention']: must be seconds >= 0"),
        ({"database": ""}, "settings.KOYOJOBS['database']: must be an alias of DATABASES"),
        ({"processes": 0}, "settings.KOYOJOBS['processes']: must be an int >= 1, got 0"),
    ],
)
def test_a_malformed_setting_is_one_line_naming_the_key(setting: Any, message: str) -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        read_settings(setting)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_the_dsn_of_a_database() -> None:
    databases = {
        "default": {
            "ENGINE": PG,
            "NAME": "shop db",
            "USER": "web",
            "PASSWORD": "p@ss:/word",
            "HOST": "db.internal",
            "PORT": "6432",
            "OPTIONS": {"sslmode": "require", "pool": True},
        },
        "socket": {"ENGINE": PG, "NAME": "shop", "HOST": "/var/run/postgresql", "PORT": 5433},
        "bare": {"ENGINE": "django.contrib.gis.db.backends.postgis", "NAME": "shop"},
    }
    assert dsn_from_database("default", databases) == (
        "postgresql://web:p%40ss%3A%2Fword@db.internal:6432/shop%20db?sslmode=require"
    )
    assert dsn_from_database("socket", databases) == (
        "postgresql:///shop?host=%2Fvar%2Frun%2Fpostgresql&port=5433"
    )
    assert dsn_from_database("bare", databases) == "postgresql:///shop"


def test_the_dsn_parses_back_as_psycopg_reads_it() -> None:
    from psycopg.conninfo import conninfo_to_dict

    dsn = dsn_from_database(
        "default",
        {"default": {"ENGINE": PG, "NAME": "s", "USER": "u", "PASSWORD": "p@:/", "HOST": "h"}},
    )
    assert conninfo_to_dict(dsn) == {"user": "u", "password": "p@:/", "host": "h", "dbname": "s"}


def test_a_database_koyojobs_cannot_use_is_named() -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        dsn_from_database("default", {"default": {"ENGINE": "django.db.backends.sqlite3"}})
    assert str(caught.value) == (
        "DATABASES['default'] uses django.db.backends.sqlite3: koyojobs needs PostgreSQL "
        "(django.db.backends.postgresql)"
    )
    with pytest.raises(ImproperlyConfigured, match=r"'jobs' is not an alias of DATABASES"):
        dsn_from_database("jobs", {"default": {"ENGINE": PG}})
