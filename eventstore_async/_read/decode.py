"""Storage records to the public models; offloaded payloads fetched on the way."""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from .._codec import EventCodec
from .._models import AggregateHead, ChangeSet, Snapshot
from .._offload.payload import PayloadReader
from .._records import ChangeSetRecord, HeadRecord, SnapshotRecord
from .._timeutil import from_us

__all__ = ["ChangeSetDecoder", "to_head"]


def to_head(record: HeadRecord) -> AggregateHead:
    return AggregateHead(
        aggregate_id=record.aggregate_id,
        aggregate_type=record.aggregate_type,
        version=record.version,
        last_commit_id=record.last_commit_id,
        event_count=record.event_count,
        created_at=from_us(record.created_us),
        updated_at=from_us(record.updated_us),
    )


class ChangeSetDecoder:
    """Decodes change set records; offloaded ones are fetched, several at once."""

    def __init__(self, codec: EventCodec, reader: PayloadReader, fetch_concurrency: int) -> None:
        self._codec = codec
        self._reader = reader
        self._limiter = anyio.CapacityLimiter(fetch_concurrency)

    async def snapshot(self, record: SnapshotRecord) -> Snapshot:
        payload = record.payload
        if record.pointer is not None:
            async with self._limiter:
                payload = await self._reader.fetch(record.pointer)
        (state,) = self._codec.decode_events(payload or b"")
        return Snapshot(
            aggregate_id=record.aggregate_id,
            version=record.version,
            schema=record.schema,
            state=state,
            timestamp=from_us(record.timestamp_us),
        )

    async def change_set(self, record: ChangeSetRecord) -> ChangeSet:
        if record.pointer is None:
            assert record.payload is not None
            return self._build(record, record.payload)
        async with self._limiter:
            payload = await self._reader.fetch(record.pointer)
        return self._build(record, payload)

    async def change_sets(self, records: Sequence[ChangeSetRecord]) -> list[ChangeSet]:
        """Decode in order; offloaded payloads are fetched concurrently (bounded)."""
        if all(record.pointer is None for record in records):
            return [self._build(record, record.payload or b"") for record in records]
        decoded: list[ChangeSet | None] = [None] * len(records)
        failures: list[Exception] = []

        async def decode(index: int, record: ChangeSetRecord, scope: anyio.CancelScope) -> None:
            try:
                decoded[index] = await self.change_set(record)
            except Exception as exc:  # the first failure stops the others and is raised as is
                failures.append(exc)
                scope.cancel()

        async with anyio.create_task_group() as group:
            for index, record in enumerate(records):
                group.start_soon(decode, index, record, group.cancel_scope)
        if failures:
            raise failures[0]
        return [change_set for change_set in decoded if change_set is not None]

    def _build(self, record: ChangeSetRecord, payload: bytes) -> ChangeSet:
        return ChangeSet(
            aggregate_id=record.aggregate_id,
            version=record.version,
            commit_id=record.commit_id,
            timestamp=from_us(record.timestamp_us),
            events=self._codec.decode_events(payload),
            metadata=self._codec.decode_metadata(record.metadata),
            event_count=record.event_count,
        )
