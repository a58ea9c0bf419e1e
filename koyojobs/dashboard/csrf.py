"""Cross-site request forgery: a double-submitted token that only this dashboard can mint.

A page that shows an action sets a cookie holding a token and puts the same
token in each form. A POST is accepted only when the form's token equals the
cookie's and carries this dashboard's MAC: another site can make a browser
send the cookie but can neither read it (to copy it into its form) nor mint
one (it lacks the key), even where it can plant cookies (a sibling subdomain).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["COOKIE", "FIELD", "TokenMinter"]

COOKIE = "koyojobs_csrf"
"""The cookie that holds the token."""
FIELD = "csrf_token"
"""The form field that repeats it."""


class TokenMinter:
    """Mints and checks tokens under one key (by default a random one per process).

    Example:
        >>> minter = TokenMinter(b"k" * 32)
        >>> token = minter.mint()
        >>> minter.valid(token), minter.matches(token, token), minter.matches(token, "x")
        (True, True, False)
    """

    def __init__(self, key: bytes | None = None) -> None:
        # Per process by default: a restart only makes open pages fetch a new token.
        self._key = key if key is not None else secrets.token_bytes(32)

    def _mac(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()

    def mint(self) -> str:
        """A fresh token: a random nonce and its MAC."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._mac(nonce)}"

    def valid(self, token: str | None) -> bool:
        """Whether ``token`` was minted under this key."""
        if not token or token.count(".") != 1:
            return False
        nonce, mac = token.split(".")
        return hmac.compare_digest(mac, self._mac(nonce))

    def matches(self, cookie: str | None, field: str | None) -> bool:
        """Whether a POST's cookie and form field hold one token of ours."""
        if cookie is None or field is None:
            return False
        return hmac.compare_digest(cookie.encode(), field.encode()) and self.valid(cookie)
