"""An in-process backend with DynamoDB's semantics, for fast unit tests.

Every condition the DynamoDB backend sends is checked here the same way, and a
refused commit reports the old items just as ``ALL_OLD`` does. A plan DynamoDB would
refuse outright (no writes or more than 100, or two writes to one item) raises the
:class:`StorageError` with code ``ValidationException`` that the DynamoDB backend
raises for it, so the store cannot build one unnoticed in unit tests. A commit checks and
applies its writes with no await in between, so it is atomic on the event loop.
The schema exists from the start; ``drop_schema()`` removes it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from decimal import Decimal

import anyio.lowlevel
import msgspec

from .._capacity import CapacityMeter
from .._config import StoreConfig
from .._errors import SchemaMissingError, StorageError
from .._records import (
    MAX_TRANSACTION_ACTIONS,
    ChangeSetRecord,
    CheckpointRecord,
    CheckpointWrite,
    CommitPlan,
    CommitRejected,
    DeleteMember,
    DeleteSnapshot,
    DeleteView,
    FeedAdvance,
    FeedCounterRecord,
    FeedEntryRecord,
    HeadRecord,
    HeadWrite,
    LeaseWrite,
    PutChangeSet,
    PutFeedEntry,
    PutFeedShape,
    PutMarker,
    PutMember,
    PutSnapshot,
    PutView,
    Record,
    Rejection,
    SnapshotIndexWrite,
    SnapshotRecord,
    SortKey,
    ViewRecord,
    Write,
    checkpoint_partition,
    feed_partition,
    group_partition,
    marker_sort_key,
    member_sort_key,
    schema_partition,
    snapshot_sort_key,
    view_partition,
)
from .item_sizes import change_set_item_size, companion_items_size
from .protocol import ObjectInfo, Page, ScanPage, UploadInfo

__all__ = ["MemoryBackend", "MemoryObjects", "memory_backend"]

#: The ``kind`` attribute of system items (see ``aws/items.py``) -> their record type.
_SYSTEM_KINDS: dict[str, type] = {
    "feed_counter": FeedCounterRecord,
    "feed_entry": FeedEntryRecord,
    "checkpoint": CheckpointRecord,
    "view": ViewRecord,
}

_DEFAULT_PAGE = 1000


def memory_backend(config: StoreConfig) -> MemoryBackend:
    """An empty in-process backend with DynamoDB's semantics, for ``config``: its
    ``page_size``, and an in-memory bucket when ``config.bucket_name`` is set. The
    schema exists from the start."""
    return MemoryBackend(page_size=config.page_size, with_objects=config.bucket_name is not None)


class MemoryBackend:
    def __init__(self, *, page_size: int | None = None, with_objects: bool = True) -> None:
        self._partitions: dict[str, dict[SortKey, Record]] | None = {}
        self._page_size = page_size or _DEFAULT_PAGE
        self._objects = MemoryObjects() if with_objects else None
        self.capacity = CapacityMeter()  # nothing is consumed in memory: stays empty

    @property
    def objects(self) -> MemoryObjects | None:
        return self._objects

    async def open(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()

    # Sizes as DynamoDB counts them (the same pure functions as the DynamoDB backend
    # uses, in item_sizes), so an append too large for DynamoDB is refused here too.

    def change_set_size(self, record: ChangeSetRecord) -> int:
        return change_set_item_size(record)

    def companion_size(
        self, record: ChangeSetRecord, aggregate_type: str | None, feed: bool
    ) -> int:
        return companion_items_size(record, aggregate_type, feed)

    async def create_schema(self) -> None:
        await anyio.lowlevel.checkpoint()
        if self._partitions is None:
            self._partitions = {}

    async def drop_schema(self) -> None:
        await anyio.lowlevel.checkpoint()
        self._partitions = None

    async def ping(self) -> None:
        await anyio.lowlevel.checkpoint()
        _ = self._table

    @property
    def _table(self) -> dict[str, dict[SortKey, Record]]:
        if self._partitions is None:
            raise SchemaMissingError.of(
                "table", "in-memory", code="ResourceNotFoundException", operation=""
            )
        return self._partitions

    # -- writes -------------------------------------------------------------------------

    async def commit(self, plan: CommitPlan) -> None:
        await anyio.lowlevel.checkpoint()
        _check_transaction(plan)
        table = self._table
        olds = [table.get(pk, {}).get(sk) for pk, sk in map(_address, plan.writes)]
        reasons = [
            Rejection(code="ConditionalCheckFailed", old=old) if _refuses(old, write) else None
            for old, write in zip(olds, plan.writes, strict=True)
        ]
        if any(reason is not None for reason in reasons):
            raise CommitRejected(reasons)
        for old, write in zip(olds, plan.writes, strict=True):
            pk, sk = _address(write)
            new = _applied(old, write)
            if new is None:
                table.get(pk, {}).pop(sk, None)
            else:
                table.setdefault(pk, {})[sk] = new

    # -- reads --------------------------------------------------------------------------

    async def get(self, partition: str, sort_key: SortKey) -> Record | None:
        await anyio.lowlevel.checkpoint()
        return self._table.get(partition, {}).get(sort_key)

    async def get_many(self, keys: list[tuple[str, SortKey]]) -> list[Record | None]:
        await anyio.lowlevel.checkpoint()
        return [self._table.get(partition, {}).get(sort_key) for partition, sort_key in keys]

    async def scan_partition(self, partition: str, low: SortKey, limit: int) -> list[Record]:
        await anyio.lowlevel.checkpoint()
        items = self._table.get(partition, {})
        return [items[k] for k in sorted(k for k in items if k >= low)[:limit]]

    async def get_head(self, aggregate_id: str) -> HeadRecord | None:
        record = await self.get(aggregate_id, 0)
        return record if isinstance(record, HeadRecord) else None

    async def get_change_set(self, aggregate_id: str, version: int) -> ChangeSetRecord | None:
        record = await self.get(aggregate_id, version)
        return record if isinstance(record, ChangeSetRecord) else None

    async def referenced_objects(self, aggregate_id: str) -> set[str]:
        await anyio.lowlevel.checkpoint()
        return {
            record.pointer.key
            for record in self._table.get(aggregate_id, {}).values()
            if isinstance(record, ChangeSetRecord | SnapshotRecord) and record.pointer is not None
        }

    async def scan(self, *, kind: str | None = None) -> AsyncGenerator[ScanPage, None]:
        wanted = _SYSTEM_KINDS.get(kind or "", object)
        records: ScanPage = [
            r for part in self._table.values() for r in part.values() if isinstance(r, wanted)
        ]
        for start in range(0, len(records), self._page_size):
            await anyio.lowlevel.checkpoint()
            yield records[start : start + self._page_size]

    async def query(
        self,
        aggregate_id: str,
        low: SortKey,
        high: SortKey | None,
        *,
        with_snapshots: bool = False,
    ) -> AsyncGenerator[Page, None]:
        start: SortKey = max(low, 0)
        while True:
            await anyio.lowlevel.checkpoint()
            partition = self._table.get(aggregate_id, {})
            keys = sorted(k for k in partition if k >= start and (high is None or k <= high))
            page_keys = keys[: self._page_size]
            records = [partition[k] for k in page_keys]
            yield [
                r
                for r in records
                if isinstance(r, HeadRecord | ChangeSetRecord)
                or (with_snapshots and isinstance(r, SnapshotRecord))
            ]
            if len(keys) <= self._page_size:
                return
            start = _after(page_keys[-1])


def _check_transaction(plan: CommitPlan) -> None:
    """Refuse what DynamoDB validates before any condition: 1 to 100 actions, each on
    its own item (it answers ``ValidationException``, which the DynamoDB backend raises
    as a :class:`StorageError`)."""
    count = len(plan.writes)
    if not 1 <= count <= MAX_TRANSACTION_ACTIONS:
        raise _validation_error(
            "1 validation error detected at 'transactItems' failed to satisfy constraint: "
            f"Member must have length between 1 and {MAX_TRANSACTION_ACTIONS} "
            f"(the plan has {count} writes)"
        )
    seen: set[tuple[str, SortKey]] = set()
    for write in plan.writes:
        address = _address(write)
        if address in seen:
            raise _validation_error(
                "Transaction request cannot include multiple operations on one item "
                f"(pk {address[0]!r}, sk {address[1]}: {type(write).__name__} and another)"
            )
        seen.add(address)


def _validation_error(message: str) -> StorageError:
    return StorageError(message, code="ValidationException", operation="TransactWriteItems")


def _after(sort_key: SortKey) -> SortKey:
    return sort_key + Decimal("1e-10") if isinstance(sort_key, Decimal) else sort_key + 1


def _address(write: Write) -> tuple[str, SortKey]:
    """The item a write touches: (partition key, sort key)."""
    if isinstance(write, HeadWrite):
        return write.head.aggregate_id, 0
    if isinstance(write, SnapshotIndexWrite):
        return write.aggregate_id, 0
    if isinstance(write, PutChangeSet):
        return write.record.aggregate_id, write.record.version
    if isinstance(write, PutMarker):
        return write.record.aggregate_id, marker_sort_key(write.record.commit_id)
    if isinstance(write, PutSnapshot):
        record = write.record
        return record.aggregate_id, snapshot_sort_key(record.version, record.schema)
    if isinstance(write, DeleteSnapshot):
        return write.aggregate_id, snapshot_sort_key(write.version, write.schema)
    if isinstance(write, FeedAdvance):
        return feed_partition(write.shard), 0
    if isinstance(write, PutFeedEntry):
        return feed_partition(write.record.shard), write.record.position
    if isinstance(write, LeaseWrite | CheckpointWrite):
        return checkpoint_partition(write.name), 0
    if isinstance(write, PutFeedShape):
        return schema_partition(), 0
    if isinstance(write, PutMember):
        return group_partition(write.record.group), member_sort_key(write.record.owner)
    if isinstance(write, DeleteMember):
        return group_partition(write.group), member_sort_key(write.owner)
    if isinstance(write, PutView):
        return view_partition(write.record.view, write.record.key), 0
    return view_partition(write.view, write.key), 0


def _refuses(old: Record | None, write: Write) -> bool:
    """The condition DynamoDB would check for this write (see ``aws/items.py``), failed."""
    if isinstance(write, HeadWrite):
        return old is not None if write.expected_version == 0 else not _head_matches(old, write)
    if isinstance(write, PutChangeSet | PutMarker | PutFeedEntry | PutFeedShape):
        return old is not None
    if isinstance(write, SnapshotIndexWrite):
        return not (
            isinstance(old, HeadRecord)
            and old.version >= write.min_version
            and old.snapshot_seq == write.expected_seq
        )
    if isinstance(write, FeedAdvance):
        position = old.position if isinstance(old, FeedCounterRecord) else 0
        return position != write.expected or (write.expected == 0 and old is not None)
    if isinstance(write, LeaseWrite):
        return isinstance(old, CheckpointRecord) and not (
            old.lease_until_us < write.now_us or old.owner == write.owner
        )
    if isinstance(write, CheckpointWrite):
        return not (
            isinstance(old, CheckpointRecord)
            and old.owner == write.owner
            and old.lease_until_us >= write.now_us
            and old.seq == write.expected_seq
        )
    return False  # snapshots and views are put and deleted unconditionally


def _applied(old: Record | None, write: Write) -> Record | None:
    """The item after the write (None: deleted)."""
    if isinstance(write, HeadWrite):
        return _moved_head(old, write)
    if isinstance(write, SnapshotIndexWrite):
        assert isinstance(old, HeadRecord)
        snapshots = {**old.snapshots, write.schema: write.versions}
        return msgspec.structs.replace(old, snapshots=snapshots, snapshot_seq=old.snapshot_seq + 1)
    if isinstance(write, DeleteSnapshot | DeleteView | DeleteMember):
        return None
    if isinstance(write, FeedAdvance):
        return FeedCounterRecord(write.shard, write.expected + write.count)
    if isinstance(write, LeaseWrite):
        if isinstance(old, CheckpointRecord):
            return msgspec.structs.replace(
                old, owner=write.owner, lease_until_us=write.lease_until_us
            )
        return CheckpointRecord(write.name, write.positions, write.owner, write.lease_until_us, 0)
    if isinstance(write, CheckpointWrite):
        assert isinstance(old, CheckpointRecord)
        until = old.lease_until_us if write.lease_until_us is None else write.lease_until_us
        return msgspec.structs.replace(
            old, positions=write.positions, seq=old.seq + 1, lease_until_us=until
        )
    return write.record


def _head_matches(old: Record | None, write: HeadWrite) -> bool:
    if not isinstance(old, HeadRecord) or old.version != write.expected_version:
        return False
    given = write.head.aggregate_type
    return given is None or old.aggregate_type is None or old.aggregate_type == given


def _moved_head(old: Record | None, write: HeadWrite) -> HeadRecord:
    if not isinstance(old, HeadRecord):
        return write.head
    return msgspec.structs.replace(
        old,
        version=write.head.version,
        last_commit_id=write.head.last_commit_id,
        event_count=old.event_count + write.added_events,
        updated_us=write.head.updated_us,
        aggregate_type=old.aggregate_type or write.head.aggregate_type,
    )


class MemoryObjects:
    """An in-process :class:`~._objects.ObjectStore` with S3's semantics for our calls:
    conditional writes, multipart uploads (assembled on completion), chunked reads."""

    def __init__(self, *, chunk_size: int = 1024 * 1024) -> None:
        self.objects: dict[str, tuple[bytes, datetime]] = {}
        self.uploads: dict[str, tuple[str, dict[int, bytes], datetime]] = {}
        self._chunk_size = chunk_size

    async def put(self, key: str, body: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        self._refuse_existing(key)
        self.objects[key] = (bytes(body), _now())

    async def start_multipart(self, key: str) -> str:
        await anyio.lowlevel.checkpoint()
        upload_id = uuid.uuid4().hex
        self.uploads[upload_id] = (key, {}, _now())
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        await anyio.lowlevel.checkpoint()
        self._upload(key, upload_id)[number] = bytes(body)
        return hashlib.md5(body, usedforsecurity=False).hexdigest()

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        await anyio.lowlevel.checkpoint()
        parts = self._upload(key, upload_id)
        if sorted(parts) != list(range(1, len(etags) + 1)):
            raise StorageError("parts do not match", code="InvalidPart", operation="Complete")
        self._refuse_existing(key)
        started = self.uploads.pop(upload_id)[2]
        self.objects[key] = (b"".join(parts[n] for n in sorted(parts)), started)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        self.uploads.pop(upload_id, None)

    async def get(self, key: str) -> AsyncGenerator[bytes, None]:
        await anyio.lowlevel.checkpoint()
        if key not in self.objects:
            raise StorageError("no such key", code="NoSuchKey", operation="GetObject")
        body = self.objects[key][0]
        for start in range(0, len(body), self._chunk_size):
            yield body[start : start + self._chunk_size]
            await anyio.lowlevel.checkpoint()

    async def delete(self, key: str) -> None:
        await anyio.lowlevel.checkpoint()
        self.objects.pop(key, None)

    async def list(self, prefix: str) -> AsyncGenerator[ObjectInfo, None]:
        for key, (body, modified) in sorted(self.objects.items()):
            if key.startswith(prefix):
                await anyio.lowlevel.checkpoint()
                yield ObjectInfo(key, len(body), modified)

    async def list_uploads(self, prefix: str) -> AsyncGenerator[UploadInfo, None]:
        for upload_id, (key, _, started) in list(self.uploads.items()):
            if key.startswith(prefix):
                await anyio.lowlevel.checkpoint()
                yield UploadInfo(key, upload_id, started)

    def _refuse_existing(self, key: str) -> None:
        if key in self.objects:
            raise StorageError("object exists", code="PreconditionFailed", operation="PutObject")

    def _upload(self, key: str, upload_id: str) -> dict[int, bytes]:
        found = self.uploads.get(upload_id)
        if found is None or found[0] != key:
            raise StorageError("no such upload", code="NoSuchUpload", operation="UploadPart")
        return found[1]


def _now() -> datetime:
    """As S3 stamps objects and uploads: to the second, rounded down."""
    return datetime.now(UTC).replace(microsecond=0)
