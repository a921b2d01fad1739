"""DynamoDB's ``ClientRequestToken`` idempotency for ``TransactWriteItems``.

A token that made a transaction succeed is remembered for ten minutes with a digest of
the request's other parameters. Within that window the same token with the same
parameters succeeds again without applying anything; with other parameters it is
``IdempotentParameterMismatchException``. After the window the token is new again. A
transaction that failed leaves nothing behind: its retry runs as a new request (nothing
was written, so there is nothing to protect).

The emulator holds its global lock across the check, the transaction and the
:meth:`RequestTokens.remember`, so two requests with one token never race.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal

#: How long DynamoDB keeps a client request token.
TOKEN_TTL_SECONDS = 600.0

Verdict = Literal["new", "replay", "mismatch"]


def parameters_digest(params: Mapping[str, Any]) -> str:
    """A digest of the request's parameters other than the token itself."""
    rest = {k: v for k, v in params.items() if k != "ClientRequestToken"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), default=_encode_bytes)
    return hashlib.sha256(text.encode()).hexdigest()


def _encode_bytes(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return "b64:" + base64.b64encode(value).decode("ascii")
    return f"{type(value).__name__}:{value!r}"  # anything else a parser may produce


class RequestTokens:
    """The tokens of successful transactions of the last ``ttl`` seconds."""

    def __init__(
        self, ttl: float = TOKEN_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        # token -> (digest, time remembered); insertion order is time order
        self._known: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._known)

    def check(self, token: str, digest: str) -> Verdict:
        """``new`` (apply it), ``replay`` (succeed, apply nothing) or ``mismatch``."""
        self._expire()
        known = self._known.get(token)
        if known is None:
            return "new"
        return "replay" if known[0] == digest else "mismatch"

    def remember(self, token: str, digest: str) -> None:
        """Record that the transaction with this token and digest succeeded."""
        self._known[token] = (digest, self._clock())
        self._known.move_to_end(token)

    def clear(self) -> None:
        """Forget every token (the emulator's reset)."""
        self._known.clear()

    def entries(self) -> list[tuple[str, str, float]]:
        """The live tokens as ``(token, digest, time remembered)``, oldest first."""
        self._expire()
        return [(token, digest, at) for token, (digest, at) in self._known.items()]

    def load(self, entries: list[tuple[str, str, float]]) -> None:
        """Remember ``entries`` (from :meth:`entries`) in place of what is known."""
        self._known = OrderedDict((token, (digest, at)) for token, digest, at in entries)
        self._expire()

    def _expire(self) -> None:
        horizon = self._clock() - self._ttl
        while self._known:
            token, (_, at) = next(iter(self._known.items()))
            if at > horizon:
                return
            del self._known[token]
