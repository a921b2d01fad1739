"""Capacity units DynamoDB reports for each request (``ReturnConsumedCapacity=TOTAL``),
added up per store operation (``append``, ``load``...).

The facade names the operation in flight (:func:`operation_kind`, a context variable,
so concurrent operations never mix); the DynamoDB backend records each answer's
``ConsumedCapacity`` against it. Calls made outside a named operation (subscriptions'
background reads, ``read()`` streams) count as ``other``. A refused transaction
(``TransactionCanceledException``) consumes capacity too, but its answer does not say
how much, so it is not counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

__all__ = [
    "CapacityMeter",
    "Usage",
    "current_kind",
    "current_usage",
    "enter_kind",
    "leave_kind",
    "note_attempt",
    "note_offload",
    "operation_kind",
    "tracking",
    "units_of",
]

_KIND: ContextVar[str] = ContextVar("eventstore_operation", default="other")
_USAGE: ContextVar[Usage | None] = ContextVar("eventstore_usage", default=None)


class Usage:
    """What one operation consumed (what its span reports); a nested operation's usage
    counts in its parent's too."""

    __slots__ = ("attempts", "offloads", "parent", "read", "write")

    def __init__(self, parent: Usage | None = None) -> None:
        self.parent = parent
        self.read = 0.0
        self.write = 0.0
        self.attempts = 0
        self.offloads = 0

    def chain(self) -> Iterator[Usage]:
        usage: Usage | None = self
        while usage is not None:
            yield usage
            usage = usage.parent


@contextmanager
def operation_kind(name: str) -> Iterator[None]:
    """Count DynamoDB capacity consumed inside the block as operation ``name``'s."""
    token = _KIND.set(name)
    try:
        yield
    finally:
        _KIND.reset(token)


@contextmanager
def tracking(usage: Usage) -> Iterator[None]:
    """Add what is consumed inside the block to ``usage`` (and its parents)."""
    token = _USAGE.set(usage)
    try:
        yield
    finally:
        _USAGE.reset(token)


def enter_kind(name: str) -> Token[str]:
    """:func:`operation_kind` without a context manager (a fifth of its cost, for the
    facade's every call); hand the token to :func:`leave_kind`."""
    return _KIND.set(name)


def leave_kind(token: Token[str]) -> None:
    _KIND.reset(token)


def current_usage() -> Usage | None:
    return _USAGE.get()


def note_attempt() -> None:
    """A transaction was sent (for the span in flight, if any)."""
    usage = _USAGE.get()
    if usage is not None:
        for each in usage.chain():
            each.attempts += 1


def note_offload() -> None:
    """A payload was streamed to S3 (for the span in flight, if any)."""
    usage = _USAGE.get()
    if usage is not None:
        for each in usage.chain():
            each.offloads += 1


def current_kind() -> str:
    return _KIND.get()


def units_of(consumed: Any) -> float:
    """Total units of a ``ConsumedCapacity`` answer: one entry, or a list (one per table)."""
    entries = consumed if isinstance(consumed, list) else [consumed]
    total = 0.0
    for entry in entries:
        if isinstance(entry, dict):
            units = entry.get("CapacityUnits")
            if units is None:
                units = entry.get("ReadCapacityUnits", 0) + entry.get("WriteCapacityUnits", 0)
            total += float(units)
    return total


class CapacityMeter:
    """Read and write capacity units consumed, per operation kind."""

    def __init__(self) -> None:
        self.read: defaultdict[str, float] = defaultdict(float)
        self.write: defaultdict[str, float] = defaultdict(float)

    def record(self, consumed: Any, *, write: bool) -> None:
        """Add a ``ConsumedCapacity`` answer (``None`` when DynamoDB sent none)."""
        if consumed is None:
            return
        units = units_of(consumed)
        if not units:
            return
        (self.write if write else self.read)[_KIND.get()] += units
        usage = _USAGE.get()
        if usage is not None:
            for each in usage.chain():
                if write:
                    each.write += units
                else:
                    each.read += units

    def as_dicts(self) -> tuple[dict[str, float], dict[str, float]]:
        return dict(self.read), dict(self.write)
