"""Reading the feed for a subscription: every shard at once, the next page ahead.

Each shard has its own pair of tasks: a scanner that Queries the shard's entries page
by page (polling, with backoff, once it has caught up) and hands each page on, and a
fetcher that reads the page's change sets (one BatchGetItem per 100), decodes them and
sends them to the consumer in position order. So while a page's change sets are read,
the next page's entries are already being fetched, and the shards do not wait for each
other: at a per-request latency L, a shard delivers about a page (100) per L, and N
shards about N times that, until the consumer or the CPU is the limit.

Memory is bounded: the consumer's buffer (``buffer`` change sets) and, per shard, the
page being fetched (at most 100 change sets) and one page of entries ahead (100 small
items): at most ``buffer + 100 * shards`` change sets in all.

Unavailability (throttling, timeouts, no connection) is waited out page by page; any
other failure stops every shard and is raised to the consumer, at its turn in its shard:
after the change sets before it. (A change set that cannot be read is met a page ahead
of the consumer: raising there would withhold the healthy ones before it, so a page is
decoded up to its first failure, which is raised once they are delivered.)
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._backends.protocol import Backend
from .._errors import IntegrityError, StorageUnavailableError
from .._models import ChangeSet
from .._read.decode import ChangeSetDecoder
from .._records import ChangeSetRecord, FeedEntryRecord, HeadRecord, feed_partition
from .filters import FeedFilter
from .outage import OutageBackoff, hold_on

__all__ = ["PAGE", "Deliver", "Delivery", "FeedReader", "ReaderSettings", "first_failure"]

#: Feed entries per Query (and change sets per BatchGetItem).
PAGE = 100
#: Aggregate types a filtered subscription remembers (then it starts over).
_TYPE_CACHE = 100_000

_Page = list[FeedEntryRecord]
_Read = tuple[FeedEntryRecord, ChangeSet]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A change set at a shard's position; ``None``: entries up to the position were
    skipped by the filter (the checkpoint moves past them once the consumer gets here).

    ``at_head``: the shard has nothing after the position yet, and its last entries were
    skipped. Sent on each empty poll (every ``poll_interval`` backing off to
    ``max_poll_interval``) until an entry comes: the consumer's cue to save the
    checkpoint past skipped entries that no later save would otherwise carry.
    """

    shard: int
    position: int
    change_set: ChangeSet | None
    at_head: bool = False


#: Hands a delivery to the consumer (waiting while its buffer is full).
Deliver = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    poll_min: float
    poll_max: float
    outage: OutageBackoff
    filter: FeedFilter
    #: Deliver a change set that does not decode (``on_undecodable="raw"``).
    lenient: bool = False


