"""The workflow page, in headless Chromium and in-process: steps, what each waits for,
progress bars, the link from a step's job page, cancelling the workflow."""

from __future__ import annotations

import time

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from koyojobs import Broker, Status, Workflow, WorkflowRun
from koyojobs.dashboard import Dashboard
from tests.dashboard import workflow_jobs as wj
from tests.dashboard.test_browser import Live, find, text_of, wait
from tests.dashboard.test_pages import client


def _onboarding() -> Workflow:
    wf = Workflow("onboard user 7")
    fetch = wf.add(wj.fetch(7), name="fetch")
    resize = wf.add(wj.resize(7), after=fetch, name="resize")
    wf.add(wj.notify(7), after=resize, name="notify")
    wf.add(wj.notify(7), after=[fetch, resize], name="cleanup", always=True)
    return wf


def test_follow_a_step_to_its_workflow_see_progress_and_what_waits_then_cancel_it(
    live: Live, browser: WebDriver
) -> None:
    server = live(can_act=True)
    run: WorkflowRun = server.call(lambda: server.broker.enqueue(_onboarding()))
    resize = run.job_ids["resize"]
    server.wait_for(resize, Status.RUNNING)
    deadline = time.monotonic() + 15
    while server.job(resize).progress is None:  # written with the next lease renewal
        assert time.monotonic() < deadline, "the progress was never written"
        time.sleep(0.05)

    browser.get(f"{server.url}/jobs/{resize}")
    assert text_of(browser, "#progress") == "50%: half way"
    assert find(browser, By.CSS_SELECTOR, "#progress progress").get_attribute("value") == "0.5"
    find(browser, By.LINK_TEXT, f"workflow {run.id}").click()

    wait(browser).until(lambda d: d.current_url == f"{server.url}/workflows/{run.id}")
    assert text_of(browser, "h1 .status") == "running"
    rows = {
        row.find_element(By.CSS_SELECTOR, "td.step").text: row
        for row in browser.find_elements(By.CSS_SELECTOR, "#steps tbody tr")
    }
    assert list(rows) == ["fetch", "resize", "notify", "cleanup always"]
    status = {name: row.find_element(By.CSS_SELECTOR, ".status").text for name, row in rows.items()}
    assert status == {
        "fetch": "done",
        "resize": "running",
        "notify": "pending",
        "cleanup always": "pending",
    }
    assert rows["notify"].find_element(By.CSS_SELECTOR, "td.waits").text == "resize"
    assert rows["cleanup always"].find_element(By.CSS_SELECTOR, "td.waits").text == (
        "resize (of fetch, resize)"
    )
    bar = rows["resize"].find_element(By.CSS_SELECTOR, "progress")
    assert bar.get_attribute("value") == "0.5"
    assert "50% half way" in rows["resize"].text

    find(browser, By.XPATH, "//button[text()='Cancel the workflow']").click()
    wait(browser).until(lambda d: "notice=workflow-cancelled" in d.current_url)
    assert text_of(browser, ".notice") == "The workflow's unfinished steps are cancelled."
    assert text_of(browser, "h1 .status") == "cancelled"
    server.wait_for(resize, Status.CANCELLED)
    assert not browser.find_elements(By.XPATH, "//button[text()='Cancel the workflow']")


async def test_an_unknown_workflow_is_a_404_and_a_big_one_lists_its_first_steps(
    broker: Broker,
) -> None:
    app = Dashboard(broker)
    async with client(app) as c:
        assert (await c.get("/workflows/999")).status_code == 404
        assert (await c.get(f"/workflows/{2**63}")).status_code == 404
        wf = Workflow("big")
        for n in range(600):
            wf.add(wj.fetch(n))
        run = await broker.enqueue(wf)
        page = await c.get(f"/workflows/{run.id}")
        assert page.status_code == 200
        assert page.text.count('<tr id="step-') == 500
        assert "The first 500 of 600 steps." in page.text
        read_only = await c.post(f"/workflows/{run.id}/cancel")
        assert read_only.status_code == 403
    found = await broker.get_workflow(run.id)
    assert found is not None and found.status is Status.RUNNING


