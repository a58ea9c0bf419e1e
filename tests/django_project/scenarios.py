"""Scenarios the Django tests run in a process of their own: `python scenarios.py NAME`.

Each prints one JSON line for the test to check."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproject.settings")

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from docs.examples.django_shop.jobs import send_receipt  # noqa: E402
from docs.examples.django_shop.models import Order  # noqa: E402
from koyojobs import execute_jobs_synchronously  # noqa: E402
from koyojobs.sync import enqueue_many  # noqa: E402

if TYPE_CHECKING:
    # What the test client answers, as django-stubs types it (content, json()...).
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse


def checkout() -> dict[str, object]:
    client = Client(raise_request_exception=False)
    committed = client.post("/checkout", {"email": "ada@example.com", "total": "12.50"})
    rolled_back = client.post("/checkout", {"email": "bob@example.com", "total": "0"})
    return {
        "committed": committed.status_code,
        "body": committed.json(),
        "rolled_back": rolled_back.status_code,
        "orders": list(Order.objects.values_list("email", flat=True)),
    }


def synchronous() -> dict[str, object]:
    with execute_jobs_synchronously():
        response = Client().post("/checkout", {"email": "ada@example.com", "total": "3"})
    return {
        "status": response.status_code,
        "body": response.json(),
        "sent": list(Order.objects.values_list("receipt_sent", flat=True)),
    }


def many_in_atomic() -> dict[str, object]:
    order = Order.objects.create(email="c@example.com", total=1)
    with transaction.atomic():
        ids = enqueue_many([send_receipt(order.id), send_receipt(order.id)], connection=connection)
    try:
        with transaction.atomic():
            enqueue_many([send_receipt(order.id)], connection=connection)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    return {"ids": ids}


def admin() -> dict[str, object]:
    User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(User.objects.get(username="root"))
    job_queries: list[str] = []

    def get(url: str) -> TestResponse:
        # Per request: Django empties the query log as each request starts.
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        job_queries.extend(q["sql"] for q in queries if "koyojobs_jobs" in q["sql"])
        return response

    pages = {
        "list": get("/admin/koyojobs/job/"),
        "failed": get("/admin/koyojobs/job/?status__exact=failed"),
        "emails": get("/admin/koyojobs/job/?queue=emails"),
        "detail": get("/admin/koyojobs/job/1/change/"),
        "add": get("/admin/koyojobs/job/add/"),
        "delete": get("/admin/koyojobs/job/1/delete/"),
    }
    found: dict[str, object] = {f"{k}_status": r.status_code for k, r in pages.items()}
    found.update({k: pages[k].content.decode() for k in ("list", "failed", "emails", "detail")})
    post = client.post("/admin/koyojobs/job/1/change/", {"status": "done"})
    found["post_status"] = post.status_code
    found["job_queries"] = job_queries
    return found


if __name__ == "__main__":
    print(json.dumps(globals()[sys.argv[1]](), default=str))
