"""An in-process backend with DynamoDB's semantics, for fast unit tests.

Every condition the DynamoDB backend sends is checked here the same way, and a
refused commit reports the old items just as ``ALL_OLD`` does. A commit checks and
applies its writes with no await in between, so it is atomic on the event loop.
The schema exists from the start; ``drop_schema()`` removes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator

import anyio.lowlevel

from ._backend import Page
from ._errors import SchemaMissingError
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
    def __init__(self, *, page_size: int | None = None) -> None:
        self._partitions: dict[str, dict[int, Record]] | None = {}
        self._page_size = page_size or _DEFAULT_PAGE

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
