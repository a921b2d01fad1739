"""Operators' views of the global feed: following it read-only (``eventstore tail``),
each subscription's progress and lag (``eventstore subscriptions``), and moving a
subscription's checkpoint so its read model can be rebuilt (``eventstore replay``).

Nothing here takes a lease or saves a checkpoint, except :func:`move_checkpoint`, which
takes the lease for the one transaction that moves the positions and frees it at once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import anyio

from .._backends.protocol import Backend
from .._errors import InvalidInputError, SubscriptionBusyError
from .._feed.groups import SHARED_OWNER, shard_name
from .._records import (
    CheckpointRecord,
    CheckpointWrite,
    CommitPlan,
    CommitRejected,
    FeedCounterRecord,
    FeedEntryRecord,
    FeedShapeRecord,
    LeaseWrite,
    checkpoint_partition,
    feed_partition,
    schema_partition,
)
from .._timeutil import from_us, now_us

__all__ = [
    "SubscriptionStatus",
    "feed_ends",
    "follow_feed",
    "move_checkpoint",
    "subscription_statuses",
]

_PAGE = 100
#: How long ``move_checkpoint`` holds the lease between taking it and moving the positions.
_MOVE_LEASE_US = 5_000_000


async def feed_ends(backend: Backend, shards: int) -> list[int]:
    """Each shard's last position (0 for a shard nothing was appended to)."""
    counters = await backend.get_many([(feed_partition(s), 0) for s in range(shards)])
    return [c.position if isinstance(c, FeedCounterRecord) else 0 for c in counters]


async def follow_feed(
    backend: Backend, positions: list[int], *, follow: bool, poll_seconds: float = 0.5
) -> AsyncIterator[FeedEntryRecord]:
    """Entries after ``positions`` (one per shard, updated as entries are yielded), shard
    by shard in position order; with ``follow``, polls for new ones forever, else stops
    when every shard is read to its end."""
    while True:
        found = 0
        for shard in range(len(positions)):
            records = await backend.scan_partition(
                feed_partition(shard), positions[shard] + 1, _PAGE
            )
            for record in records:
                if isinstance(record, FeedEntryRecord):
                    positions[shard] = record.position
                    found += 1
                    yield record
        if not found:
            if not follow:
                return
            await anyio.sleep(poll_seconds)


@dataclass(frozen=True, slots=True)
class SubscriptionStatus:
    """A subscription's checkpoint, how far behind the feed it is, and its lease."""

    name: str
    positions: tuple[int, ...]  # next position read is positions[s] + 1, per shard
    ends: tuple[int, ...]  # each shard's last position
    lag_entries: int
    lag_seconds: float  # age of the oldest entry not yet checkpointed (0 when caught up)
    owner: str
    lease_until: datetime | None  # None when the lease is free

    @property
    def held(self) -> bool:
        return self.lease_until is not None


async def subscription_statuses(backend: Backend) -> list[SubscriptionStatus]:
    """Every subscription of the table, by name (a Scan for checkpoint items). A consumer
    group (``mode="shared"``) is one subscription: its positions are its shards'
    checkpoints, its owner the members holding them."""
    checkpoints = {
        record.name: record
        async for page in backend.scan(kind="checkpoint")
        for record in page
        if isinstance(record, CheckpointRecord)
    }
    groups = [c for c in checkpoints.values() if c.owner == SHARED_OWNER]
    shards = await _table_shards(backend, checkpoints) if groups else 0
    for group in groups:
        parts = [checkpoints.pop(shard_name(group.name, s), None) for s in range(shards)]
        checkpoints[group.name] = _group_checkpoint(group, parts)
    return [await _status(backend, c) for _, c in sorted(checkpoints.items())]


async def _table_shards(backend: Backend, checkpoints: dict[str, CheckpointRecord]) -> int:
    """The feed's shard count as the table records it (else the widest checkpoint)."""
    shape = await backend.get(schema_partition(), 0)
    if isinstance(shape, FeedShapeRecord):
        return shape.shards
    return max((len(c.positions) for c in checkpoints.values()), default=0)


