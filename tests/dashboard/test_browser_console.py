"""The console in headless Chromium: bulk actions, workers, charts, and a planted token."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from koyojobs import Status
from koyojobs.rollup import roll_up
from tests.dashboard import jobs
from tests.dashboard.test_browser import Live, find, text_of, wait
from tests.integration.test_heartbeat import until


def test_bulk_retry_of_every_failed_job_of_a_queue_through_the_ui(
    live: Live, browser: WebDriver
) -> None:
    server = live(can_act=True)
    keys = [f"outage-{i}" for i in range(6)]
    ids = [server.enqueue(jobs.fragile(key)) for key in keys]
    for job_id in ids:
        server.wait_for(job_id, Status.FAILED)
    jobs.fixed.update(keys)  # the outage is over

    browser.get(f"{server.url}/jobs?status=failed&queue={jobs.QUEUE}")
    find(browser, By.ID, "bulk-retry-matching").click()
    wait(browser).until(lambda d: d.find_elements(By.ID, "bulk-count"))
    assert text_of(browser, "#bulk-count") == "6"
    assert text_of(browser, "h1") == "Retry 6 jobs?"
    find(browser, By.ID, "confirm").click()
    wait(browser).until(lambda d: "notice=bulk-retried" in d.current_url)
    assert text_of(browser, ".notice") == "Retried 6 jobs: they will run again."
    for job_id in ids:
        assert server.wait_for(job_id, Status.DONE).result.startswith("printed outage-")

    # Ticked rows: two of them deleted, after a confirmation of two.
    browser.get(f"{server.url}/jobs?status=done&queue={jobs.QUEUE}")
    boxes = wait(browser).until(lambda d: d.find_elements(By.NAME, "ids"))
    assert len(boxes) == 6
    boxes[0].click()
    boxes[1].click()
    chosen = {int(b.get_attribute("value") or 0) for b in boxes[:2]}
    find(browser, By.XPATH, "//button[@value='delete-selected']").click()
    wait(browser).until(lambda d: d.find_elements(By.ID, "bulk-count"))
    assert text_of(browser, "#bulk-count") == "2"
    find(browser, By.ID, "confirm").click()
    wait(browser).until(lambda d: "notice=bulk-deleted" in d.current_url)
    rows = server.call(lambda: server.broker.pool.fetch("SELECT id FROM koyojobs_jobs"))
    left = {row["id"] for row in rows}
    assert chosen.isdisjoint(left) and len(left) == 4


def test_the_workers_and_charts_pages_render(live: Live, browser: WebDriver) -> None:
    server = live(can_act=False)
    ids = [server.enqueue(jobs.echo(i)) for i in range(4)]
    failed = server.enqueue(jobs.hostile())
    for job_id in ids:
        server.wait_for(job_id, Status.DONE)
    server.wait_for(failed, Status.FAILED)
    server.call(lambda: roll_up(server.broker))
    server.call(lambda: until(server.broker.workers))  # its first heartbeat is written

    browser.get(server.url + "/workers")
    row = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.workers tbody tr"))
    cells = [c.text for c in row[0].find_elements(By.TAG_NAME, "td")]
    assert cells[1] == str(os.getpid()) and cells[2] == jobs.QUEUE

    for span in ("hour", "day"):
        browser.get(f"{server.url}/charts?span={span}")
        section = find(browser, By.CSS_SELECTOR, f'section[data-queue="{jobs.QUEUE}"]')
        assert "4 done, 1 failed" in section.text
        charts = section.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert len(charts) == 2
        for chart in charts:  # drawn: laid out at its size, with bars in it
            assert chart.size["width"] > 500 and chart.size["height"] > 100
        done = section.find_elements(By.CSS_SELECTOR, "svg.throughput rect.done")
        red = section.find_elements(By.CSS_SELECTOR, "svg.throughput rect.failed")
        assert done and red and done[0].size["height"] > 0
        assert red[0].value_of_css_property("fill") == "rgb(198, 40, 40)"  # the stylesheet's


@contextmanager
def attacker_site(page: bytes, cookie: str) -> Iterator[str]:
    """Another port of 127.0.0.1 (same site, another origin) serving ``page`` and a cookie."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("set-cookie", f"{cookie}; Path=/")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_planted_from_a_sibling_port_makes_no_admin_act(
    live: Live, browser: WebDriver
) -> None:
    server = live(can_act=True)
    job_id = server.enqueue(jobs.fragile("planted"))
    server.wait_for(job_id, Status.FAILED)
    # The attacker, a user of the dashboard too, takes a session and its token.
    with httpx.Client() as attacker:
        page = attacker.get(f"{server.url}/jobs/{job_id}").text
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        session = attacker.cookies["koyojobs_session"]
    # The admin has the dashboard open, then visits the attacker's page, which
    # plants the attacker's session cookie and posts the attacker's token.
    browser.get(f"{server.url}/jobs/{job_id}")
    find(browser, By.CSS_SELECTOR, "h1")
    attack = (
        f'<form method="post" action="{server.url}/jobs/{job_id}/retry">'
        f'<input name="csrf_token" value="{token}"></form>'
        "<script>setTimeout(() => document.forms[0].submit(), 200)</script>"
    ).encode()
    with attacker_site(attack, f"koyojobs_session={session}") as url:
        browser.get(url)
        wait(browser).until(lambda d: d.current_url.startswith(server.url))
        assert "forbidden" in browser.find_element(By.TAG_NAME, "body").text
    assert server.job(job_id).status is Status.FAILED
