"""Progress bars in the jobs list, in headless Chromium: a running job that reported
progress shows its bar and message there, filtered or not, with nothing hidden in
the message and nothing in it run."""

from __future__ import annotations

import time

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from koyojobs import Status
from tests.dashboard import jobs
from tests.dashboard import workflow_jobs as wj
from tests.dashboard.test_browser import Live, find, wait

HOSTILE = "<script>document.title='pwned'</script>row 5\u202e of 10"


def test_a_running_job_shows_its_progress_in_the_jobs_list(live: Live, browser: WebDriver) -> None:
    server = live(can_act=False)
    quiet = server.enqueue(jobs.echo("no progress"))
    server.wait_for(quiet, Status.DONE)
    busy = server.enqueue(wj.resize(5, message=HOSTILE))
    server.wait_for(busy, Status.RUNNING)
    deadline = time.monotonic() + 15
    while server.job(busy).progress is None:  # written with the next lease renewal
        assert time.monotonic() < deadline, "the progress was never written"
        time.sleep(0.05)

    # Unfiltered (the primary key's page), and filtered (the exact page of 0009's indexes).
    for query in ("", "?status=running", f"?name={wj.resize.name}"):
        browser.get(f"{server.url}/jobs{query}")
        row = find(browser, By.XPATH, f"//tr[td/a[text()='{busy}']]")
        bar = row.find_element(By.CSS_SELECTOR, "td.state progress")
        assert bar.get_attribute("value") == "0.5", query
        text = row.find_element(By.CSS_SELECTOR, "td.state .progress-text")
        assert text.text == "50% <script>document.title='pwned'</script>row 5\\u202e of 10", query
        hidden = text.find_element(By.CSS_SELECTOR, ".hidden-char")
        assert hidden.text == "\\u202e", query
        assert not row.find_elements(By.TAG_NAME, "script"), query
        assert browser.title != "pwned", query
        if not query:
            done = find(browser, By.XPATH, f"//tr[td/a[text()='{quiet}']]")
            assert not done.find_elements(By.TAG_NAME, "progress"), query
    wait(browser).until(lambda d: d.title != "pwned")
