"""Makes the dashboard screenshots of docs/dashboard.md, with headless Chromium.

    python3 docs/screenshots.py --dsn postgresql://postgres@127.0.0.1:5432/kj_shots

Empties the jobs of the database given (make one for it), runs a few jobs
through a real worker (some fail, with their tracebacks), pauses a queue,
serves the dashboard with uvicorn and saves docs/images/dashboard-*.png.
Needs Debian's chromium and chromium-driver (as the browser tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
from datetime import timedelta
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from koyojobs import (
    Broker,
    Status,
    Worker,
    Workflow,
    define_job,
    report_progress,
    set_current_broker,
)
from koyojobs.dashboard import Dashboard
from koyojobs.rollup import roll_up

IMAGES = Path(__file__).resolve().parent / "images"


class PaymentDeclinedError(Exception):
    pass


@define_job(name="shop.send_receipt", queue="emails")
async def send_receipt(order: int) -> str:
    return f"receipt {order} sent"


@define_job(name="shop.charge_card", queue="default", max_attempts=1)
async def charge_card(order: int, amount_cents: int) -> str:
    if order % 7 == 0:
        await _call_gateway(order)
    return f"charged {amount_cents}"


async def _call_gateway(order: int) -> None:
    raise PaymentDeclinedError(f"order {order}: the card issuer declined (code 51)")


@define_job(name="shop.render_invoice", queue="reports")
async def render_invoice(order: int) -> str:
    return f"invoice-{order}.pdf"


@define_job(name="shop.nightly_cleanup", cron="0 3 * * *", timezone="Europe/Amsterdam")
async def nightly_cleanup() -> int:
    return 0


@define_job(name="shop.sample_metrics", every=timedelta(seconds=30))
async def sample_metrics() -> None:
    return None


@define_job(name="media.fetch_profile", queue="media")
async def fetch_profile(user: int) -> str:
    return f"profile {user}"


@define_job(name="media.resize", queue="media")
async def resize(user: int, size: int) -> str:
    if size == 1024:  # still at it while the page is shot
        report_progress(0.4, "frame 40 of 100")
        await asyncio.sleep(3600)
    return f"{user}-{size}.png"


@define_job(name="media.notify", queue="media")
async def notify(user: int) -> None:
    return None


def onboarding(user: int) -> Workflow:
    wf = Workflow(f"onboard user {user}")
    fetch = wf.add(fetch_profile(user), name="fetch-profile")
    sizes = [
        wf.add(resize(user, size), after=fetch, name=f"resize-{size}") for size in (64, 256, 1024)
    ]
    told = wf.add(notify(user), after=sizes, name="notify")
    wf.add(notify(user), after=[fetch, told], name="cleanup", always=True)
    return wf


async def fill(broker: Broker) -> int:
    await broker.pool.execute(
        "TRUNCATE koyojobs_jobs, koyojobs_schedules, koyojobs_queues, koyojobs_workers,"
        " koyojobs_minutes RESTART IDENTITY"
    )
    await broker.pool.execute("UPDATE koyojobs_rollup SET rolled_until = now() - interval '1 day'")
    # An hour of history for the charts: a steady flow, a burst of failures.
    await broker.pool.execute(
        "INSERT INTO koyojobs_jobs (name, queue, status, last_error, attempts, args,"
        " scheduled_at, started_at, finished_at)"
        " SELECT n, q, CASE WHEN f THEN 'failed' ELSE 'done' END,"
        "        CASE WHEN f THEN 'TimeoutError: the card gateway did not answer in 10s' END,"
        "        CASE WHEN f THEN 3 ELSE 1 END, '\\x00',"
        "        t - make_interval(secs => (m % 17) * 0.4 + g % 3), t, t + interval '1 second'"
        " FROM (VALUES ('shop.send_receipt', 'emails'), ('shop.charge_card', 'default'))"
        "      AS k(n, q),"
        "      generate_series(1, 60) AS m, generate_series(1, 12) AS g,"
        "      LATERAL (SELECT now() - make_interval(mins => m) + g * interval '4 seconds' AS t,"
        "                      q = 'default' AND m BETWEEN 20 AND 24 AND g % 3 = 0 AS f) AS s"
        " WHERE g <= 4 + (m * 7) % 9"
    )
    await broker.resume("reports")
    rng = random.Random(7)
    ids = await broker.enqueue_many(
        [send_receipt(n) for n in range(1, 41)]
        + [charge_card(n, rng.randrange(500, 9000)) for n in range(1, 36)]
        + [render_invoice(n) for n in range(1, 11)]
    )
    assert ids is not None
    options = {"lease": 5.0, "poll_interval": 0.2, "shutdown_grace": 1.0}
    async with (
        Worker(broker, queue="default", **options),
        Worker(broker, queue="emails", **options),
        Worker(broker, queue="reports", **options),
    ):
        for job_id in ids:
            await broker.wait(job_id, timeout=30)
    await broker.pause("reports")
    await broker.enqueue_many([render_invoice(n) for n in range(11, 17)])
    await broker.enqueue_many([send_receipt(n) for n in range(41, 45)])
    while await roll_up(broker):
        pass
    failed = await broker.list_jobs(status=Status.FAILED, limit=1)
    return failed[0].id


def shoot(url: str, failed_id: int, workflow_id: int) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,600"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        for name, path in (
            ("queues", "/"),
            ("jobs", "/jobs?status=failed&queue=default"),
            ("job", f"/jobs/{failed_id}"),
            ("periodic", "/periodic"),
            ("workers", "/workers"),
            ("charts", "/charts"),
            ("bulk", "/jobs?status=failed&queue=default"),
            ("workflow", f"/workflows/{workflow_id}"),
        ):
            driver.set_window_size(1280, 480)  # the page's height is then its content's
            driver.get(url + path)
            WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.TAG_NAME, "h1"))
            if name == "bulk":  # the confirmation of a bulk retry, with its count
                driver.find_element(By.ID, "bulk-retry-matching").click()
                WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "confirm"))
            height, frame = driver.execute_script(
                "return [document.body.scrollHeight, window.outerHeight - window.innerHeight]"
            )
            driver.set_window_size(1280, min(int(height) + int(frame) + 24, 1200))
            driver.save_screenshot(str(IMAGES / f"dashboard-{name}.png"))
            print(f"saved docs/images/dashboard-{name}.png")
    finally:
        driver.quit()


async def main(dsn: str) -> None:
    async with Broker(dsn) as broker:
        set_current_broker(broker)
        failed_id = await fill(broker)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        app = Dashboard(broker, can_act=lambda request: True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            # Workers running while the pages are shot: the workers page lists them.
            async with (
                Worker(broker, queue="emails", pool_size=4),
                Worker(broker, queue="default", pool_size=8),
                Worker(broker, queue="media", lease=3.0, shutdown_grace=1.0),
            ):
                run = await broker.enqueue(onboarding(42))
                busy = run.job_ids["resize-1024"]
                while len(await broker.workers()) < 1 or (
                    (job := await broker.get_job(busy)) is None or job.progress is None
                ):
                    await asyncio.sleep(0.05)
                url = f"http://127.0.0.1:{port}"
                await asyncio.to_thread(shoot, url, failed_id, run.id)
        finally:
            server.should_exit = True
            await serving


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/kj_shots")
    IMAGES.mkdir(exist_ok=True)
    asyncio.run(main(parser.parse_args().dsn))