class FeedReader:
    """Reads the given shards from their positions into a bounded stream of deliveries."""

    def __init__(
        self, backend: Backend, decoder: ChangeSetDecoder, settings: ReaderSettings
    ) -> None:
        self._backend = backend
        self._decoder = decoder
        self._settings = settings
        self._types: dict[str, str] = {}  # aggregate id -> type, for a type filter

    async def run(self, send: MemoryObjectSendStream[Delivery], positions: dict[int, int]) -> None:
        """Deliver each shard's entries after ``positions[shard]`` until the consumer
        closes its end (then return) or a read fails for good.

        Raises:
            IntegrityError, StorageError...: the first failure no retry mends (the
                other shards are stopped).
        """
        try:
            async with send, anyio.create_task_group() as group:
                for shard, position in positions.items():
                    group.start_soon(self.follow, send.send, shard, position)
        except BaseExceptionGroup as failures:
            failure = first_failure(failures)
            if failure is not None:
                raise failure from None

    async def follow(self, deliver: Deliver, shard: int, position: int) -> None:
        """Deliver one shard's entries after ``position``, in order, until cancelled or
        ``deliver`` raises (the consumer stopped)."""
        pages_send, pages_receive = anyio.create_memory_object_stream[_Page](1)
        async with anyio.create_task_group() as group:
            group.start_soon(self._scan, pages_send, shard, position)
            await self._fetch(pages_receive, deliver, shard, position)
            group.cancel_scope.cancel()

    async def _scan(self, pages: MemoryObjectSendStream[_Page], shard: int, position: int) -> None:
        """Query the shard's entries after ``position`` page by page, one page ahead; an
        empty page each time a poll finds nothing new (the fetcher's news of the head)."""
        idle = self._settings.poll_min
        low = position + 1
        async with pages:
            while True:
                read = functools.partial(
                    self._backend.scan_partition, feed_partition(shard), low, PAGE
                )
                records = await hold_on(read, self._settings.outage)
                entries = [r for r in records if isinstance(r, FeedEntryRecord)]
                if not entries:
                    await pages.send(entries)
                    await anyio.sleep(idle)
                    idle = min(idle * 2, self._settings.poll_max)
                    continue
                idle = self._settings.poll_min
                await pages.send(entries)
                low = entries[-1].position + 1

    async def _fetch(
        self, pages: MemoryObjectReceiveStream[_Page], send: Deliver, shard: int, position: int
    ) -> None:
        """Deliver each page's change sets, then the page's end when it was skipped, then
        the first failure of the page, if any (after the change sets before it). At the
        head (an empty page) after skipped entries, say so: the consumer may save the
        checkpoint past them (see :attr:`Delivery.at_head`)."""
        skipped = False  # the last delivery was of skipped entries
        async with pages:
            async for entries in pages:
                if not entries:
                    if skipped:
                        await send(Delivery(shard, position, None, at_head=True))
                    continue
                read = functools.partial(self._read_page, entries)
                deliveries, failure = await hold_on(read, self._settings.outage)
                for entry, change_set in deliveries:
                    await send(Delivery(shard, entry.position, change_set))
                    position = entry.position
                if failure is not None:
                    raise failure
                skipped = position != entries[-1].position
                if skipped:  # the page ended with skipped ones
                    position = entries[-1].position
                    await send(Delivery(shard, position, None))

    async def _read_page(self, entries: _Page) -> tuple[list[_Read], Exception | None]:
        """The page's change sets that pass the filter, in position order, up to the
        first that cannot be read, and that failure (None: none)."""
        kept = await self._kept(entries)
        if not kept:
            return [], None
        found = await self._backend.get_many([(e.aggregate_id, e.version) for e, _ in kept])
        stored, failure = _stored(kept, found)
        decoded, failed = await self._decoder.change_sets_in_order(
            stored, lenient=self._settings.lenient
        )
        if isinstance(failed, StorageUnavailableError):
            raise failed  # a retry of the page may mend it: nothing of it was delivered
        matches: Callable[[ChangeSet], bool] = self._settings.filter.by_change_set
        deliveries = [
            (entry, change_set)
            for (entry, sure), change_set in zip(kept, decoded, strict=False)
            if sure or matches(change_set)
        ]
        return deliveries, failed or failure

    async def _kept(self, entries: _Page) -> list[tuple[FeedEntryRecord, bool]]:
        """The entries whose change sets are read: ``True`` when the entry says they
        match, ``False`` when only the change set can say."""
        feed_filter = self._settings.filter
        if feed_filter.everything:
            return [(entry, True) for entry in entries]
        types = await self._aggregate_types(entries)
        kept: list[tuple[FeedEntryRecord, bool]] = []
        for entry in entries:
            aggregate_type = entry.aggregate_type or types.get(entry.aggregate_id)
            verdict = feed_filter.by_entry(entry, aggregate_type)
            if verdict is not False:
                kept.append((entry, verdict is True))
        return kept

    async def _aggregate_types(self, entries: _Page) -> dict[str, str]:
        """The types of the aggregates whose entries name none, from their heads (only
        with an ``aggregate_types`` filter). A type once found is kept (it never
        changes); an aggregate without one is asked again next time."""
        if self._settings.filter.aggregate_types is None:
            return self._types
        unknown = sorted(
            {e.aggregate_id for e in entries if e.aggregate_type is None} - self._types.keys()
        )
        if unknown:
            heads = await self._backend.get_many([(aggregate_id, 0) for aggregate_id in unknown])
            if len(self._types) > _TYPE_CACHE:
                self._types.clear()
            for head in heads:
                if isinstance(head, HeadRecord) and head.aggregate_type is not None:
                    self._types[head.aggregate_id] = head.aggregate_type
        return self._types


def first_failure(group: BaseExceptionGroup) -> BaseException | None:
    """The first exception that is not the consumer having stopped (None: only that)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = first_failure(exc)
            if found is not None:
                return found
        elif not isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError):
            return exc
    return None


def _stored(
    kept: list[tuple[FeedEntryRecord, bool]], found: Sequence[object]
) -> tuple[list[ChangeSetRecord], IntegrityError | None]:
    """The change sets read for the kept entries, up to the first that is not stored
    (and the error naming it)."""
    stored: list[ChangeSetRecord] = []
    for (entry, _), record in zip(kept, found, strict=True):
        if not isinstance(record, ChangeSetRecord) or record.commit_id != entry.commit_id:
            return stored, IntegrityError(
                f"feed shard {entry.shard} position {entry.position} names change set "
                f"{entry.version} of {entry.aggregate_id!r}, which is not stored"
            )
        stored.append(record)
    return stored, None
