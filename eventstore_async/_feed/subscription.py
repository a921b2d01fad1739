"""Catch-up subscriptions over the global feed, with checkpoints and a lease.

``async with store.subscribe(name) as sub: async for change_set in sub:`` reads every
feed shard from the subscription's checkpoint, then keeps polling for new entries
(backing off while idle). A reader task fills a bounded buffer, so a slow consumer
slows the reads, never memory. Delivery is at least once: what was delivered after
the last checkpoint is delivered again to the next consumer. Leaving normally saves
what the consumer acknowledged: every change set delivered before the last one handed
out (the last may be the one it broke on, unprocessed). Each shard's entries
come in position order, so an aggregate's change sets come in version order. A
filtered subscription caught up past skipped entries saves its checkpoint past them by
itself (``skipped.py``), so ``wait_for`` a skipped change set returns.

One consumer per name at a time: a lease (owner, expiry) in the checkpoint item,
renewed in the background. A second consumer waits until the lease is released or
expires, then takes over from the checkpoint. ``project()`` writes read-model
documents and the checkpoint in one transaction, so a crash never applies a change set
twice to that read model.

Only a failed condition on the checkpoint item means the lease is lost. A transaction
cancelled because another one was in flight on the item (``TransactionConflict``: the
renewal, a waiting successor's attempt) or by throttling is retried with bounded
full-jitter backoff, as appends are (``conflict_retries``, ``backoff_base``,
``backoff_max``). Once the lease is known lost, renewal stops: it must not take back
behind the consumer's back a lease it was told is gone.

An outage does not end a subscription (``outage.py``): reads, saves and renewals wait
out ``StorageUnavailableError``; a lease that ran out meanwhile, taken by nobody, is
taken again.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._backends.protocol import Backend
from .._capacity import note_attempt
from .._codec import EventCodec
from .._errors import (
    IntegrityError,
    InvalidInputError,
    LeaseLostError,
    StorageError,
    StorageUnavailableError,
    SubscriptionBusyError,
)
from .._models import ChangeSet
from .._read.decode import ChangeSetDecoder
from .._records import (
    CheckpointRecord,
    CheckpointWrite,
    CommitPlan,
    CommitRejected,
    FeedCounterRecord,
    LeaseWrite,
    Write,
    checkpoint_partition,
    feed_partition,
)
from .._retry import ConflictBackoff, Done, Refusal, Retry, commit_with_retries
from .._telemetry import record_lag, traced_method
from .._timeutil import now_us
from .catchup import Delivery, FeedReader, ReaderSettings
from .filters import FeedFilter
from .groups import SHARED_OWNER, mode_refused
from .outage import OutageBackoff, hold_on
from .shape import FeedShape
from .skipped import SkippedSaves, past_skipped
from .views import check_projection, view_writes

__all__ = ["Subscription", "SubscriptionSettings"]


@dataclass(frozen=True, slots=True)
class SubscriptionSettings:
    """The checked arguments of ``EventStore.subscribe``.

    Raises:
        InvalidInputError: ``max_poll_interval`` (``poll_max``) is below
            ``poll_interval`` (``poll_min``).
    """

    name: str
    start: Literal["beginning", "end"]
    shards: int
    lease_seconds: float
    buffer: int
    poll_min: float
    poll_max: float
    wait: bool
    backoff: ConflictBackoff
    #: How reads, saves and renewals wait out ``StorageUnavailableError``.
    outage: OutageBackoff = field(default_factory=OutageBackoff)
    #: Which change sets to deliver.
    filter: FeedFilter = field(default_factory=FeedFilter)
    #: The table's name, for the ``eventstore.project`` span.
    table: str = ""
    #: "raw": deliver a change set that does not decode, its events as RawEvent.
    on_undecodable: Literal["raise", "raw"] = "raise"

    def __post_init__(self) -> None:
        if self.poll_max < self.poll_min:
            raise InvalidInputError(
                "max_poll_interval",
                f"is {self.poll_max:g} s, below poll_interval ({self.poll_min:g} s): idle "
                "polling starts at poll_interval and backs off up to max_poll_interval",
            )


class Subscription:
    """Iterate with ``async for``; call :meth:`checkpoint` (or :meth:`project`) as you go."""

    def __init__(
        self,
        backend: Backend,
        codec: EventCodec,
        decoder: ChangeSetDecoder,
        settings: SubscriptionSettings,
        shape: FeedShape,
    ) -> None:
        self._backend = backend
        self._shape = shape
        self._codec = codec
        self._decoder = decoder
        self._settings = settings
        self._owner = uuid.uuid4().hex
        self._seq = 0
        self._delivered: list[int] = []  # per shard: last position handed to the consumer
        self._acknowledged: list[int] = []  # per shard: delivered before the last handed out
        self._last_change_set: list[int] = []  # per shard: position of the last change set
        self._skipped_saves = SkippedSaves()
        self._last: Delivery | None = None  # the last one handed out, maybe not processed
        self._group: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[Delivery] | None = None
        self._saved: tuple[int, ...] = ()  # per shard: positions of the last checkpoint
        #: Positions of saves sent at ``_seq`` whose answer never came (lost, or the
        #: caller gave up on the call): one of them may have landed.
        self._in_doubt: set[tuple[int, ...]] = set()
        self._lost: LeaseLostError | None = None
        self._failure: Exception | None = None
        self._renewal = anyio.CancelScope()  # cancelled when the lease is lost
        #: Seconds from the last delivered change set's commit to its delivery.
        self.last_lag_seconds: float | None = None

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def shards(self) -> tuple[int, ...]:
        """The shards this consumer reads: all of them (see ``mode="shared"``)."""
        return tuple(range(self._settings.shards))

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._shape.check()
        checkpoint = await self._acquire()
        self._seq = checkpoint.seq
        self._saved = checkpoint.positions
        self._delivered = list(checkpoint.positions)
        self._acknowledged = list(checkpoint.positions)
        self._last_change_set = list(checkpoint.positions)
        send, self._receive = anyio.create_memory_object_stream[Delivery](self._settings.buffer)
        self._renewal = anyio.CancelScope()
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._read, send, list(self._delivered))
        self._group.start_soon(self._renew)
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
        finally:  # also when the consumer itself is being cancelled
            if self._receive is not None:
                self._receive.close()
            # Also after a loss: it is refused unless the lease is somehow still ours,
            # and then it frees it for a successor instead of making it wait a term.
            with anyio.CancelScope(shield=True):
                await self._release(save=exc_type is None and self._lost is None)

    async def _acquire(self) -> CheckpointRecord:
        """Take the lease, waiting for another consumer's to end (unless ``wait=False``).

        Unavailability (throttling, timeouts, no connection) is waited out.

        Raises:
            SubscriptionBusyError: another consumer holds it and ``wait`` is False.
        """
        start = await hold_on(self._start_positions, self._settings.outage)
        while True:
            try:
                await hold_on(
                    lambda: self._commit_checkpoint(lambda now: [self._lease_write(now, start)]),
                    self._settings.outage,
                )
            except CommitRejected as refused:
                holder = _holder(refused)
                if holder is not None and holder.owner == SHARED_OWNER:
                    raise mode_refused(self.name, "shared (a consumer group)") from None
                if not self._settings.wait:
                    raise SubscriptionBusyError(
                        f"subscription {self.name!r} is held by another consumer", name=self.name
                    ) from None
                await anyio.sleep(self._wait_seconds(holder))
                continue
            return await hold_on(self._checkpoint_record, self._settings.outage)

    async def _start_positions(self) -> tuple[int, ...]:
        shards = range(self._settings.shards)
        if self._settings.start == "beginning":
            return tuple(0 for _ in shards)
        counters = await self._backend.get_many([(feed_partition(s), 0) for s in shards])
        return tuple(c.position if isinstance(c, FeedCounterRecord) else 0 for c in counters)

    def _wait_seconds(self, holder: object) -> float:
        lease = self._settings.lease_seconds
        if isinstance(holder, CheckpointRecord):
            remaining = (holder.lease_until_us - now_us()) / 1e6
            return min(max(remaining, 0.05), lease)
        return lease / 4

    async def _checkpoint_record(self) -> CheckpointRecord:
        record = await self._backend.get(checkpoint_partition(self.name), 0)
        if not isinstance(record, CheckpointRecord):
            raise IntegrityError(f"subscription {self.name!r}: checkpoint missing after lease")
        if len(record.positions) != self._settings.shards:
            raise IntegrityError(
                f"subscription {self.name!r} was made with {len(record.positions)} feed "
                f"shards, the store has {self._settings.shards}"
            )
        return record

    @property
    def _lease_us(self) -> int:
        return int(self._settings.lease_seconds * 1e6)

    # -- consuming ----------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChangeSet:
        if self._receive is None:
            raise RuntimeError("use the subscription inside 'async with'")
        if self._last is not None:  # asking for the next one: done with the one before
            self._acknowledged[self._last.shard] = self._last.position
            self._last = None
        while True:
            try:
                delivery = await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise self._lost or self._failure or StopAsyncIteration() from None
            self._delivered[delivery.shard] = delivery.position
            change_set = delivery.change_set
            if change_set is not None:
                self._last = delivery
                self._last_change_set[delivery.shard] = delivery.position
                self.last_lag_seconds = max(0.0, (now_us() - _timestamp_us(change_set)) / 1e6)
                record_lag(self.name, self.last_lag_seconds)
                return change_set
            self._acknowledged[delivery.shard] = delivery.position  # filtered out: no work
            if delivery.at_head:
                await self._save_past_skipped()

    async def _save_past_skipped(self) -> None:
        """At the head after skipped entries: save the checkpoint past them, for the
        shards whose change sets are all saved, at most once a second (``skipped.py``).

        Raises:
            LeaseLostError: another consumer took over.
        """
        positions = past_skipped(tuple(self._delivered), self._saved, tuple(self._last_change_set))
        if positions != self._saved and self._skipped_saves.take():
            await self._save_checkpoint([], positions)

    async def checkpoint(self) -> None:
        """Save progress: everything delivered so far counts as processed.

        An outage (``StorageUnavailableError``) is waited out: it returns once saved.

        Raises:
            LeaseLostError: another consumer took over.
            StorageError: a failure no retry mends.
        """
        await self._save_checkpoint([])

    @traced_method("project", lambda sub: (sub._settings.table, False))
    async def project(
        self,
        view: str | None = None,
        *,
        put: Mapping[str, Any] | None = None,
        delete: Sequence[str] = (),
        views: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Write read-model documents and the checkpoint in one transaction.

        Call it once for each change set delivered (with no documents when there is
        nothing to write): the documents and the progress commit together, so after a
        crash the change sets redelivered are exactly those not yet applied.

        Args:
            view: the read model's name.
            put: documents to store, by key (Structs or str-keyed mappings).
            delete: keys to remove.
            views: more read models changed in the same transaction, by name:
                ``{"totals": {"put": {...}, "delete": [...]}}`` (so one change set can
                update a per-aggregate view and a totals view atomically).

        At most 99 documents in all, over every view (DynamoDB takes 100 actions per
        transaction, one is the checkpoint), and each key of a view once: in ``put`` or
        in ``delete``, not both.

        Raises:
            InvalidInputError: a bad view name or key, a key or view named twice, or
                more than 99 documents (``argument`` names which); nothing was written.
            LeaseLostError: another consumer took over; nothing was written.
            StorageError: a failure no retry mends. An outage
                (``StorageUnavailableError``) is waited out, and an attempt whose
                answer was lost is found landed or not from the checkpoint.
        """
        changes = check_projection(view, put, delete, views)
        await self._save_checkpoint(view_writes(self._codec, changes))

    async def _save_checkpoint(
        self, writes: list[Write], positions: tuple[int, ...] | None = None
    ) -> None:
        """Save ``positions`` (default: the delivered ones) and extend the lease, with
        ``writes``, atomically."""
        if self._lost is not None:
            raise self._lost
        if positions is None:
            positions = tuple(self._delivered)
        await self._hold_on_saving(positions, writes)
        self._seq += 1
        self._saved = positions
        self._in_doubt.clear()  # conditioned on the old seq: none of them can land now

    async def _hold_on_saving(self, positions: tuple[int, ...], writes: list[Write]) -> None:
        """Commit the save, through an outage: unavailability is retried with backoff;
        a refusal is read from the checkpoint it reports (``ALL_OLD``): our own earlier
        attempt that landed after all (done; or, when it saved other positions, an
        earlier call's, save again after it), our lease merely run out while nobody
        else took it (take it again, then save), or another consumer's (lost).

        An attempt is in doubt from the moment it is sent until a later save lands,
        also across calls: a ``project()`` the caller gave up on (cancelled) may have
        landed, and its retry must find it landed instead of a lost lease.

        Raises:
            LeaseLostError: another consumer holds the lease or has saved since ours.
            StorageError: a failure no retry mends.
        """
        lapsed = False
        attempt = 0
        while True:
            try:
                if lapsed:
                    await self._commit_checkpoint(lambda now: [self._lease_write(now)])
                    lapsed = False
                self._in_doubt.add(positions)  # until a save at a later seq lands
                await self._commit_checkpoint(
                    lambda now: [
                        self._checkpoint_write(positions, now, now + self._lease_us),
                        *writes,
                    ]
                )
                return
            except CommitRejected as refused:
                holder = _holder(refused)
                verdict = self._verdict(holder, positions)
                if verdict == "landed":
                    return
                if verdict == "lost":
                    raise self._lose() from None
                if verdict == "behind" and holder is not None:
                    self._seq, self._saved = holder.seq, holder.positions
                    self._in_doubt.clear()
                else:
                    lapsed = True
                continue
            except StorageUnavailableError:
                pass  # it may have landed: a later refusal will say
            if self._lost is not None:
                raise self._lost
            await anyio.sleep(self._settings.outage.seconds(attempt))
            attempt += 1

    def _verdict(
        self, holder: CheckpointRecord | None, positions: tuple[int, ...]
    ) -> Literal["landed", "behind", "lapsed", "lost"]:
        """What a refused save means, from the checkpoint that refused it."""
        if holder is None or holder.owner != self._owner:
            return "lost"
        if holder.seq == self._seq + 1 and holder.positions in self._in_doubt:
            # A save of ours whose answer never came was applied: this one (done), or
            # an earlier call's with other positions (save again after it).
            return "landed" if holder.positions == positions else "behind"
        if holder.seq == self._seq and holder.lease_until_us < now_us():
            return "lapsed"  # nobody else took it or saved: ours again for the asking
        return "lost"

    async def _release(self, *, save: bool) -> None:
        """Leave: save what the consumer acknowledged when asked, and free the lease
        for a successor.

        Acknowledged is what ``checkpoint()``/``project()`` saved and every change set
        delivered before the last one handed out (the consumer came back for more, so
        it is done with it). The last one itself may be the one the consumer broke on,
        unprocessed: it is delivered again to the next consumer.
        """
        positions = self._acknowledged_positions() if save else self._saved
        with contextlib.suppress(CommitRejected, StorageError):  # it expires by itself
            await self._commit_checkpoint(lambda now: [self._checkpoint_write(positions, now, 0)])

    def _acknowledged_positions(self) -> tuple[int, ...]:
        return tuple(map(max, self._saved, self._acknowledged))

    def _lose(self) -> LeaseLostError:
        """The lease is gone: stop renewing it and delivering; the error to raise."""
        if self._lost is None:
            self._lost = LeaseLostError(
                f"subscription {self.name!r}: the lease was taken over", name=self.name
            )
            self._renewal.cancel()
            self._stop()
        return self._lost

    def _lease_write(self, now: int, positions: tuple[int, ...] = ()) -> LeaseWrite:
        """Take or extend the lease for a term from ``now``; ``positions`` start a new
        checkpoint."""
        return LeaseWrite(self.name, self._owner, now + self._lease_us, now, positions)

    def _checkpoint_write(
        self, positions: tuple[int, ...], now: int, lease_until_us: int
    ) -> CheckpointWrite:
        """Save ``positions`` if the lease is ours and nobody saved since our last save."""
        return CheckpointWrite(
            name=self.name,
            owner=self._owner,
            positions=positions,
            expected_seq=self._seq,
            now_us=now,
            lease_until_us=lease_until_us,
        )

    async def _commit_checkpoint(self, writes_at: Callable[[int], list[Write]]) -> None:
        """Commit writes led by one on the checkpoint item, retrying transient refusals.

        ``writes_at(now_us)`` builds them afresh for each attempt: the lease's terms are
        relative to the time. A cancellation for ``TransactionConflict`` or throttling
        says only that another transaction was in flight on an item (our renewal, a
        waiting successor's attempt), so it is retried with bounded full-jitter backoff.

        Raises:
            CommitRejected: the checkpoint item's condition failed: the lease is another
                consumer's, or ours ended (``reasons[0].old`` is the item).
            StorageUnavailableError: still cancelled after the configured retries.
            StorageError: cancelled for a reason no retry mends.
        """
        attempts = _CheckpointAttempts(self, writes_at)
        await commit_with_retries(attempts, self._settings.backoff)

    async def _commit(self, writes: list[Write]) -> None:
        token = uuid.uuid4().hex
        note_attempt()
        await self._backend.commit(CommitPlan(writes=tuple(writes), token=token))

    # -- background tasks ---------------------------------------------------------------

    async def _renew(self) -> None:
        """Extend the lease every third of its term, until it is lost.

        A failed condition means another consumer has it: the consumer is told, and
        renewal ends (also when the loss was found by ``project()``/``checkpoint()``),
        since renewing a lost lease could take it back from under a successor.
        """
        with self._renewal:
            while True:
                await anyio.sleep(self._settings.lease_seconds / 3)
                try:
                    await self._commit_checkpoint(lambda now: [self._lease_write(now)])
                except CommitRejected:
                    self._lose()
                    return
                except StorageError:
                    continue  # transient: the lease still has two thirds to run

    def _stop(self) -> None:
        """End the consumer's iteration (``__anext__`` raises the lease loss)."""
        if self._receive is not None:
            self._receive.close()

    async def _read(self, send: MemoryObjectSendStream[Delivery], positions: list[int]) -> None:
        """Read every shard from its position (``catchup.py``); a failure no retry
        mends is kept for ``__anext__`` to raise."""
        settings = self._settings
        reader = FeedReader(
            self._backend,
            self._decoder,
            ReaderSettings(
                settings.poll_min,
                settings.poll_max,
                settings.outage,
                settings.filter,
                lenient=settings.on_undecodable == "raw",
            ),
        )
        try:
            await reader.run(send, dict(enumerate(positions)))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the consumer stopped
        except Exception as exc:  # raised to the consumer by __anext__
            self._failure = exc


