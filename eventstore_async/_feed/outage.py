"""Holding on through a backend outage: how a subscription waits for the store to answer.

A subscription is long-lived: a few seconds of throttling, timeouts or refused
connections (``StorageUnavailableError``) must not end it. Its reads, saves and lease
renewals retry those with full-jitter backoff, capped low enough that it notices the
backend is back within about a second or two; any other error is not retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from .._errors import StorageUnavailableError
from .._retry import full_jitter

__all__ = ["OutageBackoff", "hold_on"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class OutageBackoff:
    """Full-jitter waits from ``base`` doubling to ``cap`` seconds, with no end."""

    base: float = 0.05
    cap: float = 2.0

    def seconds(self, attempt: int) -> float:
        """The wait before retry ``attempt`` (0-based)."""
        return full_jitter(min(attempt, 32), self.base, self.cap)


async def hold_on(call: Callable[[], Awaitable[_T]], backoff: OutageBackoff) -> _T:
    """``await call()`` until it no longer raises ``StorageUnavailableError``.

    Raises:
        Whatever else ``call`` raises, at once (cancellation included).
    """
    attempt = 0
    while True:
        try:
            return await call()
        except StorageUnavailableError:
            await anyio.sleep(backoff.seconds(attempt))
            attempt += 1
