"""What the dashboard checks before any page: the ``Host``, the login, the query's bytes; and
before any action, the ``Origin``.

- ``Host``: a browser led to the dashboard by a name the attacker controls
  (DNS rebinding: ``attacker.example`` resolving to 127.0.0.1) sends that
  name; only the names in ``allowed_hosts`` are served.
- ``Origin``: a POST a browser sends from another origin (another site,
  another port of the same host) says so, and is refused.
- Basic auth: the standalone server's login (``koyojobs dashboard --auth``).
- Query input that no page can mean (a NUL, a control character, bytes that
  are not UTF-8) is a 400, never a database error.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import Headers
from starlette.types import Scope

from .._text import hidden_characters

__all__ = ["LOCAL_HOSTS", "Guard", "host_of"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
"""The names ``koyojobs dashboard`` answers to besides its bound address."""


def host_of(value: str) -> str | None:
    """The host name of a ``Host`` header (no port, no brackets, lower case); ``None`` if malformed.

    Example:
        >>> host_of("Example.com:8080"), host_of("[::1]:80"), host_of("a b")
        ('example.com', '::1', None)
    """
    try:
        parts = urlsplit(f"//{value}")
        host = parts.hostname
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return None
    if not host or any(c.isspace() or c in "/\\@?#" for c in value):
        return None
    return host.lower()


class Guard:
    """The checks, configured once per dashboard.

    ``allowed_hosts`` lists host names (``"*.example.com"`` matches its
    subdomains, ``"*"`` any); ``None`` serves any host the enclosing app
    routes to it. ``basic_auth`` is ``(user, password)`` or ``None``.

    Example:
        >>> guard = Guard(["localhost", "*.example.com"], None)
        >>> guard.host_allowed("localhost:8080"), guard.host_allowed("ops.example.com")
        (True, True)
        >>> guard.host_allowed("attacker.example")
        False
    """

    def __init__(
        self, allowed_hosts: Sequence[str] | None, basic_auth: tuple[str, str] | None
    ) -> None:
        if isinstance(allowed_hosts, str):
            raise TypeError("allowed_hosts is a list of host names, not one string")
        self.allowed_hosts = None if allowed_hosts is None else [h.lower() for h in allowed_hosts]
        if basic_auth is not None:
            user, password = basic_auth
            if not user or ":" in user or not password:
                raise ValueError("basic_auth is (user, password): both non-empty, no ':' in user")
        self._auth = basic_auth

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header may be served."""
        host = None if header is None else host_of(header)
        if host is None:
            return False
        if self.allowed_hosts is None:
            return True
        for pattern in self.allowed_hosts:
            pattern = pattern.strip("[]")
            if pattern == "*" or host == pattern:
                return True
            if pattern.startswith("*.") and host.endswith(pattern[1:]):
                return True
        return False

    def authenticated(self, headers: Headers) -> bool:
        """Whether the request carries the basic-auth login (always, without one)."""
        if self._auth is None:
            return True
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded, validate=True).decode("utf-8")
        except ValueError:
            return False
        expected = f"{self._auth[0]}:{self._auth[1]}"
        return hmac.compare_digest(given.encode(), expected.encode())

    @staticmethod
    def malformed_query(scope: Scope) -> str | None:
        """Why the query string can mean nothing (``None``: it is fine)."""
        raw: bytes = scope.get("query_string", b"")
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            return "the query string is not UTF-8"
        for key, value in pairs:
            if hidden_characters(key) or hidden_characters(value):
                return f"the query parameter {key!r} holds a control character"
        return None

    @staticmethod
    def same_origin(headers: Headers) -> bool:
        """Whether a POST comes from the page's own origin.

        A browser sends ``Origin`` with every cross-origin POST (and modern
        ones with same-origin ones too); a request without it is not a
        browser's cross-site form, and still needs its token.
        """
        origin = headers.get("origin")
        if origin is None:
            referer = headers.get("referer")
            if referer is None:
                return True
            origin = referer
        if origin == "null":  # a sandboxed frame, a data: URL: never ours
            return False
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        # A proxy may send its own name as Host and the browser's in
        # X-Forwarded-Host; a cross-site form can set neither header.
        hosts = [headers.get("host", "")]
        hosts += [h.strip() for h in headers.get("x-forwarded-host", "").split(",") if h.strip()]
        origin_netloc = _netloc(parts.scheme, parts.netloc)
        return any(origin_netloc == _netloc(parts.scheme, host) for host in hosts)


def _netloc(scheme: str, netloc: str) -> str:
    # The Host header and the Origin differ in whether a default port is written.
    netloc = netloc.lower()
    default = ":443" if scheme == "https" else ":80"
    return netloc[: -len(default)] if netloc.endswith(default) else netloc
