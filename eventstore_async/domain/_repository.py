"""Repository: load an aggregate, decide, append at the version loaded, re-decide on
a conflict, and land a command id at most once.

One command, :meth:`Repository.execute`:

1. Take the aggregate's turn in this process (see ``_turns``).
2. Start from the cached ``(version, state)``, or load it (from the newest snapshot
   when the decider takes snapshots): no request on a cache hit.
3. ``decide(state)`` -> events; fold them in with ``evolve`` (a failure is bad input).
4. Append them at the version decided on: one ``TransactWriteItems``. With a
   ``command_id`` the transaction also writes the commit marker, so that id is stored
   at most once per aggregate, at whatever version a retry finds the aggregate.
5. On :class:`ConcurrencyError` read only the newer change sets (one Query), fold them
   in and go back to 3, ``max_attempts`` times in all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._errors import AggregateNotFoundError, ConcurrencyError, InvalidInputError
from .._models import Append, ChangeSet
from .._telemetry import traced_method
from .._validation import check_aggregate_id, check_commit_id
from ._cache import Loaded, StateCache
from ._decider import Decider
from ._turns import Turns

if TYPE_CHECKING:
    from .._store import EventStore

__all__ = [
    "AlreadyLanded",
    "Decision",
    "Outcome",
    "Repository",
    "append_commands",
    "check_attempts",
    "check_command_id",
    "check_decide",
]

S = TypeVar("S")

logger = logging.getLogger("eventstore_async.domain")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[S]):
    """What a command did: the aggregate's ``state`` at ``version`` after it, and the
    ``change_set`` it stored (``None`` when ``decide`` returned no events)."""

    version: int
    state: S
    change_set: ChangeSet | None


class Repository(Generic[S]):
    """Commands on the aggregates of one decider (``store.repository(decider)``).

    Cached states (``cache_size``) and turns are shared by every repository of the same
    decider on the same store.
    """

    def __init__(self, store: EventStore, decider: Decider[S], turns: Turns) -> None:
        self._store = store
        self._decider = decider
        self._turns = turns
        self._cache: StateCache[S] = StateCache(decider.cache_size, decider.copy_state)

    @property
    def decider(self) -> Decider[S]:
        return self._decider

    def __repr__(self) -> str:
        return f"Repository({self._decider!r}, cached={len(self._cache)})"

    async def get(self, aggregate_id: str) -> Loaded[S]:
        """The aggregate's current state and version (0 and ``initial()`` when missing).

        From a cached state it reads only the newer change sets (one Query); otherwise
        it loads the aggregate (from the newest snapshot with ``snapshot_every``).

        Raises:
            InvalidInputError: a bad id.
            EvolveError: ``evolve`` failed on a stored change set.
            IntegrityError, StorageError: as :meth:`EventStore.load`.
        """
        aggregate_id = check_aggregate_id(aggregate_id)
        cached = self._cache.get(aggregate_id)
        loaded = await (self.catch_up(aggregate_id, cached) if cached else self.load(aggregate_id))
        self._cache.put(aggregate_id, loaded)
        return loaded

    @traced_method(
        "execute",
        lambda repo: (repo._store.config.table_name, repo._store.config.trace_aggregate_ids),
    )
    async def execute(
        self,
        aggregate_id: str,
        decide: Callable[[S], Any],
        *,
        command_id: str | None = None,
        max_attempts: int = 3,
    ) -> Outcome[S]:
        """Run one command: ``decide(state) -> events``, appended at the version decided on.

        Args:
            aggregate_id: the aggregate.
            decide: ``decide(state)`` returns the command's events (a list, tuple or
                iterable; empty for none). An exception it raises propagates and nothing
                is written. It may be called again, on a newer state, after a conflict.
            command_id: the command's idempotency key (the change set's commit id). It
                lands at most once per aggregate: a retry of a command that already landed
                returns that command's outcome (its change set and the state at its
                version) instead of writing again.
            max_attempts: decides in all, counting the first (re-decided on conflict).

        Returns:
            The outcome: version, state and change set (None when no events).

        Raises:
            InvalidInputError: a bad argument, or ``decide`` returned something that is
                not encodable events or events ``evolve`` fails on (nothing was written).
            ConcurrencyError: other processes moved the aggregate ``max_attempts`` times.
            EvolveError: ``evolve`` failed on a stored change set.
            Others: as :meth:`EventStore.append` (``CommitOutcomeUnknownError``: retry
                with the same ``command_id``).
        """
        aggregate_id = check_aggregate_id(aggregate_id)
        check_decide(decide, "decide")
        command_id = check_command_id(command_id)
        attempts = check_attempts(max_attempts)
        async with self._turns.hold((aggregate_id,)):
            return await self._execute(aggregate_id, decide, command_id, attempts)

    async def _execute(
        self, aggregate_id: str, decide: Callable[[S], Any], command_id: str | None, attempts: int
    ) -> Outcome[S]:
        current = await self.current(aggregate_id)
        for attempt in range(1, attempts + 1):
            try:
                decision = await self.decide(aggregate_id, decide, current, command_id)
            except AlreadyLanded as landed:
                return landed.outcome
            current = decision.current
            if not decision.events:
                return await self.nothing_decided(aggregate_id, current, command_id)
            append = self.append_of(aggregate_id, decision.events, current.version, command_id)
            try:
                (change_set,) = await append_commands(self._store, [append], command_id)
            except ConcurrencyError:
                if attempt == attempts:
                    raise
                current = await self.catch_up(aggregate_id, current)
                continue
            return await self.committed(aggregate_id, decision, change_set)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- steps, shared with execute_many -------------------------------------------------

    async def current(self, aggregate_id: str) -> Loaded[S]:
        """The cached state, or the loaded one (no request on a cache hit)."""
        cached = self._cache.get(aggregate_id)
        if cached is not None:
            return _Cached(cached.state, cached.version)
        return await self.load(aggregate_id)

    async def decide(
        self,
        aggregate_id: str,
        decide: Callable[[S], Any],
        current: Loaded[S],
        command_id: str | None,
    ) -> Decision[S]:
        """Run ``decide`` on ``current``. A refusal (an exception, or no events) on a
        cached state is checked against the newer change sets, if any (one Query), so a
        stale cache never refuses what the stored state allows. If ``decide`` refuses and
        the command landed before, :class:`AlreadyLanded` carries that outcome."""
        while True:
            try:
                events, state = self._decider.run(self._decider.copy_state(current.state), decide)
            except InvalidInputError:
                raise
            except Exception:
                newer = await self._newer(aggregate_id, current)
                if newer is not None:
                    current = newer
                    continue
                landed = await self.landed(aggregate_id, current, command_id)
                if landed is not None:
                    raise AlreadyLanded(landed) from None
                raise
            if not events:
                newer = await self._newer(aggregate_id, current)
                if newer is not None:
                    current = newer
                    continue
            return Decision(current, events, state)

    async def _newer(self, aggregate_id: str, current: Loaded[S]) -> Loaded[S] | None:
        """For a cached state: the state with newer change sets folded in, if any."""
        if not isinstance(current, _Cached):
            return None
        newer = await self.catch_up(aggregate_id, current)
        return newer if newer.version != current.version else None

    async def nothing_decided(
        self, aggregate_id: str, current: Loaded[S], command_id: str | None
    ) -> Outcome[S]:
        """``decide`` returned no events: unless this command landed before, nothing
        is written and the outcome is the current state."""
        landed = await self.landed(aggregate_id, current, command_id)
        if landed is not None:
            return landed
        self._cache.put(aggregate_id, current)
        return Outcome(version=current.version, state=current.state, change_set=None)

    def append_of(
        self, aggregate_id: str, events: tuple[Any, ...], version: int, command_id: str | None
    ) -> Append:
        return Append(
            aggregate_id=aggregate_id,
            events=events,
            expected_version=version,
            aggregate_type=self._decider.aggregate_type,
            commit_id=command_id,
        )

    async def committed(
        self, aggregate_id: str, decision: Decision[S], change_set: ChangeSet
    ) -> Outcome[S]:
        """The outcome of a stored change set: this command's, or, when its command id had
        landed before, that earlier change set's (and the state at its version)."""
        current, events, state = decision.current, decision.events, decision.state
        ours = change_set.version == current.version + 1 and _same(change_set.events, events)
        if not ours:
            state = await self.state_at(aggregate_id, change_set.version, current)
        self._cache.put(aggregate_id, Loaded(state, change_set.version))
        await self._snapshot(aggregate_id, change_set.version, state)
        return Outcome(version=change_set.version, state=state, change_set=change_set)

    async def landed(
        self, aggregate_id: str, current: Loaded[S], command_id: str | None
    ) -> Outcome[S] | None:
        """The outcome of ``command_id`` if it landed on this aggregate before (one read)."""
        if command_id is None:
            return None
        version = await self._store._landed_version(aggregate_id, command_id)
        if version is None:
            return None
        state = await self.state_at(aggregate_id, version, current)
        history = await self._store.load(aggregate_id, from_version=version, to_version=version)
        return Outcome(version=version, state=state, change_set=history.change_sets[0])

    # -- reading -----------------------------------------------------------------------

    async def load(self, aggregate_id: str, to_version: int | None = None) -> Loaded[S]:
        """The state from storage: from the newest snapshot of the decider's schema when
        it takes snapshots (two requests), else every change set."""
        decider = self._decider
        schema = decider.snapshot_schema if decider.snapshot_every else None
        try:
            history = await self._store.load(
                aggregate_id, to_version=to_version, snapshot_schema=schema
            )
        except AggregateNotFoundError:
            return Loaded(decider.initial(), 0)
        state = decider.initial()
        if history.snapshot is not None:
            try:
                state = decider.from_snapshot(history.snapshot.state)
            except Exception:
                logger.warning(
                    "aggregate %r: snapshot %s does not restore; replaying every change set",
                    aggregate_id,
                    history.snapshot.version,
                    exc_info=True,
                )
                history = await self._store.load(aggregate_id, to_version=to_version)
        state = decider.fold_stored(state, history.change_sets)
        version = history.version if to_version is None else min(to_version, history.version)
        return Loaded(state, version)

    async def catch_up(
        self, aggregate_id: str, current: Loaded[S], to_version: int | None = None
    ) -> Loaded[S]:
        """``current`` with the change sets after its version folded in (one Query)."""
        decider = self._decider
        state, version = decider.copy_state(current.state), current.version
        reader = self._store.read(aggregate_id, from_version=version + 1, to_version=to_version)
        try:
            async for change_set in reader:
                state = decider.fold_stored(state, (change_set,))
                version = change_set.version
        finally:
            await _close(reader)
        return Loaded(state, version)

    async def state_at(self, aggregate_id: str, version: int, current: Loaded[S]) -> S:
        """The state at ``version``: from ``current`` when it is not past it, else loaded."""
        if current.version == version:
            return current.state
        if current.version < version:
            return (await self.catch_up(aggregate_id, current, version)).state
        return (await self.load(aggregate_id, version)).state

    async def _snapshot(self, aggregate_id: str, version: int, state: S) -> None:
        """Save a snapshot at every multiple of ``snapshot_every``; a failure is logged,
        never the command's."""
        every = self._decider.snapshot_every
        if not every or version % every:
            return
        try:
            await self._store.save_snapshot(
                aggregate_id,
                version,
                self._decider.to_snapshot(state),
                schema=self._decider.snapshot_schema,
            )
        except Exception:
            logger.warning(
                "aggregate %r: snapshot at version %s not saved",
                aggregate_id,
                version,
                exc_info=True,
            )


