"""Cross-site request forgery: tokens bound to the browser session that received them, expiring.

A page that shows an action gives the browser a session cookie (a random
id, HttpOnly, SameSite=Strict) if it has none, and puts in each form a token:
when it was issued and this dashboard's MAC over that time and the session.
The session is the cookie together with whoever the request says it is (its
``Authorization`` header, the app's authenticated user): a token taken from
one session is refused in another, and a token is refused once older than
the lifetime (the page is reloaded to get a fresh one).

Another site can make a browser send the cookie but can neither read a token
nor mint one (it lacks the key). A site that can plant cookies (a sibling
subdomain, another port of the same host) could plant a session of its own
with its token; its cross-origin POST is then refused by the ``Origin``
check (:mod:`koyojobs.dashboard.guard`), and a login (basic auth, the app's
user) binds the token to the user, which no cookie can forge.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

__all__ = ["COOKIE", "FIELD", "LIFETIME", "TokenMinter"]

COOKIE = "koyojobs_session"
"""The cookie that holds the browser session's id."""
FIELD = "csrf_token"
"""The form field that holds the token."""
LIFETIME = 12 * 3600.0
"""How long a token is accepted, in seconds: a working day's open tab."""


class TokenMinter:
    """Mints and checks tokens under one key (by default a random one per process).

    Example:
        >>> minter = TokenMinter(b"k" * 32, lifetime=60)
        >>> token = minter.mint("session-a", now=1000.0)
        >>> minter.check(token, "session-a", now=1030.0) is None
        True
        >>> minter.check(token, "session-b", now=1030.0)
        'the token belongs to another session'
        >>> minter.check(token, "session-a", now=1061.0)
        'the token expired: reload the page'
    """

    def __init__(self, key: bytes | None = None, lifetime: float = LIFETIME) -> None:
        # Per process by default: a restart only makes open pages fetch a new token.
        self._key = key if key is not None else secrets.token_bytes(32)
        self.lifetime = lifetime

    def _mac(self, issued: str, session: str) -> str:
        message = f"{issued}\x00{session}".encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    @staticmethod
    def new_session() -> str:
        """A fresh session id for the cookie."""
        return secrets.token_urlsafe(24)

    def mint(self, session: str, now: float | None = None) -> str:
        """A token for ``session``, issued ``now``."""
        issued = str(int(time.time() if now is None else now))
        return f"{issued}.{self._mac(issued, session)}"

    def check(self, token: str | None, session: str, now: float | None = None) -> str | None:
        """Why ``token`` is refused for ``session`` (``None``: it is accepted)."""
        if not token or token.count(".") != 1:
            return "missing or malformed anti-forgery token"
        issued, mac = token.split(".")
        if not issued.isdigit() or len(issued) > 12:
            return "missing or malformed anti-forgery token"
        if not hmac.compare_digest(mac, self._mac(issued, session)):
            return "the token belongs to another session"
        age = (time.time() if now is None else now) - int(issued)
        if not -60 <= age <= self.lifetime:  # a minute of clock skew between processes
            return "the token expired: reload the page"
        return None