HOSTILE_STEP = "<script>document.title='pwned'</script>"


def test_the_graph_draws_each_step_in_its_layer_with_a_line_to_each_dependent(
    live: Live, browser: WebDriver
) -> None:
    server = live(can_act=False)
    wf = Workflow("graph")
    root = wf.add(wj.resize(1), name="resize")  # runs until cancelled: the rest wait
    shards = [wf.add(wj.fetch(n), after=root, name=f"shard-{n}") for n in range(3)]
    hostile = wf.add(wj.notify(1), after=shards, name=HOSTILE_STEP)
    wf.add(wj.notify(1), after=[root, hostile], name="cleanup", always=True)
    run: WorkflowRun = server.call(lambda: server.broker.enqueue(wf))
    server.wait_for(run.job_ids["resize"], Status.RUNNING)

    browser.get(f"{server.url}/workflows/{run.id}")
    graph = find(browser, By.CSS_SELECTOR, "svg#graph")
    nodes = graph.find_elements(By.CSS_SELECTOR, "a.node")
    assert len(nodes) == 6
    titles = sorted(
        e.get_attribute("textContent") or ""
        for e in graph.find_elements(By.CSS_SELECTOR, "path.edge > title")
    )
    assert titles == sorted(
        [f"resize \u2192 shard-{n}" for n in range(3)]
        + [f"shard-{n} \u2192 {HOSTILE_STEP}" for n in range(3)]
        + ["resize \u2192 cleanup", f"{HOSTILE_STEP} \u2192 cleanup"]
    )
    assert len(graph.find_elements(By.CSS_SELECTOR, "path.edge.always")) == 2
    by_id = {int(n.get_attribute("data-step-id") or 0): n for n in nodes}
    assert set(by_id) == set(run.job_ids.values())
    classes = {step: by_id[job_id].get_attribute("class") for step, job_id in run.job_ids.items()}
    assert classes["resize"] == "node node-running"
    assert classes[HOSTILE_STEP] == classes["cleanup"] == "node node-pending"
    # Layers are columns, left to right: resize, the shards, the hostile step, cleanup.
    xs = {
        step: by_id[i].find_element(By.TAG_NAME, "rect").rect["x"]
        for step, i in run.job_ids.items()
    }
    assert xs["resize"] < xs["shard-0"] == xs["shard-1"] == xs["shard-2"] < xs[HOSTILE_STEP]
    assert xs[HOSTILE_STEP] < xs["cleanup"]
    # The hostile name is text: cut in its box, whole in the box's title, nothing run.
    hostile_node = by_id[run.job_ids[HOSTILE_STEP]]
    assert hostile_node.find_element(By.TAG_NAME, "text").text == "<script>document.titl\u2026"
    title = hostile_node.find_element(By.CSS_SELECTOR, "title").get_attribute("textContent")
    assert title == f"{HOSTILE_STEP}: pending"
    assert not browser.find_elements(By.CSS_SELECTOR, "svg script, #steps script")
    assert browser.title != "pwned"

    by_id[run.job_ids["shard-1"]].click()
    wait(browser).until(lambda d: d.current_url == f"{server.url}/jobs/{run.job_ids['shard-1']}")
    server.call(lambda: server.broker.cancel_workflow(run.id))


async def test_past_sixty_steps_a_line_says_there_is_no_graph(broker: Broker) -> None:
    app = Dashboard(broker)
    async with client(app) as c:
        for count, drawn in ((60, True), (61, False)):
            wf = Workflow(f"{count} steps")
            first = wf.add(wj.fetch(0), name="first")
            for n in range(1, count):
                wf.add(wj.fetch(n), after=first, name=f"then-{n}")
            run = await broker.enqueue(wf)
            page = (await c.get(f"/workflows/{run.id}")).text
            assert ('<svg class="workflow-graph"' in page) is drawn
            assert page.count('<a class="node ') == (count if drawn else 0)
            assert page.count('<path class="edge') == (count - 1 if drawn else 0)
            assert ('id="no-graph"' in page) is not drawn
            assert page.count('<tr id="step-') == count
