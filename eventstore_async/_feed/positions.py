"""The global feed: gapless positions per shard, handed out inside the append's own
transaction.

Each aggregate belongs to one of ``feed_shards`` shards (CRC-32 of its id). An append
moves its shard's counter from the position it expects to the next one (a conditional
update) and writes a feed entry at that position, in the same ``TransactWriteItems``
as the change set. So a shard's positions are dense and only ever hold committed
change sets: a reader that has seen position p and finds p + 1 missing knows nothing
after it exists yet (gap-safe), and an aggregate's change sets appear in version
order. Writers contend only within a shard. A stale position is refused with the
counter's current value (``ALL_OLD``), so the retry needs no extra read.
"""

from __future__ import annotations

import contextlib
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator

import anyio

from .._backends.protocol import Backend
from .._records import (
    CommitRejected,
    FeedAdvance,
    FeedCounterRecord,
    FeedEntryRecord,
    PutFeedEntry,
    Write,
    feed_partition,
)
from .._write.plan import AppendRequest
from .filters import event_type_names

__all__ = ["FeedPositions", "shard_of"]


def shard_of(aggregate_id: str, shards: int) -> int:
    """The feed shard of an aggregate: stable across processes and versions."""
    return zlib.crc32(aggregate_id.encode()) % shards


class FeedPositions:
    """This process's view of each shard's last position, corrected on every refusal."""

    def __init__(self, backend: Backend, shards: int) -> None:
        self._backend = backend
        self.shards = shards
        self._known: dict[int, int] = {}
        self._locks: dict[int, anyio.Lock] = {}

    @contextlib.asynccontextmanager
    async def turns(self, requests: list[AppendRequest]) -> AsyncIterator[None]:
        """Take the shards' turns in this process: two tasks of one process would only
        refuse each other's position, so they wait for each other instead (a lock per
        shard, taken in shard order)."""
        if not self.shards:
            yield
            return
        shards = sorted({shard_of(r.aggregate_id, self.shards) for r in requests})
        async with contextlib.AsyncExitStack() as stack:
            for shard in shards:
                await stack.enter_async_context(self._locks.setdefault(shard, anyio.Lock()))
            yield

    async def writes(
        self, requests: list[AppendRequest], versions: list[int], timestamp_us: int
    ) -> list[Write]:
        """Counter moves and entries for these appends (one counter move per shard)."""
        if not self.shards:
            return []
        grouped: dict[int, list[tuple[AppendRequest, int]]] = defaultdict(list)
        for request, version in zip(requests, versions, strict=True):
            grouped[shard_of(request.aggregate_id, self.shards)].append((request, version + 1))
        writes: list[Write] = []
        for shard in sorted(grouped):
            start = await self._position(shard)
            entries = grouped[shard]
            writes.append(FeedAdvance(shard=shard, expected=start, count=len(entries)))
            writes += [
                PutFeedEntry(_entry(shard, start + offset, request, version, timestamp_us))
                for offset, (request, version) in enumerate(entries, start=1)
            ]
        return writes

    async def _position(self, shard: int) -> int:
        if shard not in self._known:
            counter = await self._backend.get(feed_partition(shard), 0)
            self._known[shard] = counter.position if isinstance(counter, FeedCounterRecord) else 0
        return self._known[shard]

    def committed(self, writes: list[Write]) -> None:
        for write in writes:
            if isinstance(write, FeedAdvance):
                self._known[write.shard] = write.expected + write.count

    def correct(self, rejected: CommitRejected, writes: list[Write], offset: int) -> bool:
        """Take the positions the refusal reported; True if the feed was behind."""
        behind = False
        for write, reason in zip(writes, rejected.reasons[offset:], strict=False):
            if reason is None or reason.code != "ConditionalCheckFailed":
                continue
            behind = True
            if isinstance(write, FeedAdvance) and isinstance(reason.old, FeedCounterRecord):
                self._known[write.shard] = reason.old.position
            else:  # an entry or an empty counter disagreed: read the counter again
                self._known.pop(_shard(write), None)
        return behind


def _shard(write: Write) -> int:
    if isinstance(write, FeedAdvance):
        return write.shard
    assert isinstance(write, PutFeedEntry)
    return write.record.shard


def _entry(
    shard: int, position: int, request: AppendRequest, version: int, timestamp_us: int
) -> FeedEntryRecord:
    return FeedEntryRecord(
        shard=shard,
        position=position,
        aggregate_id=request.aggregate_id,
        version=version,
        commit_id=request.commit_id,
        timestamp_us=timestamp_us,
        event_count=request.event_count,
        aggregate_type=request.aggregate_type,
        event_types=event_type_names(request.events, request.event_count),
    )
