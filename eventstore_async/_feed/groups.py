"""Consumer groups: ``store.subscribe(name, mode="shared")`` shares the feed's shards.

Consumers in any number of processes that subscribe with the same name share the
shards. Each shard has its own lease and checkpoint (item ``<name>/<shard>``, the same
kind as an exclusive subscription's, with one position), so order and exactly-once
``project()`` hold within a shard as they do for an exclusive subscription. Each member
announces itself in the group's partition (a heartbeat item with a term of
``lease_seconds``) and, every third of a term, renews its shards' leases, counts the
live members and moves towards its share: ``shards // members`` (one more for the
first ``shards % members`` members by owner id). It gives up shards over its share
(saving nothing new: its last ``project()``/``checkpoint()`` stands) and takes free
or expired ones under it, preferring those ``shard % members == rank``. So when a
member joins or leaves, shards move within about two thirds of a term; when one dies,
within its lease's end plus a third of a term.

A shard given up or taken over ends only that shard's work: its buffered change sets
are dropped, and a ``project()`` for one of them raises :class:`ShardLeaseLostError`
(a ``LeaseLostError`` naming the shard); the subscription goes on with the others.

The mode is the name's: a shared subscription marks its name with an item that no
exclusive consumer can take (owner ``SHARED_OWNER``, a lease without end), and either
mode refuses a name used in the other with ``InvalidInputError`` (``argument="mode"``).
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._backends.protocol import Backend
from .._codec import EventCodec
from .._errors import (
    InvalidInputError,
    ShardLeaseLostError,
    StorageError,
    StorageUnavailableError,
)
from .._models import ChangeSet
from .._read.decode import ChangeSetDecoder
from .._records import (
    TRANSIENT_CODES,
    CheckpointRecord,
    CheckpointWrite,
    CommitPlan,
    CommitRejected,
    DeleteMember,
    FeedCounterRecord,
    LeaseWrite,
    MemberRecord,
    PutMember,
    SortKey,
    Write,
    checkpoint_partition,
    feed_partition,
    group_partition,
)
from .._timeutil import now_us
from .catchup import Delivery, FeedReader, ReaderSettings, first_failure
from .outage import hold_on
from .shape import FeedShape
from .skipped import SkippedSaves, past_skipped
from .views import check_projection, view_writes

__all__ = ["SHARED_OWNER", "GroupSubscription", "ShardLeaseLostError", "shard_name"]

#: Owner of the item that marks a name as a shared subscription's.
SHARED_OWNER = "\x1fshared"
_FOREVER_US = 2**62
_MEMBERS_PAGE = 1000


def shard_name(name: str, shard: int) -> str:
    """The checkpoint of one shard of a shared subscription."""
    return f"{name}/{shard}"


def mode_refused(name: str, used_as: str) -> InvalidInputError:
    return InvalidInputError(
        "mode",
        f"subscription {name!r} is {used_as}: a name keeps the mode it was first used "
        "with (use another name for the other mode)",
    )


@dataclass(eq=False)
class _Held:
    """A shard this member holds: its checkpoint's sequence and positions."""

    shard: int
    seq: int
    saved: int
    delivered: int
    #: The position of the last change set delivered (not of skipped entries).
    last_change_set: int = 0
    skipped_saves: SkippedSaves = field(default_factory=SkippedSaves)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    dropped: bool = False


#: A shard's delivery, or the failure that ended its reading (after its deliveries).
_Item = tuple[_Held, Delivery | Exception]


