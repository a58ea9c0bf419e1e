"""Arguments and results to bytes and back: dill, optionally signed.

dill runs code when it loads, so a payload is code. With a secret, every
payload carries an HMAC-SHA256 over what it is for (arguments or result, of
which job name) and its bytes, checked before anything is unpickled; a payload
that fails the check is never loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any, Literal

import dill  # type: ignore[import-untyped]

from .errors import PayloadError, SerializationError, describe

__all__ = ["Secret", "Serializer", "dump_arguments"]

Secret = str | bytes
_Kind = Literal["arguments", "result"]

_SIGNED = b"KJS2"
_UNBOUND = b"KJS1"
"""The first format: its MAC covered the body only, so a payload fit any row."""
_MAC_SIZE = hashlib.sha256().digest_size
_HEADER_SIZE = len(_SIGNED) + _MAC_SIZE
_KIND_TAGS: dict[_Kind, bytes] = {"arguments": b"A", "result": b"R"}


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


def _keys(secrets: Sequence[Secret]) -> list[bytes]:
    keys = []
    for index, secret in enumerate(secrets):
        if not isinstance(secret, str | bytes):
            raise TypeError(
                f"secret keys must be str or bytes, got {type(secret).__name__} at index {index}"
            )
        if not secret:
            raise ValueError(
                f"secret has an empty key at index {index}: an empty key signs nothing "
                "(None runs unsigned)"
            )
        keys.append(secret.encode() if isinstance(secret, str) else secret)
    return keys


class Serializer:
    """Turns arguments and results into payload bytes and back.

    ``secrets`` lists the keys a payload may be signed with: the first signs,
    any of them verifies (so old keys can be kept during a rotation). With
    none, payloads are plain dill and nothing is verified. A signature binds
    a payload to its job name and to its kind: arguments signed for one job
    do not verify as another job's, nor as a result.

    Example:
        >>> s = Serializer(["new-key", "old-key"])
        >>> s.load_result(s.dump_result({"a": 1}, "app.f"), "app.f")
        {'a': 1}
        >>> try:
        ...     s.load_result(s.dump_result({"a": 1}, "app.f"), "app.g")
        ... except PayloadError as exc:
        ...     print(exc)
        bad signature: no known key signed this payload as the result of job 'app.g'
    """

    def __init__(self, secrets: Sequence[Secret] = ()) -> None:
        self._keys = _keys(secrets)

    @classmethod
    def from_options(cls, secret: Secret | Sequence[Secret] | None) -> Serializer:
        """Build from a ``Broker(secret=...)`` value, falling back to ``KOYOJOBS_SECRET``.

        ``KOYOJOBS_SECRET`` holds one key or several, comma-separated
        (``"new,old"``): the first signs, every one is accepted.

        An empty key, an empty list, or ``KOYOJOBS_SECRET`` set to the empty
        string is an error: each would turn signing off without a word (think
        ``secret=os.environ.get("KEY", "")`` with the variable missing).
        Unset the variable, or pass ``None``, to run unsigned.

        Example:
            >>> Serializer.from_options(["new", "old"]).signs
            True
            >>> Serializer.from_options("")
            Traceback (most recent call last):
            ...
            ValueError: secret='' is empty: an empty key signs nothing (None runs unsigned)
        """
        if secret is None:
            from_env = os.environ.get("KOYOJOBS_SECRET")
            if from_env is None:
                return cls()
            if not from_env:
                raise ValueError(
                    "KOYOJOBS_SECRET is set but empty: set it to a key, or unset it to run unsigned"
                )
            keys = from_env.split(",")
            if not all(keys):
                raise ValueError(
                    "KOYOJOBS_SECRET has an empty key: give keys separated by single commas "
                    "(the first signs)"
                )
            return cls(keys)
        if isinstance(secret, str | bytes):
            if not secret:
                raise ValueError(
                    f"secret={secret!r} is empty: an empty key signs nothing (None runs unsigned)"
                )
            return cls([secret])
        if not isinstance(secret, list | tuple):
            raise TypeError(
                f"secret must be a str or bytes key or a list of keys, got {type(secret).__name__}"
            )
        if not secret:
            raise ValueError("secret is an empty list: give at least one key (None runs unsigned)")
        return cls(secret)

    @property
    def signs(self) -> bool:
        """Whether payloads are signed and verified."""
        return bool(self._keys)

    def sign_arguments(self, body: bytes, job: str) -> bytes:
        """Sign pickled ``(args, kwargs)`` made elsewhere (job calls pickle them early) for ``job``.

        Example:
            >>> s = Serializer(["k"])
            >>> s.load_arguments(s.sign_arguments(to_bytes(((1,), {"b": 2})), "app.f"), "app.f")
            ((1,), {'b': 2})
        """
        return self._sign("arguments", job, body)

    def load_arguments(self, payload: bytes, job: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Read ``job``'s arguments back; :class:`PayloadError` says why they cannot be.

        Anything but a pair of a tuple (or list) and a dict with str keys is
        an error, checked on exact types: a subclass could run code when it
        is unpacked or compared.

        Example:
            >>> try:
            ...     Serializer().load_arguments(to_bytes(None), "app.f")
            ... except PayloadError as exc:
            ...     print(exc)
            arguments of job 'app.f' are not an (args, kwargs) pair: got NoneType
        """
        value = self._load("arguments", job, payload)
        if type(value) is not tuple or len(value) != 2:
            raise PayloadError(
                f"arguments of job {job!r} are not an (args, kwargs) pair: got {_shape(value)}"
            )
        args, kwargs = value
        if type(args) is not tuple and type(args) is not list:
            raise PayloadError(
                f"arguments of job {job!r}: args is {_shape(args)}, not a tuple or list"
            )
        if type(kwargs) is not dict:
            raise PayloadError(f"arguments of job {job!r}: kwargs is {_shape(kwargs)}, not a dict")
        for key in kwargs:
            if type(key) is not str:
                raise PayloadError(
                    f"arguments of job {job!r}: kwargs has a key of type "
                    f"{type(key).__name__}, not str"
                )
        return tuple(args), kwargs

    def dump_result(self, value: Any, job: str) -> bytes:
        """Serialize and sign ``job``'s return value; raises whatever dill raises for it."""
        return self._sign("result", job, to_bytes(value))

    def load_result(self, payload: bytes, job: str) -> Any:
        """Read ``job``'s result back; :class:`PayloadError` says why it cannot be."""
        return self._load("result", job, payload)

    def _sign(self, kind: _Kind, job: str, body: bytes) -> bytes:
        if not self._keys:
            return body
        return _SIGNED + self._mac(self._keys[0], kind, job, body) + body

    @staticmethod
    def _mac(key: bytes, kind: _Kind, job: str, body: bytes) -> bytes:
        # Length-prefixed name: no two (kind, name, body) share a message.
        name = job.encode("utf-8", "surrogatepass")
        mac = hmac.new(key, _SIGNED + _KIND_TAGS[kind], hashlib.sha256)
        mac.update(len(name).to_bytes(4, "big") + name)
        mac.update(body)
        return mac.digest()

    def _load(self, kind: _Kind, job: str, payload: bytes) -> Any:
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise PayloadError(f"cannot deserialize payload: expected bytes, got {_shape(payload)}")
        body = self._verified(kind, job, bytes(payload))
        try:
            return dill.loads(body)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a payload's SystemExit must not end the worker
            raise PayloadError(f"cannot deserialize payload: {describe(exc)}") from None

    def _verified(self, kind: _Kind, job: str, payload: bytes) -> bytes:
        signed = payload.startswith((_SIGNED, _UNBOUND))
        if not self._keys:
            # No key: the database is trusted as it is; a signature is just skipped.
            return payload[_HEADER_SIZE:] if signed else payload
        if payload.startswith(_UNBOUND):
            raise PayloadError(
                "bad signature: payload is signed in the KJS1 format, which predates "
                "binding payloads to their job; enqueue the job again"
            )
        if not signed:
            raise PayloadError("bad signature: payload is not signed")
        mac = payload[len(_SIGNED) : _HEADER_SIZE]
        body = payload[_HEADER_SIZE:]
        for key in self._keys:
            if hmac.compare_digest(mac, self._mac(key, kind, job, body)):
                return body
        what = "the arguments" if kind == "arguments" else "the result"
        raise PayloadError(
            f"bad signature: no known key signed this payload as {what} of job {job!r}"
        )


def _shape(value: object) -> str:
    if type(value) is tuple or type(value) is list:
        return f"a {type(value).__name__} of length {len(value)}"
    return type(value).__name__


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
