"""The feed's shape is a property of the table: its shard count is recorded there.

Aggregates are spread over shards by ``crc32(id) % feed_shards``, and a subscription
reads every shard of that count: a store that used another count would write entries
nobody reads (0 shards: none at all) or break an aggregate's order across shards. So
the first store to write records its count in the table (an item in the schema
partition, written only if absent), and every store checks its own against it once,
before its first append, subscription or ``create_schema``.
"""

from __future__ import annotations

import uuid

import anyio

from .._backends.protocol import Backend
from .._errors import InvalidInputError, StorageUnavailableError
from .._records import (
    CommitPlan,
    CommitRejected,
    FeedShapeRecord,
    PutFeedShape,
    schema_partition,
)
from .._retry import full_jitter

__all__ = ["FeedShape"]

_ATTEMPTS = 8


class FeedShape:
    """Checks this store's ``feed_shards`` against the table's, once per store."""

    def __init__(self, backend: Backend, shards: int, table_name: str) -> None:
        self._backend = backend
        self._shards = shards
        self._table_name = table_name
        self._checked = False
        self._lock = anyio.Lock()

    async def check(self) -> None:
        """Record the count if the table has none; refuse another count.

        Raises:
            InvalidInputError: (``argument="feed_shards"``) the table records another
                count; nothing was written.
            StorageError: the table could not be read or written.
        """
        if self._checked:
            return
        async with self._lock:
            if self._checked:
                return
            recorded = await self._recorded()
            if recorded != self._shards:
                raise self._mismatch(recorded)
            self._checked = True

    def forget(self) -> None:
        """The schema was dropped: check again next time."""
        self._checked = False

    async def _recorded(self) -> int:
        """The table's count, recording ours when it has none."""
        codes: set[str] = set()
        for attempt in range(_ATTEMPTS):
            if attempt:
                await anyio.sleep(full_jitter(attempt - 1, 0.01, 0.5))
            found = await self._backend.get(schema_partition(), 0)
            if isinstance(found, FeedShapeRecord):
                return found.shards
            record = FeedShapeRecord(shards=self._shards)
            plan = CommitPlan(writes=(PutFeedShape(record),), token=uuid.uuid4().hex)
            try:
                await self._backend.commit(plan)
            except CommitRejected as refused:  # another store recorded one first
                codes = refused.codes()
                continue
            return self._shards
        raise StorageUnavailableError(
            f"the feed's shard count could not be recorded in {self._table_name!r}",
            code=",".join(sorted(codes)) or "TransactionCanceledException",
            operation="TransactWriteItems",
        )

    def _mismatch(self, recorded: int) -> InvalidInputError:
        return InvalidInputError(
            "feed_shards",
            f"is {self._shards}, but table {self._table_name!r} records {recorded} feed "
            "shards: every store on a table must use the table's count (see the README, "
            '"Changing the number of feed shards")',
        )