@dataclass(frozen=True, slots=True)
class Decision(Generic[S]):
    """What ``decide`` made of ``current``: its events and the state after them."""

    current: Loaded[S]
    events: tuple[Any, ...]
    state: S


@dataclass(frozen=True, slots=True)
class _Cached(Loaded[S]):
    """A state from the cache: other processes may have moved the aggregate since."""


def _same(stored: tuple[Any, ...], decided: tuple[Any, ...]) -> bool:
    """Whether the stored change set holds the very events decided (not an earlier
    landing of the same command id, decoded from storage)."""
    return len(stored) == len(decided) and all(a is b for a, b in zip(stored, decided, strict=True))


class AlreadyLanded(Exception):
    """``decide`` refused, but the command had landed before: its outcome stands."""

    def __init__(self, outcome: Outcome[Any]) -> None:
        super().__init__(outcome)
        self.outcome = outcome


async def append_commands(
    store: EventStore, appends: Sequence[Append], command_id: str | None
) -> list[ChangeSet]:
    """Append through ``append_many``'s path; with a command id each entry also writes
    its commit marker. One entry's bad events are named as ``decide``'s (``events[2]``),
    a batch's as ``appends[i].events[2]``."""
    return await store._append_commands(appends, marked=command_id is not None)


async def _close(reader: Any) -> None:
    """Close a change-set stream left early (an ``evolve`` failure)."""
    close = getattr(reader, "aclose", None)
    if close is not None:
        await close()


def check_decide(decide: Any, argument: str) -> None:
    if not callable(decide):
        raise InvalidInputError(argument, f"must be a function (state) -> events, not {decide!r}")


def check_command_id(value: Any) -> str | None:
    try:
        return check_commit_id(value)
    except InvalidInputError as exc:
        raise InvalidInputError("command_id", exc.problem) from None


def check_attempts(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError("max_attempts", "must be an int >= 1")
    return value
