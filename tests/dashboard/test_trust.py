"""The dashboard safe to expose: each attack tried on it, refused (httpx over ASGI)."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest

from koyojobs import Broker, Status
from koyojobs.dashboard import Dashboard
from koyojobs.dashboard import data as dashboard_data
from koyojobs.dashboard.csrf import COOKIE, FIELD
from tests.dashboard import jobs
from tests.dashboard.test_pages import client, token_of


async def failed_job(broker: Broker) -> int:
    job_id = await broker.enqueue(jobs.echo("x"))
    await broker.pool.execute("UPDATE koyojobs_jobs SET status = 'failed' WHERE id = $1", job_id)
    return job_id


async def test_a_token_planted_from_another_session_is_refused(broker: Broker) -> None:
    # The attack: a token minted for one browser (the attacker's) planted into
    # another's (the admin's) by a sibling origin's Set-Cookie, then posted.
    job_id = await failed_job(broker)
    app = Dashboard(broker, can_act=lambda request: True)
    async with client(app, "http://127.0.0.1:18431") as attacker:
        page = await attacker.get(f"/jobs/{job_id}")
        stolen = token_of(page.text)
        attacker_session = attacker.cookies[COOKIE]
    async with client(app, "http://127.0.0.1:18431") as admin:
        own = token_of((await admin.get(f"/jobs/{job_id}")).text)
        refused = await admin.post(f"/jobs/{job_id}/retry", data={FIELD: stolen})
        assert refused.status_code == 403
        assert "another session" in refused.text
        assert await broker.job_status(job_id) is Status.FAILED
        accepted = await admin.post(f"/jobs/{job_id}/retry", data={FIELD: own})
        assert accepted.status_code == 303
    # With a login, the session is the user's: planting the attacker's session
    # cookie as well does not make the attacker's token the admin's.
    job_id = await failed_job(broker)
    async with client(app, "http://127.0.0.1:18431") as admin:
        admin.cookies.set(COOKIE, attacker_session)
        admin.headers["authorization"] = "Bearer admin"
        refused = await admin.post(f"/jobs/{job_id}/retry", data={FIELD: stolen})
        assert refused.status_code == 403
    assert await broker.job_status(job_id) is Status.FAILED


async def test_a_token_expires(broker: Broker) -> None:
    job_id = await failed_job(broker)
    app = Dashboard(broker, can_act=lambda request: True, csrf_lifetime=1)
    async with client(app) as c:
        token = token_of((await c.get(f"/jobs/{job_id}")).text)
        # The lifetime is whole seconds of the token's issue time: 2.1 s is past it.
        await asyncio.sleep(2.1)
        refused = await c.post(f"/jobs/{job_id}/retry", data={FIELD: token})
        assert refused.status_code == 403 and "expired" in refused.text
        fresh = token_of((await c.get(f"/jobs/{job_id}")).text)
        assert (await c.post(f"/jobs/{job_id}/retry", data={FIELD: fresh})).status_code == 303


async def test_only_allowed_hosts_are_served(broker: Broker) -> None:
    job_id = await failed_job(broker)
    app = Dashboard(broker, can_act=lambda request: True, allowed_hosts=["127.0.0.1", "localhost"])
    async with client(app, "http://127.0.0.1:8080") as c:
        for path in ("/", "/jobs", f"/jobs/{job_id}", "/api/queues", "/static/dashboard.css"):
            refused = await c.get(path, headers={"host": "attacker.example"})
            assert refused.status_code == 400, path
            assert "csrf" not in refused.text
        assert (await c.get("/", headers={"host": "localhost:8080"})).status_code == 200
        page = await c.get(f"/jobs/{job_id}")
        assert page.status_code == 200
        # A page got by the rebinding name cannot lend its token either.
        posted = await c.post(
            f"/jobs/{job_id}/retry",
            data={FIELD: token_of(page.text)},
            headers={"host": "attacker.example", "origin": "http://attacker.example"},
        )
        assert posted.status_code == 400
    assert await broker.job_status(job_id) is Status.FAILED
    # Mounted with no list, any host the app routes to it is served; a
    # malformed Host header still is not.
    async with client(Dashboard(broker)) as c:
        assert (await c.get("/", headers={"host": "jobs.example.com"})).status_code == 200
        assert (await c.get("/", headers={"host": "a b"})).status_code == 400


async def test_a_post_from_another_origin_is_refused(broker: Broker) -> None:
    job_id = await failed_job(broker)
    app = Dashboard(broker, can_act=lambda request: True)
    async with client(app, "http://127.0.0.1:18431") as c:
        token = token_of((await c.get(f"/jobs/{job_id}")).text)
        for origin in ("http://127.0.0.1:18435", "null", "http://evil.example", "file://x"):
            refused = await c.post(
                f"/jobs/{job_id}/retry", data={FIELD: token}, headers={"origin": origin}
            )
            assert refused.status_code == 403, origin
        refused = await c.post(
            f"/jobs/{job_id}/retry",
            data={FIELD: token},
            headers={"referer": "http://127.0.0.1:18435/attack.html"},
        )
        assert refused.status_code == 403
        assert await broker.job_status(job_id) is Status.FAILED
        # Behind a proxy that sends its own Host, the browser's is forwarded.
        proxied = await c.post(
            f"/jobs/{job_id}/retry",
            data={FIELD: token},
            headers={
                "origin": "https://jobs.example.com",
                "host": "127.0.0.1:18431",
                "x-forwarded-host": "jobs.example.com",
            },
        )
        assert proxied.status_code == 303
        await broker.pool.execute(
            "UPDATE koyojobs_jobs SET status = 'failed' WHERE id = $1", job_id
        )
        accepted = await c.post(
            f"/jobs/{job_id}/retry",
            data={FIELD: token},
            headers={"origin": "http://127.0.0.1:18431"},
        )
        assert accepted.status_code == 303


async def test_pages_are_never_stored(broker: Broker) -> None:
    job_id = await failed_job(broker)
    async with client(Dashboard(broker, can_act=lambda request: True)) as c:
        for path in ("/", "/jobs", f"/jobs/{job_id}", "/jobs/999999", "/periodic", "/api/queues"):
            response = await c.get(path)
            assert response.headers["cache-control"] == "no-store", path
        refused = await c.post(f"/jobs/{job_id}/retry", data={FIELD: "x"})
        assert refused.headers["cache-control"] == "no-store"
        asset = await c.get("/static/dashboard.css")
        assert asset.headers["cache-control"].startswith("public")


@pytest.mark.parametrize(
    "query",
    [
        "queue=%00",
        "name=a%00b",
        "queue=%1b%5b2J",
        "name=x%e2%80%aey",  # a right-to-left override
        "queue=%ff",
        "before=abc",
        "before=-1",
        "before=99999999999999999999",
        "status=zzz",
        "status=%00",
    ],
)
async def test_malformed_query_input_is_a_400(broker: Broker, query: str) -> None:
    async with client(Dashboard(broker)) as c:
        response = await c.get(f"/jobs?{query}")
    assert response.status_code == 400, response.text
    assert response.text.startswith("bad ")


async def test_a_control_character_in_an_action_form_is_a_400(broker: Broker) -> None:
    async with client(Dashboard(broker, can_act=lambda request: True)) as c:
        token = token_of((await c.get("/periodic")).text)
        response = await c.post("/queues/pause", data={FIELD: token, "queue": "a\x00b"})
    assert response.status_code == 400
    assert await broker.paused_queues() == {}


async def test_the_job_page_never_loads_a_payload_to_size_it(broker: Broker) -> None:
    job_id = await broker.enqueue(jobs.echo("x" * 3_000_000))
    row = await dashboard_data.job_row(broker, job_id)
    assert row is not None
    assert "args" not in row and "result" not in row
    assert row["args_bytes"] > 3_000_000 and row["result_bytes"] is None
    async with client(Dashboard(broker)) as c:
        page = await c.get(f"/jobs/{job_id}")
    assert re.search(r'id="args-size">2\.9 MB<', page.text), page.text
    # Shown payloads are loaded up to a bound; beyond it, the page says the size.
    async with client(Dashboard(broker, show_payloads=True)) as c:
        page = await c.get(f"/jobs/{job_id}")
    assert "not shown: 2.9 MB" in page.text


async def test_the_job_page_shows_every_column_of_the_table(broker: Broker) -> None:
    columns = {
        row["column_name"]
        for row in await broker.pool.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'koyojobs_jobs' AND table_schema = current_schema()"
        )
    }
    job_id = await broker.enqueue(jobs.echo(1))
    row = await dashboard_data.job_row(broker, job_id)
    assert row is not None
    shown = set(row) - {"args_bytes", "result_bytes", "waiting"}
    assert shown == columns - {"args", "result"}


async def test_hidden_and_look_alike_characters_in_names_show(broker: Broker) -> None:
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, args) VALUES ($1, $2, '\\x00'), ($3, $4, '\\x00')",
        "invoice\u202egpj.exe",
        "d\u0435fault",
        "zero\u200bwidth",
        "default",
    )
    async with client(Dashboard(broker)) as c:
        queues = (await c.get("/")).text
        listed = (await c.get("/jobs")).text
    assert "(d\\u0435fault)" in queues  # the look-alike spelled out
    assert "\u202e" not in listed and "invoice" in listed
    assert '<span class="hidden-char" title="invisible character">\\u202e</span>gpj.exe' in listed
    assert "zero<span" in listed and "\u200b" not in listed


async def test_basic_auth(broker: Broker) -> None:
    app = Dashboard(broker, basic_auth=("admin", "s3cret"))
    async with client(app) as c:
        missing = await c.get("/")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Basic")
        assert (await c.get("/", auth=("admin", "wrong"))).status_code == 401
        assert (await c.get("/api/queues", auth=("admin", "s3cret"))).status_code == 200


async def test_without_the_schema_a_page_says_to_migrate(
    empty_database: object,
) -> None:
    make = empty_database
    dsn = await make("noschema")  # type: ignore[operator]
    async with Broker(dsn, migrate=False) as broker:
        async with client(Dashboard(broker)) as c:
            response = await c.get("/jobs")
        assert response.status_code == 503
        assert "run koyojobs migrate" in response.text
        tables = await broker.pool.fetchval(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'koyojobs%'"
        )
        assert tables == 0


async def test_a_select_only_role_reads_every_page(broker: Broker, reader_dsn: str) -> None:
    job_id = await failed_job(broker)
    async with Broker(reader_dsn, migrate=False) as read_only:
        async with client(Dashboard(read_only)) as c:
            for path in ("/", "/jobs", "/jobs?status=failed", f"/jobs/{job_id}", "/periodic"):
                response = await c.get(path)
                assert response.status_code == 200, (path, response.text)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await read_only.pause("x")
