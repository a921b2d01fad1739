"""What a storage backend must do. The store's logic (append, load) is written once
against this protocol; DynamoDB and the in-memory backend implement it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .._capacity import CapacityMeter
from .._records import ChangeSetRecord, CommitPlan, HeadRecord, Record, SnapshotRecord, SortKey

__all__ = [
    "Backend",
    "MalformedItem",
    "ObjectInfo",
    "ObjectStore",
    "Page",
    "ScanPage",
    "UploadInfo",
]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """An incomplete multipart upload."""

    key: str
    upload_id: str
    initiated: datetime


class ObjectStore(Protocol):
    async def put(self, key: str, body: bytes) -> None:
        """Write an object; refused (``StorageError``) if the key exists."""

    async def start_multipart(self, key: str) -> str:
        """Begin a multipart upload; returns its id."""

    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        """Upload part ``number`` (from 1); returns its ETag."""

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        """Assemble the parts (ETags in part order); refused if the key exists."""

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard an upload and its parts."""

    def get(self, key: str) -> AsyncGenerator[bytes, None]:
        """The object's bytes in chunks."""
        ...

    async def delete(self, key: str) -> None:
        """Delete an object (no error when it is absent)."""

    def list(self, prefix: str) -> AsyncGenerator[ObjectInfo, None]:
        """Every object under ``prefix``."""
        ...

    def list_uploads(self, prefix: str) -> AsyncGenerator[UploadInfo, None]:
        """Every incomplete multipart upload under ``prefix``."""
        ...


Page = list[HeadRecord | ChangeSetRecord | SnapshotRecord]


@dataclass(frozen=True, slots=True)
class MalformedItem:
    """An item of the table that does not parse as any record (seen by ``scan``)."""

    partition: str
    sort_key: str
    problem: str


ScanPage = list[Record | MalformedItem]


class Backend(Protocol):
    #: Capacity units the table reported, per operation kind (see ``_capacity.py``).
    capacity: CapacityMeter

    @property
    def objects(self) -> ObjectStore | None:
        """Where offloaded payloads go; None when no bucket is configured."""

    async def open(self) -> None:
        """Acquire connections."""

    async def aclose(self) -> None:
        """Release connections."""

    async def create_schema(self) -> None:
        """Create the table and bucket if missing (idempotent)."""

    def change_set_size(self, record: ChangeSetRecord) -> int:
        """Bytes the change set's item takes (names and values, as DynamoDB counts
        them); the store refuses an append whose item is over the 400 KB limit."""
        ...

    def companion_size(
        self, record: ChangeSetRecord, aggregate_type: str | None, feed: bool
    ) -> int:
        """At most the bytes of the other items an append writes with ``record`` (the
        head, a commit marker and, with the ``feed`` on, its entry and counter), which
        count against the 4 MB transaction limit."""
        ...

    async def ping(self) -> None:
        """Check that the endpoint answers and the table (and bucket) exist.

        Raises:
            SchemaMissingError: the table or bucket is missing.
            StorageError: anything else (unreachable, refused credentials...).
        """

    async def drop_schema(self) -> None:
        """Delete the table and bucket with everything in them."""

    async def commit(self, plan: CommitPlan) -> None:
        """Apply every write of the plan atomically.

        Raises:
            CommitRejected: a condition failed or the transaction conflicted.
            StorageError: the request failed.
        """

    async def get(self, partition: str, sort_key: SortKey) -> Record | None:
        """Consistent read of one item."""

    async def get_many(self, keys: list[tuple[str, SortKey]]) -> list[Record | None]:
        """Consistent reads of several items (in the order asked)."""

    async def scan_partition(self, partition: str, low: SortKey, limit: int) -> list[Record]:
        """Up to ``limit`` items of a partition from sort key ``low`` on (one request)."""

    async def get_head(self, aggregate_id: str) -> HeadRecord | None:
        """Consistent read of an aggregate's head."""

    async def get_change_set(self, aggregate_id: str, version: int) -> ChangeSetRecord | None:
        """Consistent read of one change set."""

    async def referenced_objects(self, aggregate_id: str) -> set[str]:
        """Object keys the aggregate's change sets point to."""

    def scan(self, *, kind: str | None = None) -> AsyncGenerator[ScanPage, None]:
        """Every item of the table, page by page (consistent; for operators' checks), or
        only the system items of one ``kind`` (``"checkpoint"``, ``"feed_entry"``...)."""
        ...

    def query(
        self,
        aggregate_id: str,
        low: SortKey,
        high: SortKey | None,
        *,
        with_snapshots: bool = False,
    ) -> AsyncGenerator[Page, None]:
        """Consistent pages of the head and change sets with ``low <= sk <= high``
        (``high=None``: no end), and snapshots too when asked."""
        ...