class GroupSubscription:
    """A member of a consumer group; used like :class:`Subscription` (``async with``,
    ``async for``, :meth:`project`, :meth:`checkpoint`), holding only some shards."""

    def __init__(
        self,
        backend: Backend,
        codec: EventCodec,
        decoder: ChangeSetDecoder,
        settings: Any,  # SubscriptionSettings (not imported: it imports this module)
        shape: FeedShape,
    ) -> None:
        self._backend = backend
        self._codec = codec
        self._settings = settings
        self._shape = shape
        self._owner = uuid.uuid4().hex
        self._reader = FeedReader(
            backend,
            decoder,
            ReaderSettings(
                settings.poll_min,
                settings.poll_max,
                settings.outage,
                settings.filter,
                lenient=settings.on_undecodable == "raw",
            ),
        )
        self._held: dict[int, _Held] = {}
        self._last: tuple[_Held, int] | None = None
        self._group: TaskGroup | None = None
        self._send: MemoryObjectSendStream[_Item] | None = None
        self._receive: MemoryObjectReceiveStream[_Item] | None = None
        self._failure: Exception | None = None
        #: Seconds from the last delivered change set's commit to its delivery.
        self.last_lag_seconds: float | None = None

    @property
    def name(self) -> str:
        return str(self._settings.name)

    @property
    def shards(self) -> tuple[int, ...]:
        """The shards this member holds now."""
        return tuple(sorted(self._held))

    @property
    def _lease_us(self) -> int:
        return int(self._settings.lease_seconds * 1e6)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._shape.check()
        await hold_on(self._claim_mode, self._settings.outage)
        self._send, self._receive = anyio.create_memory_object_stream[_Item](self._settings.buffer)
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        try:
            await hold_on(self._balance_once, self._settings.outage)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        self._group.start_soon(self._balance)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        try:
            if group is not None:
                group.cancel_scope.cancel()
                await group.__aexit__(None, None, None)
        finally:
            for stream in (self._send, self._receive):
                if stream is not None:
                    stream.close()
            with anyio.CancelScope(shield=True):
                await self._leave()

    async def _leave(self) -> None:
        """Give up every shard (each keeps its last save) and leave the group."""
        for held in list(self._held.values()):
            await self._release(held)
        with contextlib.suppress(CommitRejected, StorageError):
            await self._commit([DeleteMember(self.name, self._owner)])

    async def _claim_mode(self) -> None:
        """Mark the name as a shared subscription's, unless it is an exclusive one's.

        Raises:
            InvalidInputError: the name is an exclusive subscription's.
        """
        record = await self._backend.get(checkpoint_partition(self.name), 0)
        if isinstance(record, CheckpointRecord):
            if record.owner != SHARED_OWNER:
                raise mode_refused(self.name, "exclusive")
            return
        mark = LeaseWrite(self.name, SHARED_OWNER, _FOREVER_US, now_us(), ())
        try:
            await self._commit([mark])
        except CommitRejected as refused:
            if _is_conflict(refused):
                raise StorageUnavailableError(
                    "busy", code="TransactionConflict", operation="TransactWriteItems"
                ) from None
            raise mode_refused(self.name, "exclusive") from None

    # -- consuming ----------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChangeSet:
        if self._receive is None:
            raise RuntimeError("use the subscription inside 'async with'")
        while True:
            try:
                held, delivery = await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise self._failure or StopAsyncIteration() from None
            if held.dropped or self._held.get(held.shard) is not held:
                continue  # the shard moved on: its buffered work is not ours any more
            if isinstance(delivery, Exception):  # at its turn: after the shard's deliveries
                self._fail(delivery)
                raise delivery
            held.delivered = delivery.position
            change_set = delivery.change_set
            if change_set is not None:
                self._last = (held, delivery.position)
                held.last_change_set = delivery.position
                timestamp = math.floor(change_set.timestamp.timestamp() * 1e6)
                self.last_lag_seconds = max(0.0, (now_us() - timestamp) / 1e6)
                return change_set
            if delivery.at_head:
                await self._save_past_skipped(held)

    async def _save_past_skipped(self, held: _Held) -> None:
        """At the shard's head after skipped entries: save its checkpoint past them if
        its change sets are all saved, at most once a second (``skipped.py``). A shard
        lost meanwhile is the new holder's to save."""
        (position,) = past_skipped((held.delivered,), (held.saved,), (held.last_change_set,))
        if position != held.saved and held.skipped_saves.take():
            with contextlib.suppress(ShardLeaseLostError):
                await self._save(held, position, [])

    async def project(
        self,
        view: str | None = None,
        *,
        put: Mapping[str, Any] | None = None,
        delete: Sequence[str] = (),
        views: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Write read-model documents and the checkpoint of the shard of the change set
        delivered last, in one transaction (as :meth:`Subscription.project`).

        Raises:
            InvalidInputError: as :meth:`Subscription.project`; nothing was written.
            ShardLeaseLostError: that shard is no longer this member's; nothing was
                written (the change set is the new holder's to apply).
            RuntimeError: nothing was delivered yet.
            StorageError: a failure no retry mends (outages are waited out).
        """
        writes = view_writes(self._codec, check_projection(view, put, delete, views))
        if self._last is None:
            raise RuntimeError("project() applies the change set delivered last: none yet")
        held, position = self._last
        await self._save(held, position, writes)

    async def checkpoint(self) -> None:
        """Save what was delivered of every shard held.

        Raises:
            ShardLeaseLostError: a shard is no longer this member's (the others are saved).
            StorageError: a failure no retry mends (outages are waited out).
        """
        lost: ShardLeaseLostError | None = None
        for held in list(self._held.values()):
            if held.delivered != held.saved:
                try:
                    await self._save(held, held.delivered, [])
                except ShardLeaseLostError as exc:
                    lost = exc
        if lost is not None:
            raise lost

    # -- saving one shard ---------------------------------------------------------------

    async def _save(self, held: _Held, position: int, writes: list[Write]) -> None:
        async with held.lock:
            if held.dropped:
                raise ShardLeaseLostError(self.name, held.shard)
            await self._commit_save(held, position, writes)
            held.seq += 1
            held.saved = position

    async def _commit_save(self, held: _Held, position: int, writes: list[Write]) -> None:
        """Commit through outages and conflicts; a refusal is read from the checkpoint
        it reports, as an exclusive subscription's save is."""
        unknown = lapsed = False
        attempt = 0
        name = shard_name(self.name, held.shard)
        while True:
            try:
                if lapsed:
                    await self._commit([self._lease(held.shard, now_us())])
                    lapsed = False
                now = now_us()
                save = CheckpointWrite(
                    name, self._owner, (position,), held.seq, now, now + self._lease_us
                )
                await self._commit([save, *writes])
                return
            except CommitRejected as refused:
                if _is_conflict(refused):
                    pass
                else:
                    verdict = self._verdict(refused, held, position, unknown=unknown)
                    if verdict == "landed":
                        return
                    if verdict == "lost":
                        self._drop(held)
                        raise ShardLeaseLostError(self.name, held.shard) from None
                    lapsed = True
                    continue
            except StorageUnavailableError:
                unknown = True
            await anyio.sleep(self._settings.outage.seconds(attempt))
            attempt += 1

    def _verdict(
        self, refused: CommitRejected, held: _Held, position: int, *, unknown: bool
    ) -> Literal["landed", "lapsed", "lost"]:
        first = refused.reasons[0] if refused.reasons else None
        record = first.old if first is not None else None
        if not isinstance(record, CheckpointRecord) or record.owner != self._owner:
            return "lost"
        if unknown and record.seq == held.seq + 1 and record.positions == (position,):
            return "landed"
        if record.seq == held.seq and record.lease_until_us < now_us():
            return "lapsed"
        return "lost"

    # -- balancing ----------------------------------------------------------------------

    async def _balance(self) -> None:
        """Every third of a term: renew, count the members, move towards the share.
        The ticks keep their pace however long one takes (a slow backend must not
        stretch the time between renewals)."""
        interval = self._settings.lease_seconds / 3
        next_tick = anyio.current_time()
        while True:
            next_tick += interval
            await anyio.sleep(max(0.0, next_tick - anyio.current_time()))
            next_tick = max(next_tick, anyio.current_time() - interval)
            try:
                await self._balance_once()
            except StorageUnavailableError:
                continue  # the leases have two thirds of a term to run
            except Exception as exc:  # raised to the consumer by __anext__
                self._failure = exc
                if self._receive is not None:
                    self._receive.close()
                return

    async def _balance_once(self) -> None:
        now = now_us()
        await self._renew_held(now)  # first: the leases must not wait for the rest
        member = MemberRecord(self.name, self._owner, now + self._lease_us)
        await self._commit([PutMember(member)])
        owners = await self._live_members(now)
        rank, members = owners.index(self._owner), len(owners)
        shards = self._settings.shards
        share = shards // members + (1 if rank < shards % members else 0)
        for held in self._extras(share, rank, members):
            await self._release(held)
        if len(self._held) < share:
            await self._take_free(share, rank, members)

    async def _live_members(self, now: int) -> list[str]:
        records = await self._backend.scan_partition(group_partition(self.name), 0, _MEMBERS_PAGE)
        live = {r.owner for r in records if isinstance(r, MemberRecord) and r.lease_until_us > now}
        return sorted(live | {self._owner})

    async def _renew_held(self, now: int) -> None:
        """Renew every shard's lease in one transaction; a shard whose lease another
        member holds is dropped and the others are renewed again."""
        held = list(self._held.values())
        while held:
            try:
                await self._commit([self._lease(h.shard, now) for h in held])
                return
            except CommitRejected as refused:
                if _is_conflict(refused):
                    return  # the leases have two thirds of a term to run: next tick
                taken = {
                    h.shard
                    for h, reason in zip(held, refused.reasons, strict=False)
                    if reason is not None and reason.code == "ConditionalCheckFailed"
                }
                for h in held:
                    if h.shard in taken:
                        self._drop(h)  # taken over: our lease had run out
                held = [h for h in held if h.shard not in taken]
                if not taken:
                    return

    def _extras(self, share: int, rank: int, members: int) -> list[_Held]:
        """Shards over the share, those not preferred for this rank first."""
        ranked = sorted(self._held.values(), key=lambda h: (h.shard % members == rank, -h.shard))
        return ranked[: max(0, len(self._held) - share)]

    async def _take_free(self, share: int, rank: int, members: int) -> None:
        shards = [s for s in range(self._settings.shards) if s not in self._held]
        keys: list[tuple[str, SortKey]] = [
            (checkpoint_partition(shard_name(self.name, s)), 0) for s in shards
        ]
        records = await self._backend.get_many(keys)
        now = now_us()
        free = [
            s
            for s, record in zip(shards, records, strict=True)
            if not isinstance(record, CheckpointRecord) or record.lease_until_us < now
        ]
        free.sort(key=lambda s: (s % members != rank, s))
        for shard in free[: share - len(self._held)]:
            await self._take(shard)

    async def _take(self, shard: int) -> None:
        start = await self._start_position(shard)
        try:
            await self._commit([self._lease(shard, now_us(), (start,))])
        except CommitRejected:
            return  # another member was quicker
        record = await self._backend.get(checkpoint_partition(shard_name(self.name, shard)), 0)
        if not isinstance(record, CheckpointRecord) or record.owner != self._owner:
            return
        position = record.positions[0]
        held = _Held(
            shard=shard,
            seq=record.seq,
            saved=position,
            delivered=position,
            last_change_set=position,
        )
        self._held[shard] = held
        if self._group is not None:
            self._group.start_soon(self._follow, held)

    async def _start_position(self, shard: int) -> int:
        if self._settings.start == "beginning":
            return 0
        counter = await self._backend.get(feed_partition(shard), 0)
        return counter.position if isinstance(counter, FeedCounterRecord) else 0

    async def _follow(self, held: _Held) -> None:
        send = self._send
        assert send is not None

        async def deliver(delivery: Delivery) -> None:
            await send.send((held, delivery))

        with held.scope:
            try:
                await self._reader.follow(deliver, held.shard, held.saved)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            except BaseExceptionGroup as failures:
                failure = first_failure(failures)
                if failure is not None:
                    await self._fail_in_turn(held, failure)
            except Exception as exc:
                await self._fail_in_turn(held, exc)

    async def _fail_in_turn(self, held: _Held, failure: BaseException) -> None:
        """Queue the failure behind the shard's deliveries: the consumer gets every
        change set before it, then the error (unless the shard has moved on by then)."""
        exc = failure if isinstance(failure, Exception) else RuntimeError(str(failure))
        send = self._send
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            if send is not None:
                await send.send((held, exc))

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
        if self._receive is not None:
            self._receive.close()

    async def _release(self, held: _Held) -> None:
        """Give the shard up, its checkpoint as last saved, free for another member."""
        async with held.lock:
            self._drop(held)
            name = shard_name(self.name, held.shard)
            save = CheckpointWrite(name, self._owner, (held.saved,), held.seq, now_us(), 0)
            with contextlib.suppress(CommitRejected, StorageError):  # it expires by itself
                await self._commit([save])

    def _drop(self, held: _Held) -> None:
        held.dropped = True
        if self._held.get(held.shard) is held:
            del self._held[held.shard]
        held.scope.cancel()

    def _lease(self, shard: int, now: int, positions: tuple[int, ...] = ()) -> LeaseWrite:
        return LeaseWrite(
            shard_name(self.name, shard), self._owner, now + self._lease_us, now, positions
        )

    async def _commit(self, writes: list[Write]) -> None:
        await self._backend.commit(CommitPlan(writes=tuple(writes), token=uuid.uuid4().hex))


def _is_conflict(refused: CommitRejected) -> bool:
    codes = refused.codes()
    return bool(codes) and codes <= TRANSIENT_CODES
