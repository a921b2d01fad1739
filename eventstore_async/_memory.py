"""An in-process backend with DynamoDB's semantics, for fast unit tests.

Every condition the DynamoDB backend sends is checked here the same way, and a
refused commit reports the old items just as ``ALL_OLD`` does. A commit checks and
applies its writes with no await in between, so it is atomic on the event loop.
The schema exists from the start; ``drop_schema()`` removes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import anyio.lowlevel

from ._backend import Page
from ._errors import SchemaMissingError, StorageError
from ._objects import ObjectInfo, UploadInfo
from ._records import (
    ChangeSetRecord,
    CommitPlan,
    CommitRejected,
    HeadRecord,
    HeadWrite,
    PutChangeSet,
    PutMarker,
    Record,
    Rejection,
    Write,
    marker_sort_key,
)

__all__ = ["MemoryBackend"]

_DEFAULT_PAGE = 1000


class MemoryBackend:
    def __init__(self, *, page_size: int | None = None, with_objects: bool = True) -> None:
        self._partitions: dict[str, dict[int, Record]] | None = {}
        self._page_size = page_size or _DEFAULT_PAGE
        self._objects = MemoryObjects() if with_objects else None

    @property
    def objects(self) -> MemoryObjects | None:
        return self._objects

    async def open(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def create_schema(self) -> None:
        await anyio.lowlevel.checkpoint()
        if self._partitions is None:
            self._partitions = {}

    async def drop_schema(self) -> None:
        await anyio.lowlevel.checkpoint()
        self._partitions = None

    @property
    def _table(self) -> dict[str, dict[int, Record]]:
        if self._partitions is None:
            raise SchemaMissingError(
                "the in-memory table was dropped", code="ResourceNotFoundException", operation=""
            )
        return self._partitions

    # -- writes -------------------------------------------------------------------------

    async def commit(self, plan: CommitPlan) -> None:
        await anyio.lowlevel.checkpoint()
        table = self._table
        reasons = [self._objection(table, write) for write in plan.writes]
        if any(reason is not None for reason in reasons):
            raise CommitRejected(reasons)
        for write in plan.writes:
            self._apply(table, write)

    def _objection(self, table: dict[str, dict[int, Record]], write: Write) -> Rejection | None:
        sort_key = _sort_key(write)
        aggregate_id = _aggregate_id(write)
        old = table.get(aggregate_id, {}).get(sort_key)
        if isinstance(write, HeadWrite) and write.expected_version != 0:
            if _head_matches(old, write):
                return None
        elif old is None:
            return None
        return Rejection(code="ConditionalCheckFailed", old=old)

    def _apply(self, table: dict[str, dict[int, Record]], write: Write) -> None:
        partition = table.setdefault(_aggregate_id(write), {})
        sort_key = _sort_key(write)
        if isinstance(write, HeadWrite):
            partition[0] = _moved_head(partition.get(0), write)
        else:
            partition[sort_key] = write.record

    # -- reads --------------------------------------------------------------------------

    async def get_head(self, aggregate_id: str) -> HeadRecord | None:
        await anyio.lowlevel.checkpoint()
        record = self._table.get(aggregate_id, {}).get(0)
        return record if isinstance(record, HeadRecord) else None

    async def get_change_set(self, aggregate_id: str, version: int) -> ChangeSetRecord | None:
        await anyio.lowlevel.checkpoint()
        record = self._table.get(aggregate_id, {}).get(version)
        return record if isinstance(record, ChangeSetRecord) else None

    async def referenced_objects(self, aggregate_id: str) -> set[str]:
        await anyio.lowlevel.checkpoint()
        return {
            record.pointer.key
            for record in self._table.get(aggregate_id, {}).values()
            if isinstance(record, ChangeSetRecord) and record.pointer is not None
        }

    async def query(
        self, aggregate_id: str, low: int, high: int | None
    ) -> AsyncGenerator[Page, None]:
        start = max(low, 0)
        while True:
            await anyio.lowlevel.checkpoint()
            partition = self._table.get(aggregate_id, {})
            keys = sorted(k for k in partition if k >= start and (high is None or k <= high))
            page_keys = keys[: self._page_size]
            page: Page = [partition[k] for k in page_keys]  # type: ignore[misc]
            yield page
            if len(keys) <= self._page_size:
                return
            start = page_keys[-1] + 1


def _aggregate_id(write: Write) -> str:
    if isinstance(write, HeadWrite):
        return write.head.aggregate_id
    return write.record.aggregate_id


def _sort_key(write: Write) -> int:
    if isinstance(write, HeadWrite):
        return 0
    if isinstance(write, PutChangeSet):
        return write.record.version
    assert isinstance(write, PutMarker)
    return marker_sort_key(write.record.commit_id)


def _head_matches(old: Record | None, write: HeadWrite) -> bool:
    if not isinstance(old, HeadRecord) or old.version != write.expected_version:
        return False
    given = write.head.aggregate_type
    return given is None or old.aggregate_type is None or old.aggregate_type == given


def _moved_head(old: Record | None, write: HeadWrite) -> HeadRecord:
    if not isinstance(old, HeadRecord):
        return write.head
    return dataclasses.replace(
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
    return datetime.now(UTC)
