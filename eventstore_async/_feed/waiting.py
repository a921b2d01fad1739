"""Read-your-writes: wait until a subscription has checkpointed past a change set.

A change set's feed entry sits in its aggregate's shard, at a position the append does
not report. The subscription's checkpoint says, per shard, the last position it has
processed. So the wait reads the checkpoint, then looks for the entry among the shard's
entries after it (usually a few: the subscription's lag): found at position p, it waits
for the checkpoint to reach p; not there, the entry is at or before the checkpoint
(the change set committed with its entry, so it exists), and it is done.
"""

from __future__ import annotations

import anyio

from .._backends.protocol import Backend
from .._records import CheckpointRecord, FeedEntryRecord, checkpoint_partition, feed_partition
from .groups import SHARED_OWNER, shard_name
from .positions import shard_of

__all__ = ["wait_for_checkpoint"]

_PAGE = 100
_POLL_MIN = 0.02
_POLL_MAX = 0.25


async def wait_for_checkpoint(
    backend: Backend, name: str, shards: int, aggregate_id: str, version: int
) -> None:
    """Return once subscription ``name`` has saved a checkpoint past the entry of
    ``aggregate_id`` at ``version``; wait (polling) as long as it takes.

    Raises:
        StorageError: a read failed.
    """
    shard = shard_of(aggregate_id, shards)
    target: int | None = None
    delay = _POLL_MIN
    while True:
        saved = await _saved_position(backend, name, shard)
        if saved is not None:
            if target is None:
                target = await _position_after(backend, shard, saved, aggregate_id, version)
            if target is None or saved >= target:
                return
        await anyio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)


async def _saved_position(backend: Backend, name: str, shard: int) -> int | None:
    """The checkpoint's position in ``shard``; None: no checkpoint (yet) for it. A
    consumer group (``mode="shared"``) keeps one checkpoint per shard."""
    record = await backend.get(checkpoint_partition(name), 0)
    if isinstance(record, CheckpointRecord) and record.owner == SHARED_OWNER:
        record = await backend.get(checkpoint_partition(shard_name(name, shard)), 0)
        shard = 0
    if not isinstance(record, CheckpointRecord) or shard >= len(record.positions):
        return None
    return record.positions[shard]


async def _position_after(
    backend: Backend, shard: int, saved: int, aggregate_id: str, version: int
) -> int | None:
    """The entry's position if it is after ``saved``; None when it is not there (so at
    or before ``saved``)."""
    low = saved + 1
    while True:
        records = await backend.scan_partition(feed_partition(shard), low, _PAGE)
        for record in records:
            if (
                isinstance(record, FeedEntryRecord)
                and record.aggregate_id == aggregate_id
                and record.version == version
            ):
                return record.position
        if len(records) < _PAGE:
            return None
        low = records[-1].position + 1 if isinstance(records[-1], FeedEntryRecord) else low + 1
