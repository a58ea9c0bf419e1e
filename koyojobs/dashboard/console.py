"""The console's pages and actions: bulk retry, cancel and delete (confirmed with the count),
charts, and the Prometheus metrics.

A bulk action is two POSTs: the first (from the jobs page: everything its
filter matches, or the rows ticked) shows what would be done and to how many
jobs; the second, from that confirmation, does it in batches
(:mod:`koyojobs.bulk_actions`) and goes back to the jobs page saying how many.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.responses import Response as StarletteResponse

from ..bulk_actions import Selection, count_matching, run_bulk
from ..charts import SPANS, queue_charts
from . import svg
from .data import names_labelled
from .filters import MAX_ID, BadFilterError, JobFilter

if TYPE_CHECKING:
    from .app import Dashboard

__all__ = ["COUNT_SHOWN", "bulk_action", "charts_page", "metrics"]

COUNT_SHOWN = 1_000_000
"""A confirmation counts the matching jobs up to this many."""
_VERBS = {"retry": "Retry", "cancel": "Cancel", "delete": "Delete"}
_DONE = {"retry": "retried", "cancel": "cancelled", "delete": "deleted"}


def _selection(chosen: JobFilter, ids: list[int] | None) -> Selection:
    """The jobs a filter of the jobs page matches (its name and label by prefix)."""
    return Selection(
        statuses=None if chosen.status is None else [chosen.status],
        queue=chosen.queue,
        name_prefix=chosen.name,
        names=None if chosen.label is None else names_labelled(chosen.label),
        ids=ids,
    )


def _ids(text: str | None) -> list[int] | None:
    if not text:
        return None
    parts = text.split(",")
    if len(parts) > 500 or not all(p.isdigit() and int(p) <= MAX_ID for p in parts):
        raise BadFilterError("bad request: ids must be job ids")
    return [int(p) for p in parts]


async def bulk_action(dashboard: Dashboard, request: Request) -> StarletteResponse:
    """``POST /jobs/bulk``: confirm a bulk action with its count, or do the confirmed one."""
    form = await dashboard._guard(request)
    if isinstance(form, StarletteResponse):
        return form
    action, _, scope = form.get("bulk", "").partition("-")
    if action not in _VERBS or scope not in ("selected", "matching"):
        return PlainTextResponse("bad request: no such bulk action", 400)
    try:
        chosen = JobFilter.read(form)
        ids = _ids(form.get("ids")) if scope == "selected" else None
    except BadFilterError as exc:
        return PlainTextResponse(str(exc), 400)
    if scope == "selected" and ids is None:
        return _back_to_jobs(dashboard, request, chosen, "none-selected", 0)
    if scope == "matching" and not chosen.narrows:
        return PlainTextResponse("bad request: a bulk action needs a filter", 400)
    # Ticked rows are acted on as such: the filter only showed them.
    selection = Selection(ids=ids) if scope == "selected" else _selection(chosen, None)
    try:
        selection.statuses_for(action)
    except ValueError as exc:
        return PlainTextResponse(f"bad request: {exc}", 400)
    if form.get("confirmed") != "yes":
        count = await count_matching(dashboard.broker, action, selection, COUNT_SHOWN)
        return await dashboard._render(
            request,
            "confirm.html",
            verb=_VERBS[action],
            bulk=form["bulk"],
            count=count,
            capped=count >= COUNT_SHOWN,
            filters=chosen.fields(),
            ids=form.get("ids", "") if scope == "selected" else "",
            scope=scope,
        )
    done = await run_bulk(dashboard.broker, action, selection)
    return _back_to_jobs(dashboard, request, chosen, _DONE[action], done)


def _back_to_jobs(
    dashboard: Dashboard, request: Request, chosen: JobFilter, notice: str, count: int
) -> RedirectResponse:
    base = request.scope.get("root_path", "").rstrip("/")
    query = chosen.query()
    separator = "&" if query else ""
    return RedirectResponse(
        f"{base}/jobs?{query}{separator}notice=bulk-{notice}&count={count}", status_code=303
    )


async def charts_page(dashboard: Dashboard, request: Request) -> StarletteResponse:
    """``GET /charts?span=hour|day``: per queue, jobs finished and failed, and time waited."""
    span = request.query_params.get("span", "hour")
    if span not in SPANS:
        return PlainTextResponse("bad request: span is hour or day", 400)
    charts = await queue_charts(dashboard.broker, span)
    return await dashboard._render(
        request,
        "charts.html",
        charts=charts,
        span=span,
        spans=list(SPANS),
        unit="minute" if span == "hour" else "10 minutes",
        throughput=svg.throughput,
        waiting=svg.waiting,
    )


async def metrics(dashboard: Dashboard, request: Request) -> StarletteResponse:
    """``GET /metrics``: the queues' depth and oldest wait, in Prometheus' exposition format."""
    try:
        from .. import metrics as prometheus
    except ImportError as exc:
        return PlainTextResponse(
            f"metrics need the extra: pip install 'koyojobs[metrics]' ({exc})", 501
        )
    body = await prometheus.queue_exposition(dashboard.broker)
    return StarletteResponse(body, media_type=prometheus.CONTENT_TYPE)
