"""Filtered subscriptions: only change sets of some aggregate types or event types.

Feed entries carry the aggregate type given on the append and the change set's event
type names, so an entry that does not match is skipped without reading its change set.
What an entry does not say (entries written before they carried it, an append that
named no type, events streamed to S3) is found out after reading: the aggregate's head
for its type (once per aggregate per subscription), the change set for its events.

Event type names are the names events are stored under: a Struct's tag (or class
name), a ``RawEvent``'s ``type``. Plain mappings have none, so they never match an
``event_types`` filter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .._errors import InvalidInputError
from .._models import ChangeSet, RawEvent
from .._records import MAX_ENTRY_TYPE_BYTES, FeedEntryRecord

__all__ = [
    "MAX_ENTRY_TYPE_BYTES",
    "FeedFilter",
    "check_type_names",
    "event_type_names",
]


def event_type_names(events: Sequence[Any], event_count: int) -> tuple[str, ...] | None:
    """The distinct type names of ``events``, sorted; None when they are not known
    (streamed events, not kept) or take more than :data:`MAX_ENTRY_TYPE_BYTES`."""
    if len(events) != event_count:
        return None
    names = sorted({name for name in map(_type_name, events) if name is not None})
    if sum(len(name.encode()) for name in names) > MAX_ENTRY_TYPE_BYTES:
        return None
    return tuple(names)


def _type_name(event: Any) -> str | None:
    if isinstance(event, RawEvent):
        return event.type if isinstance(event.type, str) else None
    if isinstance(event, msgspec.Struct):
        tag = type(event).__struct_config__.tag
        return tag if isinstance(tag, str) else type(event).__name__
    return None


def check_type_names(value: Any, argument: str) -> frozenset[str] | None:
    """None, or a non-empty collection of non-empty names (not a bare str).

    Raises:
        InvalidInputError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidInputError(argument, "must be a list or set of type names, or None")
    names = frozenset(value)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise InvalidInputError(argument, "must hold at least one name, each a non-empty str")
    return names


@dataclass(frozen=True, slots=True)
class FeedFilter:
    """Which change sets a subscription delivers (None: any)."""

    aggregate_types: frozenset[str] | None = None
    event_types: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.aggregate_types is None and self.event_types is None

    def by_entry(self, entry: FeedEntryRecord, aggregate_type: str | None) -> bool | None:
        """From the entry alone: deliver (True), skip (False) or read it to know (None).

        ``aggregate_type`` is the aggregate's, looked up when the entry names none.
        """
        if self.aggregate_types is not None and aggregate_type not in self.aggregate_types:
            return False
        if self.event_types is None:
            return True
        if entry.event_types is None:
            return None
        return not self.event_types.isdisjoint(entry.event_types)

    def by_change_set(self, change_set: ChangeSet) -> bool:
        """For an entry that did not say: from the change set's decoded events."""
        if self.event_types is None:
            return True
        return not self.event_types.isdisjoint(map(_type_name, change_set.events))
