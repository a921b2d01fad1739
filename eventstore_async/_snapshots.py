"""Snapshots: save an aggregate's state at a version; keep the last few per schema.

A snapshot item sits right after the change set it was made at (sort key
``version.xxxxxxxxxx``, the fraction from the schema name), so one Query from it
returns the snapshot and then every later change set. The head lists the retained
versions per schema, so a load knows where to start after one GetItem: two requests
whatever the history's length. Saving is one transaction: the head's list (guarded by
``snap_seq``, so concurrent saves cannot lose one), the snapshot, and the deletion of
snapshots past ``keep``. Large states are offloaded to S3 like change sets.
"""

from __future__ import annotations

import re
from typing import Any

import anyio

from ._append import full_jitter
from ._backend import Backend
from ._config import StoreConfig
from ._errors import AggregateNotFoundError, InvalidInputError, StorageUnavailableError
from ._offload import EncodedPayload, Offloader
from ._records import (
    CommitPlan,
    CommitRejected,
    DeleteSnapshot,
    HeadRecord,
    PutSnapshot,
    SnapshotIndexWrite,
    SnapshotRecord,
    Write,
    snapshot_sort_key,
)
from ._timeutil import now_us

__all__ = ["SnapshotWriter", "check_keep", "check_schema"]

_SCHEMA = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_KEEP = 100


def check_schema(schema: Any) -> str:
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise InvalidInputError("schema", "must be 1 to 64 characters of letters, digits and ._:-")
    return schema


def check_keep(keep: Any) -> int:
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP:
        raise InvalidInputError("keep", f"must be an int from 1 to {MAX_KEEP}")
    return keep


class SnapshotWriter:
    def __init__(self, backend: Backend, offloader: Offloader, config: StoreConfig) -> None:
        self._backend = backend
        self._offloader = offloader
        self._retries = config.conflict_retries
        self._backoff = (config.backoff_base, config.backoff_max)

    async def save(
        self, aggregate_id: str, version: int, state: Any, schema: str, keep: int
    ) -> SnapshotRecord | None:
        """Store the snapshot; None when ``keep`` newer ones make it useless."""
        head = await self._head(aggregate_id, version)
        if _retained(head, schema, version, keep) is None:
            return None
        encoded = await self._offloader.encode(aggregate_id, [state])
        record = _record(aggregate_id, version, schema, encoded)
        try:
            return await self._commit(head, record, keep)
        except _Superseded:
            if record.pointer is not None:
                await self._offloader.discard(record.pointer.key)
            return None
        except BaseException:
            if encoded.pointer is not None:
                with anyio.CancelScope(shield=True):
                    await self._offloader.discard(encoded.pointer.key)
            raise

    async def _commit(self, head: HeadRecord, record: SnapshotRecord, keep: int) -> SnapshotRecord:
        for attempt in range(self._retries + 1):
            kept = _retained(head, record.schema, record.version, keep)
            if kept is None:
                raise _Superseded
            replaced = [v for v in head.snapshots.get(record.schema, ()) if v not in kept]
            if record.version in head.snapshots.get(record.schema, ()):
                replaced.append(record.version)  # overwritten: its object goes too
            stale = await self._objects_of(record, replaced)
            try:
                await self._backend.commit(_plan(head, record, kept))
            except CommitRejected:
                await anyio.sleep(full_jitter(attempt, *self._backoff))
                head = await self._head(record.aggregate_id, record.version)
                continue
            for key in stale:
                await self._offloader.discard(key)
            return record
        raise StorageUnavailableError(
            f"aggregate {record.aggregate_id!r}: snapshot still conflicting after "
            f"{self._retries + 1} attempts",
            code="TransactionConflict",
            operation="TransactWriteItems",
        )

    async def _head(self, aggregate_id: str, version: int) -> HeadRecord:
        head = await self._backend.get_head(aggregate_id)
        if head is None:
            raise AggregateNotFoundError(aggregate_id)
        if version > head.version:
            raise InvalidInputError(
                "version", f"is past the aggregate's version ({head.version}), got {version}"
            )
        return head

    async def _objects_of(self, record: SnapshotRecord, versions: list[int]) -> list[str]:
        """S3 keys of the snapshots this save removes or overwrites."""
        keys = []
        for version in versions:
            old = await self._backend.get(
                record.aggregate_id, snapshot_sort_key(version, record.schema)
            )
            if isinstance(old, SnapshotRecord) and old.pointer is not None:
                keys.append(old.pointer.key)
        return keys


class _Superseded(Exception):
    """Newer snapshots arrived meanwhile; this one would be dropped at once."""


def _retained(head: HeadRecord, schema: str, version: int, keep: int) -> tuple[int, ...] | None:
    """The versions kept after adding ``version``; None if it would not be among them."""
    kept = tuple(sorted({*head.snapshots.get(schema, ()), version}))[-keep:]
    return kept if version in kept else None


def _record(
    aggregate_id: str, version: int, schema: str, encoded: EncodedPayload
) -> SnapshotRecord:
    return SnapshotRecord(
        aggregate_id=aggregate_id,
        version=version,
        schema=schema,
        timestamp_us=now_us(),
        payload=encoded.payload,
        pointer=encoded.pointer,
    )


def _plan(head: HeadRecord, record: SnapshotRecord, kept: tuple[int, ...]) -> CommitPlan:
    index = SnapshotIndexWrite(
        aggregate_id=record.aggregate_id,
        schema=record.schema,
        versions=kept,
        expected_seq=head.snapshot_seq,
        min_version=record.version,
    )
    dropped = [v for v in head.snapshots.get(record.schema, ()) if v not in kept]
    writes: list[Write] = [index, PutSnapshot(record)]
    writes += [DeleteSnapshot(record.aggregate_id, v, record.schema) for v in dropped]
    token = f"snap-{head.snapshot_seq}-{record.timestamp_us}"[:36]
    return CommitPlan(writes=tuple(writes), token=token)
