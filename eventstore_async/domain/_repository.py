"""Repository: load an aggregate, decide, append at the version loaded, re-decide on
a conflict, and land a command id at most once.

One command, :meth:`Repository.execute`:

1. Take the aggregate's turn in this process (see ``_turns``).
2. Start from the cached ``(version, state)``, or load it (from the newest snapshot
   when the decider takes snapshots): no request on a cache hit. A load for a command
   with a ``command_id`` also reads that id's commit marker, at the same time.
3. If the command is known to have landed (the marker, or the commit ids the cache
   entry saw), return that landing's outcome without calling ``decide``.
4. ``decide(state)`` -> events; fold them in with ``evolve`` (a failure is bad input).
5. Append them at the version decided on: one ``TransactWriteItems``. With a
   ``command_id`` the transaction also writes the commit marker, so that id is stored
   at most once per aggregate, at whatever version a retry finds the aggregate (a
   retry on a cached state that never saw the landing learns it from the refusal).
6. On :class:`ConcurrencyError` read only the newer change sets (one Query), fold them
   in and go back to 3, ``max_attempts`` times in all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from .._errors import AggregateNotFoundError, ConcurrencyError, InvalidInputError
from .._models import Append, ChangeSet
from .._telemetry import traced_method
from .._validation import check_aggregate_id, check_commit_id
from ._cache import Known, Loaded, StateCache, landed_in, seen_with
from ._decider import Decider
from ._turns import Turns

if TYPE_CHECKING:
    from ._access import StoreAccess

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
A = TypeVar("A")
B = TypeVar("B")

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

    def __init__(self, access: StoreAccess, decider: Decider[S], turns: Turns) -> None:
        self._access = access
        self._store = access.store
        self._decider = decider
        self._turns = turns
        self._cache: StateCache[S] = StateCache(decider.cache_size, decider.copy_state)

    @property
    def decider(self) -> Decider[S]:
        return self._decider

    def __repr__(self) -> str:
        return f"Repository({self._decider!r}, cached={len(self._cache)})"

    @property
    def cached_count(self) -> int:
        """How many aggregates this repository's cache holds (at most ``cache_size``)."""
        return len(self._cache)

    def cached(self, aggregate_id: str) -> Loaded[S] | None:
        """The cached state and version of an aggregate, or None (no request; the LRU
        order is left as it is). For an :class:`Aggregate` class, a copy."""
        return self._cache.peek(aggregate_id)

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
        return Loaded(loaded.state, loaded.version)

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
                version) instead of writing again, and without calling ``decide`` when
                the landing is known before deciding: on an uncached aggregate (the
                load reads the id's commit marker at the same time, one more request
                and no more wait), or on a cached one whose cache entry saw the landing
                (committed here, or folded in when catching up; the last
                ``SEEN_PER_AGGREGATE`` = 8 commit ids per cached aggregate). One case
                still calls ``decide`` once: a cached aggregate on which another process
                landed the command before this process cached it (or more than 8
                change sets ago). Reading the marker there would add a request to every
                cached command, so ``decide`` runs on the cached state and the
                transaction's marker condition refuses its events and reveals the
                landing; those events are discarded and nothing is written.
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
        current: Loaded[S] = await self.current(aggregate_id, command_id)
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
                (change_set,) = await append_commands(self._access, [append], command_id)
            except ConcurrencyError:
                if attempt == attempts:
                    raise
                current = await self.catch_up(aggregate_id, current)
                continue
            return await self.committed(aggregate_id, decision, change_set, command_id)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- steps, shared with execute_many -------------------------------------------------

    async def current(self, aggregate_id: str, command_id: str | None = None) -> Known[S]:
        """The cached state (no request), or the loaded one. With a command id, a load
        also reads where that id landed (its commit marker), at the same time."""
        cached = self._cache.get(aggregate_id)
        if cached is not None:
            return _Cached(cached.state, cached.version, cached.seen, cached.change_set)
        if command_id is None:
            return await self.load(aggregate_id)
        loaded, version = await _both(
            partial(self.load, aggregate_id),
            partial(self._access.landed_version, aggregate_id, command_id),
        )
        return replace(loaded, seen=() if version is None else ((command_id, version),))

    async def decide(
        self,
        aggregate_id: str,
        decide: Callable[[S], Any],
        current: Loaded[S],
        command_id: str | None,
    ) -> Decision[S]:
        """Run ``decide`` on ``current``. A refusal (an exception, or no events) on a
        cached state is checked against the newer change sets, if any (one Query), so a
        stale cache never refuses what the stored state allows. When the command is known
        to have landed, or ``decide`` refuses and it landed before, :class:`AlreadyLanded`
        carries that outcome (in the first case ``decide`` is not called)."""
        while True:
            landed = await self.seen_landing(aggregate_id, current, command_id)
            if landed is not None:
                raise AlreadyLanded(landed)
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

    async def seen_landing(
        self, aggregate_id: str, current: Loaded[S], command_id: str | None
    ) -> Outcome[S] | None:
        """The outcome of ``command_id`` if ``current`` saw it land (no request to know;
        none at all when it is ``current``'s own change set, else reads for it)."""
        version = landed_in(current, command_id)
        if version is None:
            return None
        return await self.outcome_at(aggregate_id, version, current)

    async def _newer(self, aggregate_id: str, current: Loaded[S]) -> Known[S] | None:
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
        self,
        aggregate_id: str,
        decision: Decision[S],
        change_set: ChangeSet,
        command_id: str | None,
    ) -> Outcome[S]:
        """The outcome of a stored change set: this command's, or, when its command id had
        landed before, that earlier change set's (and the state at its version). With a
        command id, the cache entry remembers it and keeps the change set."""
        current, events, state = decision.current, decision.events, decision.state
        ours = change_set.version == current.version + 1 and _same(change_set.events, events)
        if not ours:
            state = await self.state_at(aggregate_id, change_set.version, current)
        seen = _seen(current)
        kept = None
        if command_id is not None:
            seen, kept = seen_with(seen, (change_set,)), change_set
        self._cache.put(aggregate_id, Known(state, change_set.version, seen, kept))
        await self._snapshot(aggregate_id, change_set.version, state)
        return Outcome(version=change_set.version, state=state, change_set=change_set)

    async def landed(
        self, aggregate_id: str, current: Loaded[S], command_id: str | None
    ) -> Outcome[S] | None:
        """The outcome of ``command_id`` if it landed on this aggregate before: from what
        ``current`` saw, else from its commit marker (one read)."""
        if command_id is None:
            return None
        version = landed_in(current, command_id)
        if version is None:
            version = await self._access.landed_version(aggregate_id, command_id)
        if version is None:
            return None
        return await self.outcome_at(aggregate_id, version, current)

    async def outcome_at(self, aggregate_id: str, version: int, current: Loaded[S]) -> Outcome[S]:
        """The outcome of the command that landed at ``version``: the state there and its
        change set (no request when ``current`` is at that version and keeps it). The
        cache keeps ``current``, which now knows where the command landed."""
        state = await self.state_at(aggregate_id, version, current)
        change_set = current.change_set if isinstance(current, Known) else None
        if change_set is None or change_set.version != version:
            history = await self._store.load(aggregate_id, from_version=version, to_version=version)
            change_set = history.change_sets[0]
        seen = seen_with(_seen(current), (change_set,))
        kept = change_set if version == current.version else None
        self._cache.put(aggregate_id, Known(current.state, current.version, seen, kept))
        return Outcome(version=version, state=state, change_set=change_set)

    # -- reading -----------------------------------------------------------------------

    async def load(self, aggregate_id: str, to_version: int | None = None) -> Known[S]:
        """The state from storage: from the newest snapshot of the decider's schema when
        it takes snapshots (two requests), else every change set."""
        decider = self._decider
        schema = decider.snapshot_schema if decider.snapshot_every else None
        try:
            history = await self._store.load(
                aggregate_id, to_version=to_version, snapshot_schema=schema
            )
        except AggregateNotFoundError:
            return Known(decider.initial(), 0)
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
        return Known(state, version)

    async def catch_up(
        self, aggregate_id: str, current: Loaded[S], to_version: int | None = None
    ) -> Known[S]:
        """``current`` with the change sets after its version folded in (one Query), and
        their commit ids added to what it saw."""
        decider = self._decider
        state, version, seen = decider.copy_state(current.state), current.version, _seen(current)
        reader = self._store.read(aggregate_id, from_version=version + 1, to_version=to_version)
        try:
            async for change_set in reader:
                state = decider.fold_stored(state, (change_set,))
                version = change_set.version
                seen = seen_with(seen, (change_set,))
        finally:
            await _close(reader)
        return Known(state, version, seen)

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
class _Cached(Known[S]):
    """A state from the cache: other processes may have moved the aggregate since."""


def _seen(loaded: Loaded[Any]) -> tuple[tuple[str, int], ...]:
    return loaded.seen if isinstance(loaded, Known) else ()


async def _both(
    first: Callable[[], Awaitable[A]], second: Callable[[], Awaitable[B]]
) -> tuple[A, B]:
    """Await both at once. The first failure cancels the other and is raised as is (not
    in an exception group), as if they had been awaited one after the other."""
    results: list[Any] = [None, None]
    failures: list[Exception] = []

    async def run(index: int, step: Callable[[], Awaitable[Any]], scope: anyio.CancelScope) -> None:
        try:
            results[index] = await step()
        except Exception as exc:
            failures.append(exc)
            scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(run, 0, first, group.cancel_scope)
        group.start_soon(run, 1, second, group.cancel_scope)
    if failures:
        raise failures[0]
    return results[0], results[1]


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
    access: StoreAccess, appends: Sequence[Append], command_id: str | None
) -> list[ChangeSet]:
    """Append through ``append_many``'s path; with a command id each entry also writes
    its commit marker. One entry's bad events are named as ``decide``'s (``events[2]``),
    a batch's as ``appends[i].events[2]``."""
    return await access.append_commands(appends, marked=command_id is not None)


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
