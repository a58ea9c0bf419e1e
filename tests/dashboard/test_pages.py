"""The dashboard in-process (httpx over ASGI): pages, paging, payloads, the action guard."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request

from koyojobs import Broker, Status
from koyojobs.dashboard import Dashboard
from koyojobs.dashboard.csrf import COOKIE, FIELD
from tests.dashboard import jobs


@asynccontextmanager
async def client(app: Any, base: str = "http://app") -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base) as c:
        yield c


def token_of(html: str) -> str:
    match = re.search(rf'name="{FIELD}" value="([^"]+)"', html)
    assert match, "no anti-forgery token on the page"
    return match[1]


async def insert_finished(broker: Broker, count: int, status: str, queue: str = "bulk") -> None:
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, status, args, finished_at) "
        "SELECT 'bulk.job' || (g % 3), $2, $3, '\\x00', now() - g * interval '1 second' "
        "FROM generate_series(1, $1) AS g",
        count,
        queue,
        status,
    )


def test_importing_koyojobs_does_not_import_the_dashboard() -> None:
    code = (
        "import sys, koyojobs; "
        "assert 'koyojobs.dashboard' not in sys.modules; "
        "assert 'starlette' not in sys.modules and 'jinja2' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_mounted_in_fastapi_behind_an_auth_dependency_every_link_carries_the_prefix(
    broker: Broker,
) -> None:
    def is_staff(request: Request) -> bool:
        return request.headers.get("x-user") == "staff"

    def staff_only(request: Request) -> None:
        if not is_staff(request):
            raise HTTPException(401, "log in")

    # A dependency does not reach a mounted app: the same check goes to can_view.
    app = FastAPI(dependencies=[Depends(staff_only)])
    app.mount("/admin/jobs", Dashboard(broker, can_act=is_staff, can_view=is_staff))
    job_id = await broker.enqueue(jobs.echo(1))

    async with client(app) as c:
        assert (await c.get("/admin/jobs/")).status_code == 403
        assert (await c.get("/admin/jobs/api/queues")).status_code == 403
        c.headers["x-user"] = "staff"
        for path in ("/admin/jobs/", "/admin/jobs/jobs", f"/admin/jobs/jobs/{job_id}"):
            response = await c.get(path)
            assert response.status_code == 200, (path, response.text)
            links = re.findall(r'(?:href|action|src|data-poll)="([^"]+)"', response.text)
            assert links
            for link in links:
                assert link.startswith("/admin/jobs/"), (path, link)
        cookie = c.cookies.get(COOKIE)
        assert cookie is not None
        response = await c.post(
            f"/admin/jobs/jobs/{job_id}/cancel", data={FIELD: token_of(response.text)}
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"/admin/jobs/jobs/{job_id}?notice=cancelled"
    job = await broker.get_job(job_id)
    assert job is not None and job.status is Status.CANCELLED


async def test_can_act_may_be_async_and_decides_per_request(broker: Broker) -> None:
    async def can_act(request: Request) -> bool:
        return request.headers.get("x-role") == "operator"

    job_id = await broker.enqueue(jobs.echo(2))
    async with client(Dashboard(broker, can_act=can_act)) as c:
        page = await c.get(f"/jobs/{job_id}")
        assert "Cancel" not in page.text and FIELD not in page.text
        assert COOKIE not in c.cookies  # no token for who cannot act
        page = await c.get(f"/jobs/{job_id}", headers={"x-role": "operator"})
        token = token_of(page.text)
        refused = await c.post(f"/jobs/{job_id}/cancel", data={FIELD: token})
        assert refused.status_code == 403  # the token alone is not enough
        done = await c.post(
            f"/jobs/{job_id}/cancel", data={FIELD: token}, headers={"x-role": "operator"}
        )
        assert done.status_code == 303
        set_cookie = page.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie


async def test_every_page_sends_a_content_security_policy(broker: Broker) -> None:
    async with client(Dashboard(broker)) as c:
        for path in ("/", "/jobs", "/periodic", "/api/queues", "/jobs/1"):
            response = await c.get(path)
            assert "script-src 'self'" in response.headers["content-security-policy"], path
        assert (await c.get("/jobs/1")).status_code == 404
        assert (await c.get("/static/../app.py")).status_code == 404
        assert (await c.get("/jobs?status=bogus")).status_code == 400


async def test_the_queues_page_counts_and_bounds_finished_jobs(broker: Broker) -> None:
    await insert_finished(broker, 10_050, "done")
    await insert_finished(broker, 3, "failed")
    await broker.enqueue(jobs.echo(3))
    # A backlog: counted up to the bound; its oldest wait found by priority.
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, priority, args, scheduled_at)"
        " SELECT 'bulk.waiting', 'backlog', g % 3, '\\x00', now() - g * interval '1 second'"
        " FROM generate_series(1, 10010) AS g"
    )
    async with client(Dashboard(broker)) as c:
        live = (await c.get("/api/queues")).json()["queues"]
        page = (await c.get("/")).text
    assert live["bulk"]["done"] == "10000+"
    assert live["bulk"]["failed"] == "3"
    assert live["bulk"]["done_last_hour"] == "3599"  # 1 to 3599 seconds ago
    assert live["dashboard"]["ready"] == "1"
    assert live["dashboard"]["oldest_wait"] is not None
    assert live["backlog"]["ready"] == "10000+"
    assert 10010 <= live["backlog"]["oldest_wait"] < 10100
    assert "10000+" in page


async def test_the_jobs_page_pages_by_id_with_filters(broker: Broker) -> None:
    await insert_finished(broker, 120, "done")
    await insert_finished(broker, 7, "failed")
    async with client(Dashboard(broker)) as c:
        first = (await c.get("/jobs")).text
        ids = [int(i) for i in re.findall(r'/jobs/(\d+)">', first)]
        assert ids == list(range(127, 77, -1))
        older = re.search(r'href="(/jobs\?before=\d+)"', first)
        assert older
        second = (await c.get(older[1])).text
        assert [int(i) for i in re.findall(r'/jobs/(\d+)">', second)] == list(range(77, 27, -1))

        failed = (await c.get("/jobs?status=failed")).text
        assert [int(i) for i in re.findall(r'/jobs/(\d+)">', failed)] == list(range(127, 120, -1))
        assert "Older" not in failed

        named = (await c.get("/jobs?status=done&name=bulk.job1")).text
        named_ids = [int(i) for i in re.findall(r'/jobs/(\d+)">', named)]
        assert named_ids and all(i % 3 == 1 for i in named_ids)


async def test_filters_are_exact_beside_a_big_neighbour(broker: Broker) -> None:
    # The case: "Failed 40" for emails under 30,000 newer jobs of
    # another queue showed "No jobs among these", 100 clicks from them.
    await insert_finished(broker, 40, "failed", queue="emails")
    await insert_finished(broker, 15_000, "failed", queue="big")
    await insert_finished(broker, 15_000, "done", queue="big")
    async with client(Dashboard(broker)) as c:
        page = (await c.get("/jobs?status=failed&queue=emails")).text
        assert len(re.findall(r'/jobs/(\d+)">', page)) == 40
        assert "Looked through" not in page and "Older" not in page
        queue_only = (await c.get("/jobs?queue=emails")).text
        assert len(re.findall(r'/jobs/(\d+)">', queue_only)) == 40
        by_name = (await c.get("/jobs?queue=big&name=bulk.job2&status=done")).text
        ids = [int(i) for i in re.findall(r'/jobs/(\d+)">', by_name)]
        assert len(ids) == 50 and ids == sorted(ids, reverse=True)
        older = re.search(r'href="/jobs\?([^"]+)">Older', by_name)
        assert older
        second = (await c.get("/jobs?" + older[1].replace("&amp;", "&"))).text
        more = [int(i) for i in re.findall(r'/jobs/(\d+)">', second)]
        assert len(more) == 50 and max(more) < min(ids)
        nothing = (await c.get("/jobs?name=nothing.like.it")).text
        assert "No jobs match these filters" in nothing and "Older" not in nothing
        labelled = await broker.enqueue(jobs.echo(1))
        by_label = (await c.get("/jobs?label=Say")).text
        assert [int(i) for i in re.findall(r'/jobs/(\d+)">', by_label)] == [labelled]


async def test_without_the_console_indexes_a_filter_looks_through_a_stretch(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from koyojobs.dashboard import data

    monkeypatch.setattr(data, "SCAN_BUDGET", 40)
    for index in ("koyojobs_jobs_finished_filter_idx", "koyojobs_jobs_ready_filter_idx"):
        await broker.pool.execute(f"DROP INDEX {index}")
    await insert_finished(broker, 100, "done")
    async with client(Dashboard(broker)) as c:
        page = (await c.get("/jobs?name=nothing.like.it")).text
        assert 'id="inexact"' in page and "koyojobs migrate" in page
        older = re.search(r'href="/jobs\?(name=nothing.like.it&amp;before=(\d+))"', page)
        assert older and int(older[2]) == 61


async def test_payloads_are_hidden_unless_signed_or_asked_for(dsn: str) -> None:
    async with Broker(dsn) as unsigned:
        job_id = await unsigned.enqueue(jobs.echo({"card": "4242"}))
        async with client(Dashboard(unsigned)) as c:
            page = (await c.get(f"/jobs/{job_id}")).text
        assert "4242" not in page and 'id="payloads-hidden"' in page
        async with client(Dashboard(unsigned, show_payloads=True)) as c:
            page = (await c.get(f"/jobs/{job_id}")).text
        assert "({&#39;card&#39;: &#39;4242&#39;},)" in page

    async with Broker(dsn, secret="s3cret") as signed:
        job_id = await signed.enqueue(jobs.echo("signed value"))
        async with client(Dashboard(signed)) as c:
            page = (await c.get(f"/jobs/{job_id}")).text
        assert "(&#39;signed value&#39;,)" in page
        # An unsigned row read by a signing broker: refused, and said so.
        forged = await signed.pool.fetchval(
            "INSERT INTO koyojobs_jobs (name, queue, args) "
            "VALUES ('tests.dashboard.echo', 'x', '\\x80') RETURNING id"
        )
        async with client(Dashboard(signed)) as c:
            page = (await c.get(f"/jobs/{forged}")).text
        assert "cannot be shown" in page


async def test_the_periodic_page_shows_ticks_and_runs_a_job_now(broker: Broker) -> None:
    await broker.pool.execute(
        "INSERT INTO koyojobs_schedules (name, last_tick) VALUES ('tests.dashboard.hourly', now())"
    )
    async with client(Dashboard(broker, can_act=lambda request: True)) as c:
        page = await c.get("/periodic")
        assert "tests.dashboard.hourly" in page.text
        assert "every 3600s" in page.text
        response = await c.post(
            "/periodic/run", data={FIELD: token_of(page.text), "name": "tests.dashboard.hourly"}
        )
        assert response.status_code == 303
        job_id = int(response.headers["location"].split("/")[-1].split("?")[0])
        job = await broker.get_job(job_id)
        assert job is not None and job.name == "tests.dashboard.hourly"
        # The run the next tick looks at, for skip_if_running.
        last = await broker.pool.fetchval(
            "SELECT last_job_id FROM koyojobs_schedules WHERE name = 'tests.dashboard.hourly'"
        )
        assert last == job_id
        # Pressed again while that run is ready: skip_if_running holds, as for a tick.
        again = await c.post(
            "/periodic/run", data={FIELD: token_of(page.text), "name": "tests.dashboard.hourly"}
        )
        assert again.headers["location"].endswith("/periodic?notice=still-running")
        runs = await broker.pool.fetchval(
            "SELECT count(*) FROM koyojobs_jobs WHERE name = 'tests.dashboard.hourly'"
        )
        assert runs == 1
        unknown = await c.post(
            "/periodic/run", data={FIELD: token_of(page.text), "name": "tests.dashboard.echo"}
        )
        assert unknown.status_code == 404


async def test_without_the_indexes_of_0006_it_leaves_out_what_would_read_the_table(
    broker: Broker,
) -> None:
    await insert_finished(broker, 300, "done")
    await insert_finished(broker, 2, "failed")
    await broker.enqueue(jobs.echo(4))
    for index in ("koyojobs_jobs_finished_queue_idx", "koyojobs_jobs_failed_idx"):
        await broker.pool.execute(f"DROP INDEX {index}")
    async with client(Dashboard(broker)) as c:
        live = (await c.get("/api/queues")).json()["queues"]
        page = (await c.get("/")).text
        failed = (await c.get("/jobs?status=failed")).text
    assert "bulk" not in live  # known only from its finished jobs
    assert live["dashboard"]["ready"] == "1" and live["dashboard"]["done"] == "-"
    assert 'id="missing-indexes"' in page and "CREATE INDEX CONCURRENTLY" in page
    # A finished status is then matched within the scan budget, as a name is.
    assert [int(i) for i in re.findall(r'/jobs/(\d+)">', failed)] == [302, 301]


async def test_a_waiting_jobs_page_says_what_holds_it_back(broker: Broker) -> None:
    job_id = await broker.enqueue(jobs.echo("later"))
    async with client(Dashboard(broker)) as c:
        assert 'id="waiting"' not in (await c.get(f"/jobs/{job_id}")).text
        await broker.pause(jobs.QUEUE)
        page = (await c.get(f"/jobs/{job_id}")).text
    assert '<p class="waiting" id="waiting">Waiting: queue paused</p>' in page


async def test_a_jobs_label_shows_beside_its_name(broker: Broker) -> None:
    job_id = await broker.enqueue(jobs.echo("hi"))
    raw = await broker.pool.fetchval(
        "INSERT INTO koyojobs_jobs (name, queue, args) VALUES ('elsewhere.job', 'x', '\\x00')"
        " RETURNING id"
    )
    shown = '<span class="label">Say it back</span> <small>tests.dashboard.echo</small>'
    async with client(Dashboard(broker)) as c:
        assert shown in (await c.get(f"/jobs/{job_id}")).text
        listing = (await c.get("/jobs")).text
    assert shown in listing
    # A job this process does not define shows its name alone.
    assert re.search(
        rf'href="[^"]*/jobs/{raw}">{raw}</a></td>\s*<td class="name">elsewhere.job</td>', listing
    )


def test_a_label_must_be_a_non_empty_string() -> None:
    from koyojobs import JobDefinitionError, define_job

    with pytest.raises(JobDefinitionError, match="label='' is invalid"):
        define_job(name="tests.dashboard.unlabelled", label="")(lambda: None)


async def test_an_acting_dashboard_refuses_tokens_it_did_not_sign_and_other_bodies(
    broker: Broker,
) -> None:
    from koyojobs.dashboard.csrf import TokenMinter

    job_id = await broker.enqueue(jobs.echo("x"))
    await broker.pool.execute("UPDATE koyojobs_jobs SET status = 'failed' WHERE id = $1", job_id)
    other = TokenMinter(b"another dashboard's key, 32 byte").mint("any session")
    async with client(Dashboard(broker, can_act=lambda request: True)) as c:
        own = token_of((await c.get(f"/jobs/{job_id}")).text)
        url = f"/jobs/{job_id}/retry"
        for token in ("a.b", "1.b", other, ""):
            refused = await c.post(url, data={FIELD: token})
            assert refused.status_code == 403, token
        as_text = await c.post(
            url, content=f"{FIELD}={own}", headers={"content-type": "text/plain"}
        )
        assert as_text.status_code == 403

        sent = 0

        async def body() -> AsyncIterator[bytes]:
            # No length declared: the limit holds as the body comes, and the
            # rest (8 MiB here) is never read.
            nonlocal sent
            yield f"{FIELD}={own}&pad=".encode()
            for _ in range(1024):
                sent += 1
                yield b"x" * 8192

        chunked = await c.post(
            url, content=body(), headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert chunked.status_code == 413
        assert sent < 4, sent
        job = await broker.get_job(job_id)
        assert job is not None and job.status is Status.FAILED
        accepted = await c.post(url, data={FIELD: own})
        assert accepted.status_code == 303


async def test_ids_past_a_bigint_name_no_job(broker: Broker) -> None:
    huge = 2**64
    async with client(Dashboard(broker)) as c:
        assert (await c.get(f"/jobs/{huge}")).status_code == 404
        assert (await c.get(f"/jobs?before={huge}")).status_code == 400


async def test_a_paused_queue_shows_even_without_jobs(broker: Broker) -> None:
    await broker.pause("quiet")
    async with client(Dashboard(broker)) as c:
        live = (await c.get("/api/queues")).json()["queues"]
    assert live["quiet"]["paused"] is True and live["quiet"]["ready"] == "0"
