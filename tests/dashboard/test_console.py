"""The console in-process: bulk actions confirmed with their count, workers, charts, metrics."""

from __future__ import annotations

import re

from koyojobs import Broker, Status
from koyojobs.dashboard import Dashboard
from koyojobs.dashboard.csrf import FIELD
from tests.dashboard.test_pages import client, insert_finished, token_of


def ids_on(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'/jobs/(\d+)">', html)]


async def test_bulk_retry_of_everything_a_filter_matches_confirms_the_count(
    broker: Broker,
) -> None:
    await insert_finished(broker, 120, "failed", queue="emails")
    await insert_finished(broker, 30, "failed", queue="other")
    async with client(Dashboard(broker, can_act=lambda request: True)) as c:
        page = (await c.get("/jobs?status=failed&queue=emails")).text
        assert 'id="bulk-retry-matching"' in page
        form = {FIELD: token_of(page), "status": "failed", "queue": "emails"}
        confirm = await c.post("/jobs/bulk", data={**form, "bulk": "retry-matching"})
        assert confirm.status_code == 200
        assert '<span id="bulk-count">120</span>' in confirm.text
        assert await broker.job_status(1) is Status.FAILED  # nothing done yet
        done = await c.post(
            "/jobs/bulk",
            data={
                **form,
                FIELD: token_of(confirm.text),
                "bulk": "retry-matching",
                "confirmed": "yes",
            },
        )
        assert done.status_code == 303
        assert "notice=bulk-retried&count=120" in done.headers["location"]
        shown = (await c.get(done.headers["location"])).text
        assert "Retried 120 jobs" in shown
    counts = await broker.pool.fetch(
        "SELECT queue, status, count(*) FROM koyojobs_jobs GROUP BY 1, 2 ORDER BY 1"
    )
    assert [tuple(r) for r in counts] == [("emails", "ready", 120), ("other", "failed", 30)]


async def test_bulk_delete_of_selected_rows(broker: Broker) -> None:
    await insert_finished(broker, 5, "cancelled")
    async with client(Dashboard(broker, can_act=lambda request: True)) as c:
        page = (await c.get("/jobs")).text
        token = token_of(page)
        chosen = ids_on(page)[:2]
        body = [(FIELD, token), ("bulk", "delete-selected")] + [("ids", str(i)) for i in chosen]
        confirm = await c.post("/jobs/bulk", data=dict(body[:2]) | {"ids": chosen})
        assert '<span id="bulk-count">2</span>' in confirm.text
        done = await c.post(
            "/jobs/bulk",
            data={
                FIELD: token_of(confirm.text),
                "bulk": "delete-selected",
                "ids": ",".join(map(str, chosen)),
                "confirmed": "yes",
            },
        )
        assert "notice=bulk-deleted&count=2" in done.headers["location"]
    left = await broker.pool.fetchval("SELECT count(*) FROM koyojobs_jobs")
    assert left == 3


async def test_bulk_actions_refuse_what_cannot_be_meant(broker: Broker) -> None:
    await insert_finished(broker, 3, "failed")
    async with client(Dashboard(broker, can_act=lambda request: True)) as c:
        token = token_of((await c.get("/jobs")).text)
        for data in (
            {"bulk": "retry-matching"},  # no filter: not "every job"
            {"bulk": "explode-matching", "status": "failed"},
            {"bulk": "cancel-matching", "status": "failed"},
            {"bulk": "delete-selected", "ids": "1,x"},
        ):
            response = await c.post("/jobs/bulk", data={FIELD: token, **data})
            assert response.status_code == 400, data
    async with client(Dashboard(broker)) as c:  # read-only: no buttons, no action
        page = (await c.get("/jobs?status=failed")).text
        assert "bulk-retry-matching" not in page and 'name="ids"' not in page
        refused = await c.post("/jobs/bulk", data={"bulk": "retry-matching", "status": "failed"})
        assert refused.status_code == 403
    assert await broker.job_status(1) is Status.FAILED
