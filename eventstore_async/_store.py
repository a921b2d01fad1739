"""EventStore: the facade users hold. It validates, encodes, and delegates."""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import anyio
import msgspec

from ._append import Appender
from ._backend import Backend
from ._codec import EventCodec
from ._config import DYNAMODB_ITEM_LIMIT, StoreConfig
from ._decode import to_head
from ._dynamodb import DynamoDBBackend
from ._errors import ChangeSetTooLargeError, StoreClosedError
from ._items import item_size, record_to_item
from ._load import load_history, read_change_sets
from ._memory import MemoryBackend
from ._models import ANY, AggregateHead, AggregateHistory, AnyVersion, ChangeSet
from ._plan import AppendRequest
from ._validation import (
    check_aggregate_id,
    check_aggregate_type,
    check_commit_id,
    check_events,
    check_expected_version,
    check_metadata,
    check_version_range,
)

__all__ = ["EventStore"]


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class EventStore:
    """An event store on DynamoDB, used as an async context manager.

    ``async with EventStore(config) as store:`` opens the pooled AWS clients;
    leaving the block (or ``await store.aclose()``) closes them. A closed store
    cannot be reopened.

    Args:
        config: where the data lives and how to reach it.
        types: msgspec Struct event types to decode back to (see :meth:`register`).
    """

    def __init__(
        self,
        config: StoreConfig,
        *,
        types: Iterable[type[msgspec.Struct]] = (),
        _backend: Backend | None = None,
    ) -> None:
        self._config = config
        self._codec = EventCodec(*types)
        self._backend: Backend = _backend or DynamoDBBackend(config)
        self._appender = Appender(self._backend, self._codec, config)
        self._state = _State.UNOPENED

    @classmethod
    def in_memory(
        cls, *, types: Iterable[type[msgspec.Struct]] = (), page_size: int | None = None
    ) -> EventStore:
        """A store kept in this process, with the same semantics, for unit tests.

        Its schema exists from the start. Nothing is shared between two such stores.
        """
        config = StoreConfig(table_name="in-memory", page_size=page_size)
        return cls(config, types=types, _backend=MemoryBackend(page_size=page_size))

    @property
    def config(self) -> StoreConfig:
        return self._config

    def register(self, *types: type[msgspec.Struct]) -> None:
        """Make loads decode events of these Struct types back to them.

        Events of types never registered load as :class:`RawEvent`. A type is also
        registered when first appended.

        Raises:
            InvalidInputError: not a Struct type, or its name is taken by another type.
        """
        self._codec.register(*types)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise StoreClosedError(f"the store is {self._state.value}; create a new EventStore")
        await self._backend.open()
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the clients; safe to call twice. Runs to the end even when cancelled."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        with anyio.CancelScope(shield=True):
            await self._backend.aclose()

    def _require_open(self) -> None:
        if self._state is not _State.OPEN:
            raise StoreClosedError(
                f"the store is {self._state.value}; use it inside 'async with EventStore(...)'"
            )

    # -- schema -------------------------------------------------------------------------

    async def create_schema(self) -> None:
        """Create the table (and bucket, when configured) if missing. Idempotent.

        Meant for development and tests; production schemas belong in infrastructure
        code (see the README's Operations section).
        """
        self._require_open()
        await self._backend.create_schema()

    async def drop_schema(self) -> None:
        """Delete the table and the bucket, with all their data."""
        self._require_open()
        await self._backend.drop_schema()

    # -- writes -------------------------------------------------------------------------

    async def append(
        self,
        aggregate_id: str,
        events: Iterable[Any],
        *,
        expected_version: int | AnyVersion,
        aggregate_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        commit_id: str | None = None,
    ) -> ChangeSet:
        """Append one change set atomically as the aggregate's next version.

        Args:
            aggregate_id: the aggregate's id (1 to 512 UTF-8 bytes, no control characters).
            events: one or more msgspec Structs or str-keyed mappings.
            expected_version: the version the aggregate must have now (0: it must not
                exist yet), or ``ANY``.
            aggregate_type: recorded when the aggregate is created; a later append that
                names another type is refused.
            metadata: a str-keyed mapping stored with the change set.
            commit_id: the idempotency key (a new UUID when omitted). Retrying an append
                with the same commit id and expected version returns the stored change
                set instead of writing it twice; with ``ANY`` any retry is safe.

        Returns:
            The stored change set.

        Raises:
            InvalidInputError: an argument is not acceptable (nothing was sent).
            ConcurrencyError: the aggregate is not at ``expected_version``.
            AggregateTypeMismatchError: the aggregate has another type.
            ChangeSetTooLargeError: the change set is over DynamoDB's item limit.
            CommitOutcomeUnknownError: the response was lost; retry with the commit id.
            StorageError: AWS failed the request (see its subclasses).
        """
        self._require_open()
        request, expected = self._append_request(
            aggregate_id, events, expected_version, aggregate_type, metadata, commit_id
        )
        return await self._appender.append(request, expected)

    def _append_request(
        self,
        aggregate_id: Any,
        events: Any,
        expected_version: Any,
        aggregate_type: Any,
        metadata: Any,
        commit_id: Any,
    ) -> tuple[AppendRequest, int | AnyVersion]:
        aggregate_id = check_aggregate_id(aggregate_id)
        expected = check_expected_version(expected_version)
        aggregate_type = check_aggregate_type(aggregate_type)
        commit_id = check_commit_id(commit_id) or uuid.uuid4().hex
        metadata = check_metadata(metadata)
        events = tuple(check_events(events))
        request = AppendRequest(
            aggregate_id=aggregate_id,
            events=events,
            payload=self._codec.encode_events(events),
            metadata=dict(metadata or {}),
            metadata_bytes=self._codec.encode_metadata(metadata) if metadata else None,
            aggregate_type=aggregate_type,
            commit_id=commit_id,
            guarded=expected is ANY,
        )
        _check_item_size(request)
        return request, expected

    # -- reads --------------------------------------------------------------------------

    async def load(
        self, aggregate_id: str, *, from_version: int = 1, to_version: int | None = None
    ) -> AggregateHistory:
        """The aggregate's head and its change sets ``from_version..to_version``.

        Reads are strongly consistent and follow every page. The change sets never go
        past the head's version, so ``history.version`` is the version to expect next.

        Raises:
            InvalidInputError: a bad id or version range.
            AggregateNotFoundError: the aggregate has no change sets.
            IntegrityError: stored data does not decode or a version is missing.
            StorageError: AWS failed the request.
        """
        self._require_open()
        aggregate_id = check_aggregate_id(aggregate_id)
        low, high = check_version_range(from_version, to_version)
        return await load_history(self._backend, self._codec, aggregate_id, low, high)

    def read(
        self, aggregate_id: str, *, from_version: int = 1, to_version: int | None = None
    ) -> AsyncIterator[ChangeSet]:
        """Stream change sets ``from_version..to_version`` page by page.

        Memory holds one page (at most 1 MB of items). An aggregate that does not exist
        yields nothing. Arguments are checked when called; otherwise raises like
        :meth:`load`, except for a missing aggregate.
        """
        self._require_open()
        aggregate_id = check_aggregate_id(aggregate_id)
        low, high = check_version_range(from_version, to_version)
        return read_change_sets(self._backend, self._codec, aggregate_id, low, high)

    async def head(self, aggregate_id: str) -> AggregateHead | None:
        """The aggregate's head, or ``None`` when it does not exist (consistent read)."""
        self._require_open()
        record = await self._backend.get_head(check_aggregate_id(aggregate_id))
        return to_head(record) if record is not None else None


def _check_item_size(request: AppendRequest) -> None:
    size = item_size(record_to_item(request.record(version=2**53, timestamp_us=2**62)))
    if size > DYNAMODB_ITEM_LIMIT:
        raise ChangeSetTooLargeError("the change set item", size, DYNAMODB_ITEM_LIMIT)
