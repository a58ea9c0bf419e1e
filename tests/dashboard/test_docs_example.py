"""docs/examples/dashboard_fastapi.py, the Dashboard page's example, run as written."""

from __future__ import annotations

import re

import httpx
from asgi_lifespan import LifespanManager

from docs.examples import dashboard_fastapi
from koyojobs import Broker, Status
from tests.dashboard import jobs


async def test_the_fastapi_example_shows_staff_and_lets_admins_act(
    broker: Broker, dsn: str
) -> None:
    job_id = await broker.enqueue(jobs.echo("x"))
    app = dashboard_fastapi.create_app(dsn)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            page = f"/admin/jobs/jobs/{job_id}"
            assert (await client.get(page)).status_code == 403  # not logged in
            client.cookies.set("session", "s-eve")
            assert (await client.get(page)).status_code == 403  # logged in, not staff
            assert (await client.get("/me")).json() == {"name": "eve", "role": ""}

            client.cookies.set("session", "s-bob")
            response = await client.get(page)
            assert response.status_code == 200 and "Cancel" not in response.text

            client.cookies.set("session", "s-ada")
            response = await client.get(page)
            token = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
            assert token
            cancel = await client.post(page + "/cancel", data={"csrf_token": token[1]})
            assert cancel.status_code == 303
    job = await broker.get_job(job_id)
    assert job is not None and job.status is Status.CANCELLED
