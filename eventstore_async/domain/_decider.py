"""Decider: how an aggregate's state is made from its events, as plain functions.

``initial() -> S`` is the state of an aggregate with no events; ``evolve(state, event)
-> S`` folds one event in. A command is a third function, ``decide(state) -> events``,
passed to :meth:`Repository.execute`. None of them touches the store, so a unit test
drives a decider with no store at all::

    state = decider.fold(decider.initial(), [Opened(owner="ada"), Deposited(amount=10)])
    assert decide_withdraw(5)(state) == [Withdrawn(amount=5)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import msgspec

from .._errors import EvolveError, InvalidInputError
from .._models import ChangeSet
from .._validation import check_aggregate_type
from .._write.snapshots import check_schema

__all__ = ["Decider", "S"]

S = TypeVar("S")


class Decider(Generic[S]):
    """An aggregate's state as a fold of its events, and how a repository keeps it.

    Args:
        initial: ``initial() -> S``, the state before any event.
        evolve: ``evolve(state, event) -> S``, the state after one more event. It must
            return a new state (or the same one unchanged), never mutate ``state``: a
            cached state is shared by later commands.
        aggregate_type: recorded on aggregates this decider creates; a command on an
            aggregate of another type raises :class:`AggregateTypeMismatchError`.
        snapshot_every: save a snapshot of the state (schema ``snapshot_schema``) at
            every version that is a multiple of it; loads then start from the newest
            one. The state must be a msgspec Struct or a str-keyed mapping.
        snapshot_schema: the snapshots' state schema; change it when the state's shape
            changes, and older snapshots are ignored.
        cache_size: keep the ``(version, state)`` of this many aggregates in the
            process (least recently used evicted); 0 keeps none. Each entry also
            remembers the commit ids of the last 8 change sets it saw, so a retried
            command id is answered without calling ``decide`` (see
            :meth:`Repository.execute`).

    Raises:
        InvalidInputError: an argument is not acceptable.
    """

    __slots__ = (
        "aggregate_type",
        "cache_size",
        "evolve",
        "initial",
        "snapshot_every",
        "snapshot_schema",
    )

    def __init__(
        self,
        initial: Callable[[], S],
        evolve: Callable[[S, Any], S],
        *,
        aggregate_type: str | None = None,
        snapshot_every: int | None = None,
        snapshot_schema: str = "default",
        cache_size: int = 0,
    ) -> None:
        if not callable(initial):
            raise InvalidInputError("initial", "must be a function returning the initial state")
        if not callable(evolve):
            raise InvalidInputError("evolve", "must be a function (state, event) -> state")
        self.initial = initial
        self.evolve = evolve
        self.aggregate_type = check_aggregate_type(aggregate_type)
        self.snapshot_every = _check_optional_count(snapshot_every, "snapshot_every")
        try:
            self.snapshot_schema = check_schema(snapshot_schema)
        except InvalidInputError as exc:
            raise InvalidInputError("snapshot_schema", exc.problem) from None
        self.cache_size = _check_size(cache_size)

    def __repr__(self) -> str:
        name = getattr(self.evolve, "__qualname__", type(self.evolve).__name__)
        return f"Decider(evolve={name}, aggregate_type={self.aggregate_type!r})"

    def fold(self, state: S, events: Iterable[Any]) -> S:
        """``state`` with ``events`` folded in, in order (``evolve`` one at a time)."""
        for event in events:
            state = self.evolve(state, event)
        return state

    # -- what a repository uses -------------------------------------------------------

    def run(self, state: S, decide: Callable[[S], Any]) -> tuple[tuple[Any, ...], S]:
        """Call ``decide`` on ``state``: its events, checked, and the state after them.

        An exception from ``decide`` propagates as is.

        Raises:
            InvalidInputError: ``decide`` returned something that is not events, or
                ``evolve`` failed on one of them.
        """
        events = as_events(decide(state))
        return events, self.fold_new(state, events)

    def fold_new(self, state: S, events: tuple[Any, ...]) -> S:
        """Fold events a command decided; a failure is the command's bad input."""
        for index, event in enumerate(events):
            try:
                state = self.evolve(state, event)
            except Exception as exc:
                raise InvalidInputError(
                    f"events[{index}]",
                    f"the decider cannot evolve a {type(event).__name__}: "
                    f"{type(exc).__name__}: {exc}",
                ) from exc
        return state

    def fold_stored(self, state: S, change_sets: Iterable[ChangeSet]) -> S:
        """Fold stored change sets in; a failure names the aggregate and version."""
        for change_set in change_sets:
            try:
                state = self.fold(state, change_set.events)
            except Exception as exc:
                raise EvolveError(change_set.aggregate_id, change_set.version, exc) from exc
        return state

    def copy_state(self, state: S) -> S:
        """The state a command may start from; deciders never mutate it, so itself."""
        return state

    def to_snapshot(self, state: S) -> Any:
        """What ``save_snapshot`` stores for ``state``."""
        return state

    def from_snapshot(self, stored: Any) -> S:
        """The state back from what :meth:`to_snapshot` stored."""
        return stored  # type: ignore[no-any-return]

    def state_types(self) -> tuple[type[msgspec.Struct], ...]:
        """Struct types to register with the store, so snapshots decode back to them."""
        state = self.initial()
        return (type(state),) if isinstance(state, msgspec.Struct) else ()


def as_events(result: Any) -> tuple[Any, ...]:
    """What ``decide`` returned, as a tuple of events (possibly empty).

    Raises:
        InvalidInputError: not a list, tuple or iterable of events, or an event that is
            neither a msgspec Struct nor a str-keyed mapping.
    """
    if result is None or isinstance(result, str | bytes | bytearray | Mapping | msgspec.Struct):
        raise InvalidInputError(
            "decide",
            "must return a list, tuple or iterable of events (empty for none), "
            f"not {type(result).__name__}",
        )
    if not isinstance(result, Iterable):
        raise InvalidInputError(
            "decide",
            f"must return a list, tuple or iterable of events, not {type(result).__name__}",
        )
    events = tuple(result)
    for index, event in enumerate(events):
        if not isinstance(event, msgspec.Struct | Mapping):
            raise InvalidInputError(
                f"events[{index}]",
                f"must be a msgspec Struct or a str-keyed mapping, not {type(event).__name__}",
            )
    return events


def _check_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError("cache_size", "must be an int >= 0")
    return value


def _check_optional_count(value: Any, argument: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(argument, "must be None or an int >= 1")
    return value
