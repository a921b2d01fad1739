"""Load and read: consistent, paginated, every page followed.

A load from a snapshot races the saves that evict or overwrite snapshots (and delete
their objects): it re-reads when the object it needs is gone, see
:func:`load_from_snapshot`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from .._backends.protocol import Backend
from .._errors import AggregateNotFoundError, IntegrityError
from .._models import AggregateHistory, ChangeSet, Snapshot
from .._offload.payload import PayloadMissingError
from .._records import ChangeSetRecord, HeadRecord, SnapshotRecord, snapshot_sort_key
from .decode import ChangeSetDecoder, to_head

__all__ = ["load_from_snapshot", "load_history", "read_change_sets"]


async def load_history(
    backend: Backend, decoder: ChangeSetDecoder, aggregate_id: str, low: int, high: int | None
) -> AggregateHistory:
    """Head and change sets ``low..high``, cut at the head's version so they agree.

    From version 1 it is one Query that starts at the head (sort key 0); from a later
    version the head is read first, then the range.
    """
    if low == 1:
        head, records = await _query_with_head(backend, aggregate_id, high)
    else:
        found = await backend.get_head(aggregate_id)
        if found is None:
            raise AggregateNotFoundError(aggregate_id)
        head = found
        end = head.version if high is None else min(high, head.version)
        records = await _collect(backend, aggregate_id, low, end) if low <= end else []
    last = head.version if high is None else min(high, head.version)
    records = [record for record in records if record.version <= last]
    _check_contiguous(aggregate_id, records, low, last)
    change_sets = await decoder.change_sets(records)
    return AggregateHistory(head=to_head(head), change_sets=tuple(change_sets))


#: Reads of the head and the newest snapshot before a load stops using snapshots and
#: replays every change set. A read is repeated only when a concurrent save deleted the
#: object of the snapshot it found (eviction past ``keep``, or an overwrite).
SNAPSHOT_READS = 3


async def load_from_snapshot(
    backend: Backend,
    decoder: ChangeSetDecoder,
    aggregate_id: str,
    schema: str,
    high: int | None,
    state_type: type[msgspec.Struct] | None = None,
) -> AggregateHistory:
    """The newest snapshot of ``schema`` (at or before ``high``) and the change sets
    after it: a GetItem of the head, then one Query from the snapshot on.

    A save deletes the object of a snapshot it evicts or overwrites right after its
    commit, so this load may find the object gone after reading the item. It then reads
    the head and the snapshot again (at most ``SNAPSHOT_READS`` in all) and finally
    replays every change set. Only a snapshot found again, pointer unchanged, after its
    object was missing is an :class:`IntegrityError`: nothing deleted it legitimately.
    """
    missing: PayloadMissingError | None = None
    for _ in range(SNAPSHOT_READS):
        found = await _read_from_newest_snapshot(backend, aggregate_id, schema, high)
        if found.snapshot is None:
            return await _history(decoder, found, None)
        _raise_if_still_missing(aggregate_id, found.snapshot, missing)
        try:
            snapshot = await decoder.snapshot(found.snapshot, state_type)
        except PayloadMissingError as gone:  # evicted or overwritten since the read
            missing = gone
            continue
        return await _history(decoder, found, snapshot)
    return await load_history(backend, decoder, aggregate_id, 1, high)


@dataclass(frozen=True, slots=True)
class _SnapshotRead:
    """One consistent pass: the head, the snapshot it led to (None: replay from 1),
    and the change sets after it up to ``last``."""

    aggregate_id: str
    head: HeadRecord
    last: int
    snapshot: SnapshotRecord | None
    records: list[ChangeSetRecord]


async def _read_from_newest_snapshot(
    backend: Backend, aggregate_id: str, schema: str, high: int | None
) -> _SnapshotRead:
    head = await backend.get_head(aggregate_id)
    if head is None:
        raise AggregateNotFoundError(aggregate_id)
    last = head.version if high is None else min(high, head.version)
    usable = [version for version in head.snapshots.get(schema, ()) if version <= last]
    snapshot: SnapshotRecord | None = None
    if usable:
        snapshot, records = await _query_from_snapshot(
            backend, aggregate_id, max(usable), schema, last
        )
    if snapshot is None:  # none yet, or evicted between the two reads: replay everything
        records = await _collect(backend, aggregate_id, 1, last)
    return _SnapshotRead(aggregate_id, head, last, snapshot, records)


def _raise_if_still_missing(
    aggregate_id: str, snapshot: SnapshotRecord, missing: PayloadMissingError | None
) -> None:
    """A save deletes a snapshot's object only after its commit took the snapshot off
    the head, so one still listed with the object found missing before is damaged."""
    pointer = snapshot.pointer
    if missing is None or pointer is None or pointer.key != missing.key:
        return
    raise IntegrityError(
        f"aggregate {aggregate_id!r}: snapshot {snapshot.version} of schema "
        f"{snapshot.schema!r} is listed on the head but its offloaded payload "
        f"{missing.key!r} is missing"
    ) from missing


async def _history(
    decoder: ChangeSetDecoder, found: _SnapshotRead, snapshot: Snapshot | None
) -> AggregateHistory:
    low = snapshot.version + 1 if snapshot else 1
    _check_contiguous(found.aggregate_id, found.records, low, found.last)
    change_sets = await decoder.change_sets(found.records)
    return AggregateHistory(
        head=to_head(found.head), change_sets=tuple(change_sets), snapshot=snapshot
    )


async def _query_from_snapshot(
    backend: Backend, aggregate_id: str, version: int, schema: str, last: int
) -> tuple[SnapshotRecord | None, list[ChangeSetRecord]]:
    start = snapshot_sort_key(version, schema)
    end = Decimal(last) + _BEFORE_NEXT_VERSION
    snapshot: SnapshotRecord | None = None
    records: list[ChangeSetRecord] = []
    async with aclosing(backend.query(aggregate_id, start, end, with_snapshots=True)) as pages:
        async for page in pages:
            for record in page:
                if isinstance(record, ChangeSetRecord) and record.version <= last:
                    records.append(record)
                elif isinstance(record, SnapshotRecord) and record.schema == schema:
                    snapshot = snapshot or (record if record.version == version else None)
    return snapshot, records


# Snapshot sort keys of version v lie in (v, v + 1): this reaches all of them, not v + 1.
_BEFORE_NEXT_VERSION = Decimal("0.9999999999")


async def _query_with_head(
    backend: Backend, aggregate_id: str, high: int | None
) -> tuple[HeadRecord, list[ChangeSetRecord]]:
    head: HeadRecord | None = None
    records: list[ChangeSetRecord] = []
    async with aclosing(backend.query(aggregate_id, 0, high)) as pages:
        async for page in pages:
            for record in page:
                if isinstance(record, HeadRecord):
                    head = record
                elif isinstance(record, ChangeSetRecord):
                    records.append(record)
    if head is None:
        raise AggregateNotFoundError(aggregate_id)
    return head, records


async def _collect(
    backend: Backend, aggregate_id: str, low: int, high: int
) -> list[ChangeSetRecord]:
    records: list[ChangeSetRecord] = []
    async with aclosing(backend.query(aggregate_id, low, high)) as pages:
        async for page in pages:
            records.extend(record for record in page if isinstance(record, ChangeSetRecord))
    return records


def _check_contiguous(
    aggregate_id: str, records: list[ChangeSetRecord], low: int, last: int
) -> None:
    """Versions must run ``low..last`` with no gap: a history is never returned cut."""
    versions = [record.version for record in records]
    if versions != list(range(low, last + 1)):
        missing = sorted(set(range(low, last + 1)) - set(versions))
        raise IntegrityError(
            f"aggregate {aggregate_id!r}: change sets {missing[:10]} are missing from the history"
        )


async def read_change_sets(
    backend: Backend, decoder: ChangeSetDecoder, aggregate_id: str, low: int, high: int | None
) -> AsyncIterator[ChangeSet]:
    """Change sets ``low..high`` as each page arrives: memory holds one page."""
    async with aclosing(backend.query(aggregate_id, low, high)) as pages:
        async for page in pages:
            records = [record for record in page if isinstance(record, ChangeSetRecord)]
            for change_set in await decoder.change_sets(records):
                yield change_set
