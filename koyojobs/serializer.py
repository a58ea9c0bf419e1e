"""Arguments and results to bytes and back: dill, optionally signed.

dill runs code when it loads, so a payload is code. With a secret, every
payload carries an HMAC-SHA256 over its bytes, checked before anything is
unpickled; a payload that fails the check is never loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import dill  # type: ignore[import-untyped]

from .errors import PayloadError, SerializationError

__all__ = ["Secret", "Serializer", "dump_arguments"]

Secret = str | bytes
_SIGNED = b"KJS1"
_MAC_SIZE = hashlib.sha256().digest_size


def to_bytes(obj: Any) -> bytes:
    """Pickle ``obj``: the standard pickler when it can, dill when it must.

    The standard pickler is twenty times faster, and dill reads what it
    writes. It cannot pickle lambdas or closures (dill can), and it pickles
    what ``__main__`` defines by reference, which a worker cannot resolve
    (dill pickles it by value): both go to dill, which follows only the
    globals a function uses (``recurse``), not its whole module.

    Example:
        >>> import dill
        >>> dill.loads(to_bytes(lambda x: x + 1))(1)
        2
    """
    try:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return bytes(dill.dumps(obj, recurse=True))
    if b"__main__" in data:
        return bytes(dill.dumps(obj, recurse=True))
    return data


def _key(secret: Secret) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


class Serializer:
    """Turns objects into payload bytes and back.

    ``secrets`` lists the keys a payload may be signed with: the first signs,
    any of them verifies (so old keys can be kept during a rotation). With
    none, payloads are plain dill and nothing is verified.

    Example:
        >>> s = Serializer(["new-key", "old-key"])
        >>> s.loads(s.dumps({"a": 1}))
        {'a': 1}
    """

    def __init__(self, secrets: Sequence[Secret] = ()) -> None:
        self._keys = [_key(s) for s in secrets if s]

    @classmethod
    def from_options(cls, secret: Secret | Sequence[Secret] | None) -> Serializer:
        """Build from a ``Broker(secret=...)`` value, falling back to ``KOYOJOBS_SECRET``."""
        if secret is None:
            secret = os.environ.get("KOYOJOBS_SECRET") or None
        if secret is None:
            return cls()
        if isinstance(secret, str | bytes):
            return cls([secret])
        return cls(list(secret))

    @property
    def signs(self) -> bool:
        """Whether payloads are signed and verified."""
        return bool(self._keys)

    def dumps(self, obj: Any) -> bytes:
        """Serialize and sign ``obj``; raises whatever dill raises for what it cannot pickle."""
        return self.sign(to_bytes(obj))

    def sign(self, body: bytes) -> bytes:
        """Sign dill bytes made elsewhere (job calls pickle their arguments early)."""
        if not self._keys:
            return body
        mac = hmac.new(self._keys[0], body, hashlib.sha256).digest()
        return _SIGNED + mac + body

    def loads(self, payload: bytes) -> Any:
        """Deserialize ``payload``; :class:`PayloadError` says why it cannot be."""
        body = self._verified(bytes(payload))
        try:
            return dill.loads(body)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a payload's SystemExit must not end the worker
            raise PayloadError(f"cannot deserialize payload: {type(exc).__name__}: {exc}") from exc

    def _verified(self, payload: bytes) -> bytes:
        signed = payload.startswith(_SIGNED)
        if not self._keys:
            # No key: the database is trusted as it is; a signature is just skipped.
            return payload[len(_SIGNED) + _MAC_SIZE :] if signed else payload
        if not signed:
            raise PayloadError("bad signature: payload is not signed")
        mac = payload[len(_SIGNED) : len(_SIGNED) + _MAC_SIZE]
        body = payload[len(_SIGNED) + _MAC_SIZE :]
        for key in self._keys:
            if hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
                return body
        raise PayloadError("bad signature: no known key signed this payload")


def dump_arguments(
    job_name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> bytes:
    """Pickle a call's arguments (unsigned), naming the argument that cannot be pickled.

    Example:
        >>> import sqlite3
        >>> def f(conn): ...
        >>> dump_arguments("m.f", f, (sqlite3.connect(":memory:"),), {})
        Traceback (most recent call last):
        ...
        koyojobs.errors.SerializationError: argument 'conn' of job 'm.f' cannot be serialized: ...
    """
    try:
        return to_bytes((args, kwargs))
    except Exception as whole:
        for label, value in _named_arguments(fn, args, kwargs):
            try:
                dill.dumps(value)
            except Exception as exc:
                raise SerializationError(
                    f"argument {label!r} of job {job_name!r} cannot be serialized: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        raise SerializationError(
            f"arguments of job {job_name!r} cannot be serialized: {type(whole).__name__}: {whole}"
        ) from whole


def _named_arguments(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[str, Any]]:
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return [(f"#{i}", v) for i, v in enumerate(args)] + list(kwargs.items())
    named: list[tuple[str, Any]] = []
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            named.extend((f"{name}[{i}]", v) for i, v in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            named.extend(value.items())
        else:
            named.append((name, value))
    return named