def _group_checkpoint(
    group: CheckpointRecord, parts: list[CheckpointRecord | None]
) -> CheckpointRecord:
    """A consumer group seen as one checkpoint: a position per shard (0 for a shard no
    member saved yet), the lease of its longest-held shard, the owners of live ones."""
    now = now_us()
    live = [p for p in parts if p is not None and p.lease_until_us >= now]
    return CheckpointRecord(
        name=group.name,
        positions=tuple(p.positions[0] if p is not None and p.positions else 0 for p in parts),
        owner=",".join(sorted({p.owner for p in live})),
        lease_until_us=max((p.lease_until_us for p in live), default=0),
        seq=group.seq,
    )


async def _status(backend: Backend, checkpoint: CheckpointRecord) -> SubscriptionStatus:
    ends = await feed_ends(backend, len(checkpoint.positions))
    behind = [(s, p) for s, p in enumerate(checkpoint.positions) if p < ends[s]]
    oldest = await backend.get_many([(feed_partition(s), p + 1) for s, p in behind])
    stamps = [e.timestamp_us for e in oldest if isinstance(e, FeedEntryRecord)]
    now = now_us()
    held = checkpoint.lease_until_us >= now
    return SubscriptionStatus(
        name=checkpoint.name,
        positions=checkpoint.positions,
        ends=tuple(ends),
        lag_entries=sum(ends[s] - p for s, p in behind),
        lag_seconds=max(((now - t) / 1e6 for t in stamps), default=0.0),
        owner=checkpoint.owner,
        lease_until=from_us(checkpoint.lease_until_us) if held else None,
    )


async def move_checkpoint(
    backend: Backend, name: str, to: str | Sequence[int], *, force: bool = False
) -> tuple[int, ...]:
    """Set subscription ``name``'s positions (``"start"``, ``"end"`` or one per shard) and
    free its lease, so the next consumer reads from there; returns the positions.

    With ``force``, a lease still held is taken from its holder (whose next checkpoint
    then fails with ``LeaseLostError``): for a consumer that died holding it.

    Raises:
        InvalidInputError: no such subscription, a consumer group's name, or not one
            position per shard.
        SubscriptionBusyError: a consumer holds the lease (and not ``force``).
    """
    checkpoint = await _checkpoint(backend, name)
    if checkpoint.owner == SHARED_OWNER:
        raise InvalidInputError(
            "name",
            f"{name!r} is a consumer group's (mode='shared'): replay moves an exclusive "
            "subscription's checkpoint only",
        )
    positions = await _target(backend, checkpoint, to)
    now = now_us()
    held = checkpoint.lease_until_us >= now
    if held and not force:
        raise SubscriptionBusyError(
            f"subscription {name!r} is held by consumer {checkpoint.owner} until "
            f"{from_us(checkpoint.lease_until_us).isoformat()}: stop it first (or --force)",
            name=name,
        )
    owner = checkpoint.owner if held else uuid.uuid4().hex  # forced: act as the holder
    try:
        await _commit(backend, LeaseWrite(name, owner, now + _MOVE_LEASE_US, now, ()))
        seq = (await _checkpoint(backend, name)).seq
        write = CheckpointWrite(name, owner, positions, seq, now_us(), lease_until_us=0)
        await _commit(backend, write)
    except CommitRejected:
        raise SubscriptionBusyError(
            f"subscription {name!r} was taken by a consumer meanwhile", name=name
        ) from None
    return positions


async def _checkpoint(backend: Backend, name: str) -> CheckpointRecord:
    record = await backend.get(checkpoint_partition(name), 0)
    if not isinstance(record, CheckpointRecord):
        raise InvalidInputError("name", f"no subscription named {name!r}")
    return record


async def _target(
    backend: Backend, checkpoint: CheckpointRecord, to: str | Sequence[int]
) -> tuple[int, ...]:
    shards = len(checkpoint.positions)
    if to == "start":
        return (0,) * shards
    if to == "end":
        return tuple(await feed_ends(backend, shards))
    if isinstance(to, str):
        raise InvalidInputError("to", f"must be 'start', 'end' or positions, not {to!r}")
    positions = tuple(to)
    if len(positions) != shards or any(isinstance(p, bool) or p < 0 for p in positions):
        raise InvalidInputError(
            "to", f"needs {shards} positions (one per feed shard, each >= 0), got {positions}"
        )
    return positions


async def _commit(backend: Backend, write: LeaseWrite | CheckpointWrite) -> None:
    await backend.commit(CommitPlan(writes=(write,), token=uuid.uuid4().hex))
