"""The console in-process: bulk actions confirmed with their count, workers, charts, metrics."""

from __future__ import annotations

import os
import re

from koyojobs import Broker, Status
from koyojobs.dashboard import Dashboard
from koyojobs.dashboard.csrf import FIELD
from koyojobs.rollup import roll_up
from tests.dashboard.test_pages import client, insert_finished, token_of
from tests.integration.test_heartbeat import until


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


async def test_the_workers_page_lists_live_worker_processes(broker: Broker) -> None:
    from koyojobs import Worker

    async with client(Dashboard(broker)) as c:
        assert 'id="no-workers"' in (await c.get("/workers")).text
        async with Worker(broker, queue="emails", pool_size=2, poll_interval=0.2):
            await until(broker.workers)
            page = (await c.get("/workers")).text
    assert f'<td class="num">{os.getpid()}</td>' in page
    assert 'href="/jobs?queue=emails">emails</a>' in page


async def test_charts_draw_finished_failed_and_waited_as_inline_svg(broker: Broker) -> None:
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, status, args, scheduled_at, started_at,"
        " finished_at) SELECT 'c', 'charted', CASE WHEN g % 5 = 0 THEN 'failed' ELSE 'done' END,"
        " '\\x00', now() - interval '5 minutes' - interval '2 seconds',"
        " now() - interval '5 minutes', now() - interval '5 minutes'"
        " FROM generate_series(1, 25) AS g"
    )
    await roll_up(broker)  # some minutes rolled up, the last ones read live
    async with client(Dashboard(broker)) as c:
        for span in ("hour", "day"):
            page = (await c.get(f"/charts?span={span}")).text
            assert '<section class="queue-chart" data-queue="charted">' in page
            assert "20 done, 5 failed" in page
            assert page.count('<svg class="chart') == 2
            assert 'class="failed"' in page and 'class="wait"' in page
            assert "waited 2s on average" in page
        assert (await c.get("/charts?span=week")).status_code == 400


async def test_metrics_scraped_and_parsed(broker: Broker) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await insert_finished(broker, 3, "failed", queue="emails")
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, args, scheduled_at)"
        " VALUES ('m', 'emails', '\\x00', now() - interval '90 seconds')"
    )
    async with client(Dashboard(broker)) as c:
        response = await c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("koyojobs_jobs", (("queue", "emails"), ("status", "failed")))] == 3
    assert samples[("koyojobs_jobs", (("queue", "emails"), ("status", "ready")))] == 1
    assert samples[("koyojobs_jobs", (("queue", "emails"), ("status", "done")))] == 0
    oldest = samples[("koyojobs_oldest_ready_seconds", (("queue", "emails"),))]
    assert 90 <= oldest < 120