class _CheckpointAttempts:
    """The attempts of one write led by the checkpoint item, for
    :func:`commit_with_retries`: a busy refusal is retried, a failed condition (only
    the checkpoint item has one) is the lease's loss, raised as the refusal."""

    def __init__(self, subscription: Subscription, writes_at: Callable[[int], list[Write]]) -> None:
        self._subscription = subscription
        self._writes_at = writes_at

    @property
    def subject(self) -> str:
        return f"subscription {self._subscription.name!r}: checkpoint"

    async def send(self) -> None:
        await self._subscription._commit(self._writes_at(now_us()))

    async def refused(
        self, rejected: CommitRejected, refusal: Refusal, *, last: bool
    ) -> Retry | Done[None]:
        if refusal is Refusal.CONDITION:
            raise rejected
        return Retry.BACKOFF

    def retrying(self, how: Retry) -> None:
        """No counters for checkpoints."""


def _holder(rejected: CommitRejected) -> CheckpointRecord | None:
    """The checkpoint that stood in the way of taking the lease, if it was reported."""
    first = rejected.reasons[0] if rejected.reasons else None
    return first.old if first is not None and isinstance(first.old, CheckpointRecord) else None


def _timestamp_us(change_set: ChangeSet) -> int:
    return math.floor(change_set.timestamp.timestamp() * 1e6)
