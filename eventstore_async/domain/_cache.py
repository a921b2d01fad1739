"""The per-process state cache of a repository: an LRU of ``(version, state)`` per id.

States go in and come out through the decider's ``copy_state`` (a deep copy for an
:class:`Aggregate`, the state itself for a decider's immutable states), so an object a
caller got from ``get`` or ``execute`` and changed is never what the next command
decides on."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Loaded", "StateCache"]

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Loaded(Generic[S]):
    """An aggregate's state at ``version`` (0 and the initial state when it does not exist)."""

    state: S
    version: int


class StateCache(Generic[S]):
    """At most ``size`` entries, the least recently used evicted first; size 0 keeps none."""

    def __init__(self, size: int, copy: Callable[[S], S] = lambda state: state) -> None:
        self._size = size
        self._copy = copy
        self._entries: OrderedDict[str, Loaded[S]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, aggregate_id: str) -> Loaded[S] | None:
        entry = self._entries.get(aggregate_id)
        if entry is None:
            return None
        self._entries.move_to_end(aggregate_id)
        return Loaded(self._copy(entry.state), entry.version)

    def put(self, aggregate_id: str, loaded: Loaded[S]) -> None:
        """Keep ``loaded`` unless an entry at a later version is already there."""
        if not self._size:
            return
        known = self._entries.get(aggregate_id)
        if known is not None and known.version > loaded.version:
            return
        self._entries[aggregate_id] = Loaded(self._copy(loaded.state), loaded.version)
        self._entries.move_to_end(aggregate_id)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
