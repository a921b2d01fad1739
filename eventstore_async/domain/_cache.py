"""The per-process state cache of a repository: an LRU of ``(version, state)`` per id.

States go in and come out through the decider's ``copy_state`` (a deep copy for an
:class:`Aggregate`, the state itself for a decider's immutable states), so an object a
caller got from ``get`` or ``execute`` and changed is never what the next command
decides on.

Each entry also remembers where the last :data:`SEEN_PER_AGGREGATE` commit ids it saw
landed (change sets this repository committed with a command id, or folded in when it
caught up), and the change set at the cached version when this repository committed it
with a command id. A retry of one of those commands is then recognised with no request
and without calling ``decide``. The record goes with the entry when it is evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from .._models import ChangeSet

__all__ = ["SEEN_PER_AGGREGATE", "Known", "Loaded", "Seen", "StateCache", "landed_in", "seen_with"]

S = TypeVar("S")

#: How many (commit id, version) pairs a cached aggregate keeps: a retry is recognised
#: in the process when fewer than this many change sets landed on the aggregate after it.
SEEN_PER_AGGREGATE = 8

Seen = tuple[tuple[str, int], ...]
"""(commit id, version) of the change sets seen on an aggregate, oldest first."""


@dataclass(frozen=True, slots=True)
class Loaded(Generic[S]):
    """An aggregate's state at ``version`` (0 and the initial state when it does not exist)."""

    state: S
    version: int


@dataclass(frozen=True, slots=True)
class Known(Loaded[S]):
    """A state with what is known of the commit ids that landed on the aggregate:
    ``seen``, and ``change_set``, the change set at ``version`` when it is kept."""

    seen: Seen = ()
    change_set: ChangeSet | None = None


def seen_with(seen: Seen, change_sets: Iterable[ChangeSet]) -> Seen:
    """``seen`` and these change sets' commit ids, the newest :data:`SEEN_PER_AGGREGATE`."""
    return _merged(seen, tuple((cs.commit_id, cs.version) for cs in change_sets))


def landed_in(known: Loaded[Any], commit_id: str | None) -> int | None:
    """The version ``commit_id`` landed at, if ``known`` saw it (no request)."""
    if commit_id is None or not isinstance(known, Known):
        return None
    for seen_id, version in reversed(known.seen):
        if seen_id == commit_id:
            return version
    return None


class StateCache(Generic[S]):
    """At most ``size`` entries, the least recently used evicted first; size 0 keeps none."""

    def __init__(self, size: int, copy: Callable[[S], S] = lambda state: state) -> None:
        self._size = size
        self._copy = copy
        self._entries: OrderedDict[str, Known[S]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, aggregate_id: str) -> Known[S] | None:
        """The entry (its state a copy), now the most recently used."""
        entry = self._entries.get(aggregate_id)
        if entry is None:
            return None
        self._entries.move_to_end(aggregate_id)
        return Known(self._copy(entry.state), entry.version, entry.seen, entry.change_set)

    def peek(self, aggregate_id: str) -> Loaded[S] | None:
        """The entry's state (a copy) and version, leaving the LRU order as it is."""
        entry = self._entries.get(aggregate_id)
        return None if entry is None else Loaded(self._copy(entry.state), entry.version)

    def put(self, aggregate_id: str, loaded: Loaded[S]) -> None:
        """Keep ``loaded`` unless an entry at a later version is already there; what
        ``loaded`` saw of the commit ids (a :class:`Known`) is added either way."""
        if not self._size:
            return
        known = self._entries.get(aggregate_id)
        seen = loaded.seen if isinstance(loaded, Known) else ()
        change_set = loaded.change_set if isinstance(loaded, Known) else None
        if known is not None:
            seen = _merged(known.seen, seen)
            if known.version > loaded.version:
                self._entries[aggregate_id] = replace(known, seen=seen)
                return
            if known.version == loaded.version and change_set is None:
                change_set = known.change_set
        self._entries[aggregate_id] = Known(
            self._copy(loaded.state), loaded.version, seen, _at(change_set, loaded.version)
        )
        self._entries.move_to_end(aggregate_id)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)


def _merged(old: Seen, new: Seen) -> Seen:
    """Both, by version, the newest :data:`SEEN_PER_AGGREGATE` kept."""
    if not new or new is old:
        return old
    pairs = dict(old)
    pairs.update(new)
    return tuple(sorted(pairs.items(), key=lambda pair: pair[1])[-SEEN_PER_AGGREGATE:])


def _at(change_set: ChangeSet | None, version: int) -> ChangeSet | None:
    return change_set if change_set is not None and change_set.version == version else None
