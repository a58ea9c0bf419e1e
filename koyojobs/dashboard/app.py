"""The dashboard's ASGI app: its pages, its actions and the guard in front of the actions."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import asyncpg
from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from .._text import hidden_characters
from ..errors import PayloadError
from ..models import Status
from ..periodic import run_now
from ..registry import lookup
from . import console, csrf, data, workflow_graph, workflow_page
from .filters import MAX_ID, BadFilterError, JobFilter
from .formatting import age, label_of, payload_repr, size, visible, visible_text, when
from .guard import Guard

if TYPE_CHECKING:
    from ..broker import Broker

__all__ = ["CanAct", "Dashboard"]

CanAct = Callable[[Request], bool | Awaitable[bool]]
"""Decides, per request, whether its user may act (retry, cancel, pause...)."""

_ASSETS = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
_MAX_FORM = 4096  # an action's form holds a token and a name or two
# Inline scripts and styles never run, whatever a value smuggles past escaping.
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
# Pages hold arguments, tracebacks and tokens: no cache, shared or not, keeps them.
_NO_STORE = (b"cache-control", b"no-store")
_SHOWN_PAYLOAD = 1_000_000
"""Bytes of arguments or result the job page loads to show, at most (bigger: its size)."""
_MAX_ID = MAX_ID
# What a filter's matches can undergo at once, by the status filtered on
# (without a status: cancel the unfinished, retry or delete the finished).
_BULK_VERBS: dict[Status | None, tuple[str, ...]] = {
    None: ("retry", "cancel", "delete"),
    Status.READY: ("cancel", "delete"),
    Status.RUNNING: ("cancel",),
    Status.DONE: ("retry", "delete"),
    Status.FAILED: ("retry", "delete"),
    Status.CANCELLED: ("retry", "delete"),
}

_NOTICES = {
    "retried": "The job will run again.",
    "not-retried": "The job was not retried: only finished jobs can be.",
    "cancelled": "The job is cancelled.",
    "not-cancelled": "The job was not cancelled: it had finished already.",
    "paused": "The queue is paused: its workers claim no more jobs.",
    "resumed": "The queue is resumed.",
    "enqueued": "The periodic job was enqueued to run now.",
    "still-running": "Not enqueued: its previous run is still ready or running (skip_if_running).",
    "workflow-cancelled": "The workflow's unfinished steps are cancelled.",
    "not-workflow-cancelled": "Nothing was cancelled: every step had finished already.",
    "bulk-retried": "Retried {count} jobs: they will run again.",
    "bulk-cancelled": "Cancelled {count} jobs.",
    "bulk-deleted": "Deleted {count} jobs.",
    "bulk-none-selected": "No jobs were selected.",
}


class Dashboard:
    """A web dashboard of the jobs, as an ASGI app to mount under any prefix.

    ``broker`` is the :class:`~koyojobs.Broker` it reads through (started by
    its owner, typically in the app's lifespan). ``can_act(request)`` (sync
    or async) decides whether that request's user may retry, cancel, pause,
    resume and run now; by default nobody may, and the pages show no buttons.
    Every action is a POST that also needs the page's anti-forgery token.
    ``show_payloads=True`` shows jobs' arguments and results even when the
    broker does not sign payloads: loading them runs dill, so only do that
    where the table's contents are trusted. ``can_view(request)`` (sync or
    async), if given, must be true for any page to show (else 403): an app's
    dependencies and route guards do not reach a mounted app, so this is
    where its login check goes. ``csrf_key`` shares the token key between
    processes (by default each process draws its own); a token is accepted
    for ``csrf_lifetime`` seconds, from the browser session it was given to.
    ``allowed_hosts`` lists the host names the dashboard answers to
    (``"*.example.com"`` for subdomains); ``None`` (the default) answers to
    any host the enclosing app routes to it, so an app that limits its hosts
    (Starlette's ``TrustedHostMiddleware``, Django's ``ALLOWED_HOSTS``)
    limits the dashboard's. ``basic_auth=(user, password)`` asks every
    request for that login (``koyojobs dashboard --auth`` uses it).

    Example:
        >>> from fastapi import FastAPI
        >>> from koyojobs import Broker
        >>> from koyojobs.dashboard import Dashboard
        >>> broker = Broker("postgresql://localhost/app")
        >>> app = FastAPI()
        >>> app.mount("/jobs", Dashboard(broker, can_act=lambda request: True))
    """

    def __init__(
        self,
        broker: Broker,
        can_act: CanAct | None = None,
        show_payloads: bool = False,
        *,
        can_view: CanAct | None = None,
        csrf_key: bytes | None = None,
        csrf_lifetime: float = csrf.LIFETIME,
        allowed_hosts: Sequence[str] | None = None,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self._checks = Guard(allowed_hosts, basic_auth)
        self._can_view = can_view
        self._indexed = False
        """Whether 0006's indexes were seen: then they are not looked for again."""
        self._console_indexed = False
        self.show_payloads = show_payloads
        self._can_act = can_act
        self._tokens = csrf.TokenMinter(csrf_key, csrf_lifetime)
        self._templates = Environment(
            loader=PackageLoader("koyojobs.dashboard", "templates"),
            autoescape=True,  # every value, in every template
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._templates.filters.update(
            when=when,
            age=age,
            label=label_of,
            visible=visible,
            visible_text=visible_text,
            size=size,
        )
        folder = resources.files(__package__).joinpath("static")
        self._assets = {name: folder.joinpath(name).read_bytes() for name in _ASSETS}
        self._app = Starlette(
            routes=[
                Route("/", self._queues, methods=["GET"]),
                Route("/api/queues", self._queues_json, methods=["GET"]),
                Route("/jobs", self._jobs, methods=["GET"]),
                Route("/jobs/{job_id:int}", self._job, methods=["GET"]),
                Route("/periodic", self._periodic, methods=["GET"]),
                Route("/workflows/{workflow_id:int}", self._workflow, methods=["GET"]),
                Route("/workers", self._workers, methods=["GET"]),
                Route("/charts", self._charts, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/static/{asset}", self._asset, methods=["GET"]),
                # The actions: POST only, so no link, image or redirect can fire one.
                Route("/jobs/{job_id:int}/retry", self._retry, methods=["POST"]),
                Route("/jobs/{job_id:int}/cancel", self._cancel, methods=["POST"]),
                Route("/queues/pause", self._pause, methods=["POST"]),
                Route("/queues/resume", self._resume, methods=["POST"]),
                Route("/periodic/run", self._run_now, methods=["POST"]),
                Route(
                    "/workflows/{workflow_id:int}/cancel", self._cancel_workflow, methods=["POST"]
                ),
                Route("/jobs/bulk", self._bulk, methods=["POST"]),
            ],
            exception_handlers={
                asyncpg.UndefinedTableError: _no_schema,
                asyncpg.UndefinedFunctionError: _no_schema,
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *_SECURITY_HEADERS]
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        refusal = await self._refusal(Request(scope))
        if refusal is not None:
            await refusal(scope, receive, secured)
            return
        await self._app(scope, receive, secured)

    async def _refusal(self, request: Request) -> StarletteResponse | None:
        """The answer to a request that gets no page, if it is one."""
        if not self._checks.host_allowed(request.headers.get("host")):
            return PlainTextResponse("bad request: this dashboard does not serve that host", 400)
        if not self._checks.authenticated(request.headers):
            return PlainTextResponse(
                "log in to see this dashboard",
                401,
                headers={"www-authenticate": 'Basic realm="koyojobs", charset="UTF-8"'},
            )
        if self._can_view is not None and not await _asks(self._can_view, request):
            return PlainTextResponse("forbidden: you may not see this dashboard", 403)
        malformed = self._checks.malformed_query(request.scope)
        if malformed is not None:
            return PlainTextResponse(f"bad request: {malformed}", 400)
        return None

    # -- who may act ------------------------------------------------------------

    async def _may_act(self, request: Request) -> bool:
        """Whether ``can_act`` lets this request's user act (never, without ``can_act``)."""
        return self._can_act is not None and await _asks(self._can_act, request)

    async def _guard(self, request: Request) -> dict[str, str] | StarletteResponse:
        """The action's form if the request may act and carries our token; else a 403."""
        if not await self._may_act(request):
            return PlainTextResponse("forbidden: this dashboard is read-only for you", 403)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return PlainTextResponse("forbidden: an action is a form post with its token", 403)
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > _MAX_FORM:
            return PlainTextResponse("request too large", 413)
        # Read piece by piece: a body sent chunked declares no length, and must
        # not be held whole before it is found too big.
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM:
                return PlainTextResponse("request too large", 413)
        if not self._checks.same_origin(request.headers):
            return PlainTextResponse("forbidden: an action must come from this dashboard", 403)
        try:
            fields = parse_qs(body.decode("utf-8"), errors="strict")
        except (UnicodeDecodeError, ValueError):
            return PlainTextResponse("bad request: the form is not UTF-8", 400)
        # Ticked rows come as one "ids" field each: joined, as they are all digits.
        form = {k: ",".join(v) if k == "ids" else v[0] for k, v in fields.items()}
        refused = self._tokens.check(form.get(csrf.FIELD), self._session(request))
        if refused is not None:
            return PlainTextResponse(f"forbidden: {refused}", 403)
        if any(hidden_characters(k) or hidden_characters(v) for k, v in form.items()):
            return PlainTextResponse("bad request: a form field holds a control character", 400)
        return form

    @staticmethod
    def _session(request: Request, cookie: str | None = None) -> str:
        """Who the request is: its session cookie, its login, the app's user."""
        parts = [cookie or request.cookies.get(csrf.COOKIE, "")]
        # Hashed: the token's MAC covers it; the header itself is never kept.
        login = request.headers.get("authorization", "")
        parts.append(hashlib.sha256(login.encode()).hexdigest() if login else "")
        user = request.scope.get("user")
        if getattr(user, "is_authenticated", False):
            try:
                parts.append(str(user.display_name))  # type: ignore[union-attr]
            except Exception:
                parts.append(repr(user))
        return "\x00".join(parts)

    # -- rendering ------------------------------------------------------------------

    async def _render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        acting = await self._may_act(request)
        session = request.cookies.get(csrf.COOKIE)
        fresh = acting and not session
        token = None
        if acting:
            if fresh:
                session = self._tokens.new_session()
            token = self._tokens.mint(self._session(request, session))
        notice = _NOTICES.get(request.query_params.get("notice", ""))
        count = request.query_params.get("count", "")
        if notice is not None:
            notice = notice.format(count=int(count) if count.isdigit() else "some")
        html = self._templates.get_template(template).render(
            base=_base(request),
            can_act=acting,
            csrf_field=csrf.FIELD,
            csrf_token=token,
            notice=notice,
            **context,
        )
        response = HTMLResponse(html, status_code)
        if fresh:
            assert session is not None
            response.set_cookie(
                csrf.COOKIE,
                session,
                path=_base(request) or "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def _has_console_indexes(self) -> bool:
        if not self._console_indexed:
            self._console_indexed = await data.console_indexed(self.broker)
        return self._console_indexed

    async def _has_indexes(self) -> bool:
        # Built CONCURRENTLY by an operator at any time: looked for until found.
        if not self._indexed:
            self._indexed = await data.indexed(self.broker)
        return self._indexed

    # -- pages ----------------------------------------------------------------------------

    async def _queues(self, request: Request) -> StarletteResponse:
        indexed = await self._has_indexes()
        rows = await data.queue_rows(self.broker, indexed=indexed)
        size = await data.table_size(self.broker)
        return await self._render(
            request,
            "queues.html",
            queues=rows,
            table_size=size,
            bound=data.COUNT_BOUND,
            indexed=indexed,
            live=True,
        )

    async def _queues_json(self, request: Request) -> StarletteResponse:
        rows = await data.queue_rows(self.broker, indexed=await self._has_indexes())
        return JSONResponse({"queues": {row.queue: row.as_json() for row in rows}})

    async def _jobs(self, request: Request) -> StarletteResponse:
        try:
            chosen = JobFilter.read(request.query_params)
        except BadFilterError as exc:
            return PlainTextResponse(str(exc), 400)
        exact = await self._has_console_indexes()
        if exact and chosen.narrows:
            page = await data.exact_page(
                self.broker,
                status=chosen.status,
                queue=chosen.queue,
                name=chosen.name,
                label=chosen.label,
                before=chosen.before,
            )
        else:
            # Unfiltered, the primary key's order is the page (exact); without
            # 0009's indexes, a filter looks through a bounded stretch.
            page = await data.job_page(
                self.broker,
                status=chosen.status,
                queue=chosen.queue,
                name=chosen.name,
                before=chosen.before,
                indexed=await self._has_indexes(),
            )
        return await self._render(
            request,
            "jobs.html",
            page=page,
            statuses=[s.value for s in Status],
            chosen=chosen,
            filters=chosen.fields(),
            older=None if page.older is None else chosen.query(before=page.older),
            exact=exact,
            bulk=_BULK_VERBS.get(chosen.status, ()) if chosen.narrows else (),
        )

    async def _job(self, request: Request) -> StarletteResponse:
        job_id: int = request.path_params["job_id"]
        row = await data.job_row(self.broker, job_id) if job_id <= _MAX_ID else None
        if row is None:
            return await self._render(request, "missing.html", 404, what=f"job {job_id}")
        shown = self.show_payloads or self.broker.serializer.signs
        fields = []
        for column, value in row.items():
            if column in ("last_traceback", "last_error", "waiting", "args_bytes", "result_bytes"):
                continue
            fields.append((column, value))
        arguments = result = None
        if shown:
            raw_args, raw_result = await data.job_payloads(self.broker, job_id, _SHOWN_PAYLOAD)
            arguments = self._payload(row, "args", raw_args)
            result = self._payload(row, "result", raw_result)
        return await self._render(
            request,
            "job.html",
            job=row,
            fields=fields,
            payloads_shown=shown,
            arguments=arguments,
            result=result,
            finished=Status(row["status"]).finished,
        )

    def _payload(self, row: dict[str, Any], column: str, raw: bytes | None) -> str | None:
        stored: int | None = row[f"{column}_bytes"]
        if stored is None:
            return None
        if raw is None:
            return f"(not shown: {size(stored)}, more than a page shows)"
        serializer = self.broker.serializer
        try:
            if column == "args":
                args, kwargs = serializer.load_arguments(raw, row["name"])
                return payload_repr(args) + (f" {payload_repr(kwargs)}" if kwargs else "")
            return payload_repr(serializer.load_result(raw, row["name"]))
        except PayloadError as exc:
            return f"(cannot be shown: {exc})"
        except Exception as exc:  # a payload is anything dill made; say what, never crash
            return f"(cannot be shown: {type(exc).__name__}: {exc})"

    async def _workflow(self, request: Request) -> StarletteResponse:
        workflow_id: int = request.path_params["workflow_id"]
        view = None
        if workflow_id <= _MAX_ID:
            view = await workflow_page.workflow_view(self.broker, workflow_id)
        if view is None:
            return await self._render(request, "missing.html", 404, what=f"workflow {workflow_id}")
        # Drawn only when every step was read and it stays readable.
        small = 0 < view.total <= min(workflow_graph.GRAPH_MOST, len(view.steps))
        graph = workflow_graph.draw(view.steps, _base(request)) if small else None
        return await self._render(
            request, "workflow.html", wf=view, graph=graph, graph_most=workflow_graph.GRAPH_MOST
        )

    async def _cancel_workflow(self, request: Request) -> StarletteResponse:
        form = await self._guard(request)
        if isinstance(form, StarletteResponse):
            return form
        workflow_id: int = request.path_params["workflow_id"]
        done = workflow_id <= _MAX_ID and await self.broker.cancel_workflow(workflow_id) > 0
        notice = "workflow-cancelled" if done else "not-workflow-cancelled"
        return _back(request, f"/workflows/{workflow_id}", notice)

    async def _periodic(self, request: Request) -> StarletteResponse:
        rows = await data.schedule_rows(self.broker)
        return await self._render(request, "periodic.html", schedules=rows)

    async def _asset(self, request: Request) -> StarletteResponse:
        asset: str = request.path_params["asset"]
        if asset not in self._assets:
            return PlainTextResponse("not found", 404)
        return StarletteResponse(
            self._assets[asset],
            media_type=_ASSETS[asset],
            headers={"cache-control": "public, max-age=300"},
        )

    # -- actions ------------------------------------------------------------------------

    async def _workers(self, request: Request) -> StarletteResponse:
        workers = await self.broker.workers()
        return await self._render(request, "workers.html", workers=workers)

    async def _charts(self, request: Request) -> StarletteResponse:
        return await console.charts_page(self, request)

    async def _metrics(self, request: Request) -> StarletteResponse:
        return await console.metrics(self, request)

    async def _bulk(self, request: Request) -> StarletteResponse:
        return await console.bulk_action(self, request)

    async def _retry(self, request: Request) -> StarletteResponse:
        return await self._on_job(request, self.broker.retry_job, "retried")

    async def _cancel(self, request: Request) -> StarletteResponse:
        return await self._on_job(request, self.broker.cancel, "cancelled")

    async def _on_job(
        self, request: Request, act: Callable[[int], Awaitable[bool]], notice: str
    ) -> StarletteResponse:
        form = await self._guard(request)
        if isinstance(form, StarletteResponse):
            return form
        job_id: int = request.path_params["job_id"]
        done = job_id <= _MAX_ID and await act(job_id)
        return _back(request, f"/jobs/{job_id}", notice if done else f"not-{notice}")

    async def _pause(self, request: Request) -> StarletteResponse:
        return await self._flow(request, "pause", "paused")

    async def _resume(self, request: Request) -> StarletteResponse:
        return await self._flow(request, "resume", "resumed")

    async def _flow(self, request: Request, method: str, notice: str) -> StarletteResponse:
        form = await self._guard(request)
        if isinstance(form, StarletteResponse):
            return form
        queue = form.get("queue")
        if not queue:
            return PlainTextResponse(f"cannot {method}: no queue given", 400)
        await (self.broker.pause if method == "pause" else self.broker.resume)(queue)
        return _back(request, "/", notice)

    async def _run_now(self, request: Request) -> StarletteResponse:
        form = await self._guard(request)
        if isinstance(form, StarletteResponse):
            return form
        definition = lookup(form.get("name", ""))
        if definition is None or definition.schedule is None:
            return PlainTextResponse("no periodic job of that name in this process", 404)
        job_id = await run_now(self.broker, definition)
        if job_id is None:
            return _back(request, "/periodic", "still-running")
        return _back(request, f"/jobs/{job_id}", "enqueued")


async def _no_schema(request: Request, exc: Exception) -> StarletteResponse:
    return PlainTextResponse(
        f"the koyojobs schema is missing or behind in this database: run koyojobs migrate ({exc})",
        503,
    )


async def _asks(decide: CanAct, request: Request) -> bool:
    answer = decide(request)
    if inspect.isawaitable(answer):
        answer = await answer
    return answer is True  # a truthy non-bool (a user object, a string) is a bug, not a yes


def _base(request: Request) -> str:
    """Where the dashboard is mounted, as the browser sees it ('' at the root)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _back(request: Request, path: str, notice: str) -> RedirectResponse:
    # 303: the browser follows with a GET, so a reload does not repeat the action.
    return RedirectResponse(f"{_base(request)}{path}?notice={notice}", status_code=303)
