"""The class-based face: aggregates written as objects whose methods record events.

::

    class Account(Aggregate):
        aggregate_type = "account"

        def __init__(self) -> None:
            super().__init__()
            self.balance = 0

        def withdraw(self, amount: int) -> None:      # a command: check, then record
            if amount > self.balance:
                raise Refused("overdraft")
            self.record(Withdrawn(amount=amount))

        @applies(Withdrawn)                            # or a method named on_Withdrawn
        def _withdrawn(self, event: Withdrawn) -> None:
            self.balance -= event.amount

    await store.repository(Account).execute("acct-1", lambda account: account.withdraw(10))

The repository turns the class into a :class:`Decider`: ``initial`` is ``cls()``,
``evolve`` calls the event's handler. A command runs on a deep copy of the cached
object, so a command that fails leaves the cached one untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from .._errors import InvalidInputError
from ._decider import Decider

__all__ = ["Aggregate", "applies"]

A = TypeVar("A", bound="Aggregate")
F = TypeVar("F", bound=Callable[..., Any])

_HANDLES = "__eventstore_applies__"
_PENDING = "_pending_events"


def applies(*event_types: type) -> Callable[[F], F]:
    """Mark an :class:`Aggregate` method as the handler of these event types: it
    changes the object's attributes from one event, and nothing else."""
    if not event_types or not all(isinstance(t, type) for t in event_types):
        raise InvalidInputError("event_types", "must name one or more event classes")

    def mark(method: F) -> F:
        setattr(method, _HANDLES, event_types)
        return method

    return mark


class Aggregate:
    """Base class of aggregates written as objects (see the module docstring).

    Class attributes configure the repository as :class:`Decider`'s arguments do:
    ``aggregate_type``, ``snapshot_every``, ``snapshot_schema``, ``cache_size``.
    ``__init__`` must take no arguments (it makes the state of a new aggregate).
    Handlers are methods marked with :func:`applies` or named ``on_<EventClass>``.
    Snapshots store the instance's attributes as a mapping, so with ``snapshot_every``
    they must be msgspec-encodable and come back as decoded (lists, dicts, scalars).
    """

    aggregate_type: ClassVar[str | None] = None
    snapshot_every: ClassVar[int | None] = None
    snapshot_schema: ClassVar[str] = "default"
    cache_size: ClassVar[int] = 0
    _handlers: ClassVar[dict[type, str]] = {}

    def __init__(self) -> None:
        setattr(self, _PENDING, [])

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type, str] = {}
        for klass in reversed(cls.__mro__):
            for name, member in vars(klass).items():
                for event_type in getattr(member, _HANDLES, ()):
                    handlers[event_type] = name
        cls._handlers = handlers

    def record(self, event: Any) -> None:
        """Apply ``event`` to this object (its handler) and add it to the command's
        change set.

        Raises:
            InvalidInputError: the class has no handler for the event's type.
        """
        self._apply(event)
        pending: list[Any] = self.__dict__.setdefault(_PENDING, [])
        pending.append(event)

    def _apply(self, event: Any) -> None:
        handler = self._handler(type(event))
        if handler is None:
            raise InvalidInputError(
                "event", f"{type(self).__name__} has no handler for {type(event).__name__}"
            )
        handler(event)

    def _handler(self, event_type: type) -> Callable[[Any], Any] | None:
        for klass in event_type.__mro__:
            name = self._handlers.get(klass)
            if name is not None:
                return getattr(self, name)  # type: ignore[no-any-return]
        by_name = getattr(self, f"on_{event_type.__name__}", None)
        return by_name if callable(by_name) else None

    def _take_pending(self) -> tuple[Any, ...]:
        pending = tuple(self.__dict__.get(_PENDING, ()))
        setattr(self, _PENDING, [])
        return pending

    @classmethod
    def __decider__(cls: type[A]) -> Decider[A]:
        """The decider the repository uses (one per class)."""
        known = cls.__dict__.get("_decider_of_class")
        if not isinstance(known, _AggregateDecider):
            known = _AggregateDecider(cls)
            type.__setattr__(cls, "_decider_of_class", known)
        return known


class _AggregateDecider(Decider[A]):
    """An Aggregate class as a decider: evolve mutates the object it is given (always a
    copy the repository made), a command's events are the ones it recorded."""

    __slots__ = ("_cls",)

    def __init__(self, cls: type[A]) -> None:
        super().__init__(
            cls,
            _evolve,
            aggregate_type=cls.aggregate_type,
            snapshot_every=cls.snapshot_every,
            snapshot_schema=cls.snapshot_schema,
            cache_size=cls.cache_size,
        )
        self._cls = cls

    def __repr__(self) -> str:
        return f"Decider({self._cls.__qualname__})"

    def run(self, state: A, decide: Callable[[A], Any]) -> tuple[tuple[Any, ...], A]:
        state._take_pending()
        decide(state)
        return state._take_pending(), state

    def copy_state(self, state: A) -> A:
        return copy.deepcopy(state)

    def to_snapshot(self, state: A) -> Any:
        return {k: v for k, v in vars(state).items() if k != _PENDING}

    def from_snapshot(self, stored: Any) -> A:
        if not isinstance(stored, dict):
            raise TypeError(f"a snapshot of {self._cls.__name__} must be a mapping")
        state = self._cls.__new__(self._cls)
        state.__dict__.update(stored)
        setattr(state, _PENDING, [])
        return state


def _evolve(state: A, event: Any) -> A:
    state._apply(event)
    return state
