"""The dashboard in headless Chromium: what an operator does during an incident.

Every wait is on a condition (WebDriverWait, or the database's status), never
a fixed sleep. The dashboard is mounted under a prefix, so each click also
checks that links carry it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException, NoSuchElementException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from koyojobs import Status
from tests.dashboard import jobs
from tests.dashboard.conftest import PREFIX, LiveDashboard

Live = Callable[..., LiveDashboard]
TIMEOUT = 15


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.1)


def find(driver: WebDriver, by: str, value: str) -> WebElement:
    """The element, once the page that is loading shows it."""
    return wait(driver).until(lambda d: d.find_element(by, value))


def text_of(driver: WebDriver, selector: str) -> str:
    return find(driver, By.CSS_SELECTOR, selector).text


def badge_after_reload(driver: WebDriver, expected: str) -> Callable[[WebDriver], bool]:
    """A condition: after a reload, the job page's status badge reads ``expected``."""

    def check(d: WebDriver) -> bool:
        d.refresh()
        try:
            return d.find_element(By.CSS_SELECTOR, "h1 .status").text == expected
        except NoSuchElementException:
            return False

    return check


def test_find_a_failed_job_read_its_traceback_retry_it_and_see_it_done(
    live: Live, browser: WebDriver
) -> None:
    server = live(can_act=True)
    job_id = server.enqueue(jobs.fragile("invoice-7"))
    server.wait_for(job_id, Status.FAILED)

    browser.get(server.url + "/")
    row = f'tr[data-queue="{jobs.QUEUE}"]'
    wait(browser).until(lambda d: text_of(d, f"{row} [data-live=failed]") == "1")
    find(browser, By.CSS_SELECTOR, f"{row} [data-live=failed]").click()

    wait(browser).until(lambda d: "status=failed" in d.current_url)
    assert browser.current_url.startswith(server.url + "/jobs?")
    find(browser, By.LINK_TEXT, str(job_id)).click()

    wait(browser).until(lambda d: d.current_url == f"{server.url}/jobs/{job_id}")
    assert text_of(browser, "h1 .status") == "failed"
    assert "RuntimeError: the printer is on fire (invoice-7)" in text_of(browser, "#last-error")
    traceback = text_of(browser, "#traceback")
    assert traceback.startswith("Traceback (most recent call last):")
    assert "raise RuntimeError" in traceback

    jobs.fixed.add("invoice-7")  # the operator fixed the printer
    find(browser, By.XPATH, "//button[text()='Retry']").click()
    wait(browser).until(lambda d: "notice=retried" in d.current_url)
    assert text_of(browser, ".notice") == "The job will run again."

    server.wait_for(job_id, Status.DONE)
    wait(browser).until(badge_after_reload(browser, "done"))
    assert server.job(job_id).result == "printed invoice-7"
    # A finished job can be run again, not cancelled.
    assert not browser.find_elements(By.XPATH, "//button[text()='Cancel']")


def test_pausing_a_queue_stops_its_workers_claiming_and_resuming_runs_the_job(
    live: Live, browser: WebDriver
) -> None:
    server = live(can_act=True)
    warm = server.enqueue(jobs.echo("before"))
    server.wait_for(warm, Status.DONE)

    browser.get(server.url + "/")
    row = f'tr[data-queue="{jobs.QUEUE}"]'
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    find(browser, By.CSS_SELECTOR, f"{row} button").click()
    wait(browser).until(lambda d: "notice=paused" in d.current_url)
    assert text_of(browser, f"{row} [data-live=paused]") == "paused"

    held = server.enqueue(jobs.echo("while paused"))
    # Workers notice a pause within a second; give them well over that, then
    # the job must still be waiting. (A condition that must stay false has no
    # event to wait on: this is the one bounded look.)
    with pytest.raises(AssertionError):
        server.wait_for(held, Status.RUNNING, Status.DONE, timeout=2.5)
    assert server.job(held).status is Status.READY
    wait(browser).until(lambda d: text_of(d, f"{row} [data-live=ready]") == "1")

    resume = f"//tr[@data-queue='{jobs.QUEUE}']//button[text()='Resume']"
    find(browser, By.XPATH, resume).click()
    wait(browser).until(lambda d: "notice=resumed" in d.current_url)
    assert server.wait_for(held, Status.DONE).result == "while paused"
    wait(browser).until(lambda d: text_of(d, f"{row} [data-live=paused]") == "active")


def test_a_read_only_dashboard_shows_no_actions_and_refuses_a_forged_post(
    live: Live, browser: WebDriver
) -> None:
    acting = live(can_act=True, worker=True)
    job_id = acting.enqueue(jobs.fragile("read-only"))
    acting.wait_for(job_id, Status.FAILED)
    reader = live(can_act=False, worker=False)

    for page in ("/", "/jobs", f"/jobs/{job_id}", "/periodic"):
        browser.get(reader.url + page)
        wait(browser).until(lambda d: d.find_elements(By.TAG_NAME, "h1"))
        buttons = [b.text for b in browser.find_elements(By.TAG_NAME, "button")]
        assert buttons in ([], ["Filter"]), (page, buttons)
        assert browser.find_elements(By.CSS_SELECTOR, "form[method=post]") == []
        assert text_of(browser, ".mode") == "read-only"

    # A forged POST: no token; a made-up pair; a pair minted by the acting dashboard.
    browser.get(acting.url + f"/jobs/{job_id}")
    token = find(browser, By.NAME, "csrf_token").get_attribute("value")
    assert token
    forged: list[dict[str, Any]] = [
        {"data": {}},
        {"data": {"csrf_token": "a.b"}, "cookies": {"koyojobs_session": "a.b"}},
        {"data": {"csrf_token": token}, "cookies": {"koyojobs_session": token}},
    ]
    for attempt in forged:
        with httpx.Client(cookies=attempt.get("cookies")) as client:
            response = client.post(f"{reader.url}/jobs/{job_id}/retry", data=attempt["data"])
        assert response.status_code == 403, response.text
    # And the acting one refuses a POST without its token, and a GET.
    with httpx.Client() as client:
        assert client.post(f"{acting.url}/jobs/{job_id}/retry").status_code == 403
        assert client.get(f"{acting.url}/jobs/{job_id}/retry").status_code == 405
    assert acting.job(job_id).status is Status.FAILED


def test_a_script_in_an_error_renders_as_inert_text(live: Live, browser: WebDriver) -> None:
    server = live(can_act=True)
    job_id = server.enqueue(jobs.hostile())
    server.wait_for(job_id, Status.FAILED)

    for page in (f"/jobs/{job_id}", f"/jobs?status=failed&queue={jobs.QUEUE}"):
        browser.get(server.url + page)
        wait(browser).until(lambda d: d.find_elements(By.TAG_NAME, "h1"))
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 (the access is the check)
        assert browser.title != "pwned"
        assert browser.find_elements(By.CSS_SELECTOR, "main b") == []
    error = text_of(browser, "td.error")
    assert "<script>document.title='pwned'" in error
    browser.get(server.url + f"/jobs/{job_id}")
    assert text_of(browser, "#last-error") == (
        "ValueError: <script>document.title='pwned';alert('pwned')</script><b>bold</b>"
    )
    assert PREFIX in browser.current_url
