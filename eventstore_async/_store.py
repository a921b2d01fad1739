"""EventStore: the facade users hold. It validates, encodes, and delegates."""

from __future__ import annotations

import dataclasses
import enum
import functools
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing, contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import anyio
import msgspec

from ._backends.aws.dynamodb import DynamoDBBackend
from ._backends.aws.items import change_set_item_size
from ._backends.aws.logs import install_redaction
from ._backends.memory import MemoryBackend
from ._backends.protocol import Backend
from ._codec import EventCodec
from ._config import (
    DYNAMODB_ITEM_LIMIT,
    DYNAMODB_TRANSACTION_LIMIT,
    MAX_METADATA_BYTES,
    StoreConfig,
)
from ._errors import (
    AggregateNotFoundError,
    ChangeSetNotFoundError,
    ChangeSetTooLargeError,
    CommitOutcomeUnknownError,
    InvalidInputError,
    StorageError,
    StoreClosedError,
)
from ._feed.positions import shard_of
from ._feed.subscription import Subscription, SubscriptionSettings
from ._feed.views import check_name, check_view_key, check_view_name
from ._models import (
    ANY,
    AggregateHead,
    AggregateHistory,
    AnyVersion,
    Append,
    ChangeSet,
    Snapshot,
    SweepReport,
)
from ._offload.payload import EncodedPayload, Offloader, PayloadReader
from ._offload.sweep import sweep_orphans
from ._read.decode import ChangeSetDecoder, to_head
from ._read.load import load_from_snapshot, load_history, read_change_sets
from ._records import MAX_TRANSACTION_ACTIONS, ViewRecord, view_partition
from ._timeutil import from_us
from ._validation import (
    check_aggregate_id,
    check_aggregate_ids,
    check_aggregate_type,
    check_commit_id,
    check_count,
    check_events,
    check_expected_version,
    check_metadata,
    check_seconds,
    check_start,
    check_version,
    check_version_range,
)
from ._write.append import Appender, AppendProgress, Committed, ConflictBackoff
from ._write.plan import AppendRequest
from ._write.snapshots import SnapshotWriter, check_keep, check_schema

__all__ = ["EventStore"]


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def _operation(method: _Method) -> _Method:
    """Count a request/response operation in flight, so ``aclose`` can let it finish."""

    @functools.wraps(method)
    async def counted(self: EventStore, *args: Any, **kwargs: Any) -> Any:
        self._require_open()
        self._in_flight += 1
        try:
            return await method(self, *args, **kwargs)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    return counted  # type: ignore[return-value]


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
        self._appender = Appender(self._backend, config)
        self._state = _State.UNOPENED
        self._in_flight = 0
        self._idle = anyio.Event()
        self._wire_payloads()

    def _wire_payloads(self) -> None:
        """Offload and read-back use the backend's object store, known once open."""
        objects = self._backend.objects
        self._offloader = Offloader(self._codec, objects, self._config)
        self._reader = PayloadReader(self._codec, objects)
        self._decoder = ChangeSetDecoder(self._codec, self._reader, self._config.fetch_concurrency)
        self._snapshots = SnapshotWriter(self._backend, self._offloader, self._config)

    @classmethod
    def in_memory(cls, *, types: Iterable[type[msgspec.Struct]] = (), **config: Any) -> EventStore:
        """A store kept in this process, with the same semantics, for unit tests.

        ``config`` takes :class:`StoreConfig` fields (``page_size``,
        ``offload_threshold_bytes``...); offloaded payloads go to an in-memory bucket
        unless ``bucket_name=None``. The schema exists from the start. Nothing is
        shared between two such stores.
        """
        settings: dict[str, Any] = {"table_name": "in-memory", "bucket_name": "in-memory"}
        settings.update(config)
        store_config = StoreConfig(**settings)
        backend = MemoryBackend(
            page_size=store_config.page_size,
            with_objects=store_config.bucket_name is not None,
        )
        return cls(store_config, types=types, _backend=backend)

    @property
    def config(self) -> StoreConfig:
        return self._config

    @property
    def metrics(self) -> dict[str, int]:
        """Counters of this store's appends: ``commits``, ``attempts`` (transactions
        sent), ``feed_retries`` (refused because a feed shard moved on) and
        ``conflict_retries`` (TransactionConflict, or ANY appends that lost a race)."""
        return dataclasses.asdict(self._appender.counters)

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
        install_redaction()
        await self._backend.open()
        install_redaction()  # again: opening the clients created more loggers
        self._wire_payloads()
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, *, grace_seconds: float = 10.0) -> None:
        """Close the clients; safe to call twice. Runs to the end even when cancelled.

        New operations are refused at once (:class:`StoreClosedError`); operations in
        flight get up to ``grace_seconds`` to finish before the clients close under
        them (they then fail with a :class:`StorageError`; an append among them may
        have landed, see :class:`CommitOutcomeUnknownError`).
        """
        if self._state in (_State.CLOSING, _State.CLOSED):
            return
        self._state = _State.CLOSING
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(grace_seconds):
                while self._in_flight:
                    self._idle = anyio.Event()
                    await self._idle.wait()
            self._state = _State.CLOSED
            await self._backend.aclose()

    def _require_open(self) -> None:
        if self._state is not _State.OPEN:
            raise StoreClosedError(
                f"the store is {self._state.value}; use it inside 'async with EventStore(...)'"
            )

    # -- schema -------------------------------------------------------------------------

    @_operation
    async def create_schema(self) -> None:
        """Create the table (and bucket, when configured) if missing. Idempotent.

        Meant for development and tests; production schemas belong in infrastructure
        code (see the README's Operations section).
        """
        self._require_open()
        await self._backend.create_schema()

    @_operation
    async def drop_schema(self) -> None:
        """Delete the table and the bucket, with all their data."""
        self._require_open()
        await self._backend.drop_schema()

    # -- writes -------------------------------------------------------------------------

    @_operation
    async def append(
        self,
        aggregate_id: str,
        events: Iterable[Any] | AsyncIterable[Any],
        *,
        expected_version: int | AnyVersion,
        aggregate_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        commit_id: str | None = None,
    ) -> ChangeSet:
        """Append one change set atomically as the aggregate's next version.

        Args:
            aggregate_id: the aggregate's id (1 to 512 UTF-8 bytes, no control characters).
            events: one or more msgspec Structs or str-keyed mappings: a list or tuple,
                or an iterator or async iterator, encoded one at a time. A change set
                over ``offload_threshold_bytes`` is streamed to S3 (see the README).
            expected_version: the version the aggregate must have now (0: it must not
                exist yet), or ``ANY``.
            aggregate_type: recorded when the aggregate is created; a later append that
                names another type is refused.
            metadata: a str-keyed mapping stored with the change set (at most 64 KiB
                encoded).
            commit_id: the idempotency key (a new UUID when omitted). Retrying an append
                with the same commit id and expected version returns the stored change
                set instead of writing it twice; with ``ANY`` any retry is safe.

        Returns:
            The stored change set. When the events came from an iterator and were
            streamed to S3, its ``events`` is empty (they were not kept) and
            ``event_count`` says how many were stored.

        Raises:
            InvalidInputError: an argument is not acceptable (nothing was written).
            ConcurrencyError: the aggregate is not at ``expected_version``.
            AggregateTypeMismatchError: the aggregate has another type.
            ChangeSetTooLargeError: over DynamoDB's item limit and no bucket to offload to.
            CommitOutcomeUnknownError: the response was lost; retry with the commit id.
            StorageError: AWS failed a request (see its subclasses).
        """
        self._require_open()
        header = self._check_append(
            aggregate_id, events, expected_version, aggregate_type, metadata, commit_id
        )
        (change_set,) = await self._commit([header], [events])
        return change_set

    @_operation
    async def append_many(self, appends: Sequence[Append]) -> list[ChangeSet]:
        """Append change sets to several aggregates atomically, in one transaction.

        Either every change set is stored or none is. Each :class:`Append` is checked
        as by :meth:`append`; an aggregate may appear once. A batch holds at most 100
        DynamoDB actions (two per append, three with ``ANY``; with the feed on, one
        more per append and one per feed shard touched) and 4 MB of items.

        Returns:
            The stored change sets, in the order given.

        Raises:
            InvalidInputError: a bad entry (``argument`` is ``appends[i].<name>``), an
                empty batch, an aggregate named twice, or over 100 actions.
            ChangeSetTooLargeError: the transaction's items are over 4 MB.
            ConcurrencyError: some aggregates were not at their expected versions;
                ``conflicts`` names each one with its actual version.
            Others: as :meth:`append`.
        """
        self._require_open()
        headers = self._check_batch(appends)
        return await self._commit(headers, [append.events for append in appends])

    async def _commit(self, headers: list[_AppendHeader], events: list[Any]) -> list[ChangeSet]:
        """Encode (and offload) every entry's events, then commit them in one transaction.

        When this fails, or is cancelled, the objects uploaded for it are deleted unless
        a stored change set may point to them (see :func:`_may_be_referenced`); those
        are left to ``sweep_orphans``.
        """
        encoded: list[EncodedPayload] = []
        progress = AppendProgress()
        try:
            await self._encode_all(headers, events, encoded)
            requests = [h.request(e) for h, e in zip(headers, encoded, strict=True)]
            _check_sizes(requests, feed=self._config.feed_shards > 0)
            expected = [h.expected for h in headers]
            committed = await self._appender.append(requests, expected, progress)
        except BaseException as exc:
            if not _may_be_referenced(exc, progress):
                await self._discard_uploaded(encoded)
            raise
        return [
            await self._result(request, done)
            for request, done in zip(requests, committed, strict=True)
        ]

    async def _encode_all(
        self, headers: list[_AppendHeader], events: list[Any], encoded: list[EncodedPayload]
    ) -> None:
        """Encode the entries one after another into ``encoded`` (which, on a failure,
        holds what was already uploaded), within ``max_upload_seconds`` in all.

        The bound keeps the invariant the sweep relies on: an object's age when its
        change set commits is at most ``commit_window_seconds``. Every object of this
        commit is started after ``started``; encoding ends at most ``max_upload_seconds``
        later; then the append's deadline, and one request sent just before it
        (``connect_timeout + read_timeout``), bound the time to the commit.
        """
        started = anyio.current_time()
        batch = len(headers) > 1
        for index, (header, entry_events) in enumerate(zip(headers, events, strict=True)):
            with _naming(f"appends[{index}]." if batch else ""):
                encoded.append(await self._offloader.encode(header.aggregate_id, entry_events))
        self._check_encode_time(encoded, anyio.current_time() - started)

    def _check_encode_time(self, encoded: list[EncodedPayload], seconds: float) -> None:
        """Refuse to commit objects whose encoding took longer than ``max_upload_seconds``
        (counted from before the first entry), so no sweep can have deleted one."""
        limit = self._config.max_upload_seconds
        if seconds > limit and any(payload.pointer is not None for payload in encoded):
            raise StorageError(
                f"encoding and uploading the change sets took {seconds:.1f} s, over "
                f"max_upload_seconds ({limit:g} s); nothing was committed",
                code="UploadTooSlow",
                operation="PutObject",
            )

    async def _discard_uploaded(self, encoded: list[EncodedPayload]) -> None:
        """Delete the objects of an append that did not land. Shielded, so a cancelled
        append cleans up too; an object that cannot be deleted (the store may be
        closing) is left to the sweep rather than hide the append's own error."""
        with anyio.CancelScope(shield=True):
            for payload in encoded:
                if payload.pointer is not None:
                    with suppress(Exception):
                        await self._offloader.discard(payload.pointer.key)

    def _check_batch(self, appends: Any) -> list[_AppendHeader]:
        if not isinstance(appends, Sequence) or isinstance(appends, str | bytes):
            raise InvalidInputError("appends", "must be a list or tuple of Append")
        if not appends:
            raise InvalidInputError("appends", "must hold at least one Append")
        headers: list[_AppendHeader] = []
        for index, append in enumerate(appends):
            if not isinstance(append, Append):
                raise InvalidInputError(f"appends[{index}]", "must be an Append")
            with _naming(f"appends[{index}]."):
                headers.append(
                    self._check_append(
                        append.aggregate_id,
                        append.events,
                        append.expected_version,
                        append.aggregate_type,
                        append.metadata,
                        append.commit_id,
                    )
                )
        _check_batch_shape(headers, self._config.feed_shards)
        return headers

    def _check_append(
        self,
        aggregate_id: Any,
        events: Any,
        expected_version: Any,
        aggregate_type: Any,
        metadata: Any,
        commit_id: Any,
    ) -> _AppendHeader:
        """Every check of an append that needs no encoding of its events, so that a
        batch is refused before any entry is uploaded."""
        aggregate_id = check_aggregate_id(aggregate_id)
        expected = check_expected_version(expected_version)
        aggregate_type = check_aggregate_type(aggregate_type)
        commit_id = check_commit_id(commit_id) or uuid.uuid4().hex
        checked_metadata = check_metadata(metadata)
        metadata_bytes = None
        if checked_metadata:
            metadata_bytes = self._codec.encode_metadata(checked_metadata)
            if len(metadata_bytes) > MAX_METADATA_BYTES:
                raise InvalidInputError(
                    "metadata", f"encodes to {len(metadata_bytes)} bytes, over {MAX_METADATA_BYTES}"
                )
        check_events(events)
        return _AppendHeader(
            aggregate_id=aggregate_id,
            expected=expected,
            aggregate_type=aggregate_type,
            commit_id=commit_id,
            metadata=dict(checked_metadata or {}),
            metadata_bytes=metadata_bytes,
        )

    async def _result(self, request: AppendRequest, committed: Committed) -> ChangeSet:
        earlier = committed.earlier
        if earlier is None:
            return request.change_set(committed.version, committed.timestamp_us)
        ours = request.pointer
        if ours is not None and (earlier.pointer is None or earlier.pointer.key != ours.key):
            with anyio.CancelScope(shield=True):  # an earlier attempt's object is the one kept
                await self._offloader.discard(ours.key)
        return await self._decoder.change_set(earlier)

    @_operation
    async def sweep_orphans(self, *, older_than: timedelta = timedelta(hours=1)) -> SweepReport:
        """Delete offloaded objects that no change set references, and abort old
        multipart uploads: what a writer that crashed mid-append left behind.

        Only objects older than ``older_than`` are considered; it must be at least
        ``config.commit_window_seconds`` (the longest an append can take to commit its
        object), so an append still in flight never loses its object. Costs one
        LIST per 1,000 objects and one Query (pointer attributes) per aggregate with
        old objects.

        Raises:
            InvalidInputError: ``older_than`` is shorter than the commit window.
            StorageError: AWS failed a request.
        """
        self._require_open()
        objects = self._backend.objects
        window = timedelta(seconds=self._config.commit_window_seconds)
        if not isinstance(older_than, timedelta) or older_than < window:
            raise InvalidInputError(
                "older_than", f"must be a timedelta of at least {window} (commit_window_seconds)"
            )
        if objects is None:
            return SweepReport(objects_scanned=0, objects_deleted=(), uploads_aborted=0)
        return await sweep_orphans(self._backend, objects, self._config.key_prefix, older_than)

    # -- reads --------------------------------------------------------------------------

    @_operation
    async def load(
        self,
        aggregate_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        snapshot_schema: str | None = None,
    ) -> AggregateHistory:
        """The aggregate's head and its change sets ``from_version..to_version``.

        Reads are strongly consistent and follow every page. The change sets never go
        past the head's version, so ``history.version`` is the version to expect next.

        With ``snapshot_schema``, the newest snapshot made with that schema (at or before
        ``to_version``) comes back as ``history.snapshot`` and ``change_sets`` holds only
        the change sets after it: two requests whatever the history's length. Snapshots
        of other schemas are ignored; with none usable, every change set is loaded. If a
        concurrent save evicts or overwrites the snapshot being read, the load reads
        again (at most 3 times), then replays every change set.

        Raises:
            InvalidInputError: a bad id, version range or schema (``from_version`` must
                stay 1 with a snapshot schema).
            AggregateNotFoundError: the aggregate has no change sets.
            IntegrityError: stored data does not decode, a version is missing, or a
                snapshot listed on the head has lost its offloaded state.
            StorageError: AWS failed the request.
        """
        self._require_open()
        aggregate_id = check_aggregate_id(aggregate_id)
        low, high = check_version_range(from_version, to_version)
        if snapshot_schema is None:
            return await load_history(self._backend, self._decoder, aggregate_id, low, high)
        schema = check_schema(snapshot_schema)
        if low != 1:
            raise InvalidInputError("from_version", "must be 1 when loading from a snapshot")
        return await load_from_snapshot(self._backend, self._decoder, aggregate_id, schema, high)

    @_operation
    async def save_snapshot(
        self,
        aggregate_id: str,
        version: int,
        state: Any,
        *,
        schema: str = "default",
        keep: int = 2,
    ) -> Snapshot | None:
        """Store the aggregate's state as of ``version``, made with state ``schema``.

        ``state`` is a msgspec Struct or a str-keyed mapping (encoded like an event;
        large states go to S3). Only the ``keep`` newest snapshots per schema are kept;
        older ones are deleted in the same transaction, at most 98 of them (DynamoDB's
        100-action transaction limit): any others past ``keep`` stay retained and valid,
        and later saves delete them. Concurrent saves never lose one. A load that asks
        for another schema ignores this snapshot, so bump the schema when the state's
        shape changes.

        Returns:
            The snapshot, or ``None`` when ``keep`` newer snapshots already exist.

        Raises:
            InvalidInputError: a bad argument, or ``version`` past the aggregate's.
            AggregateNotFoundError: the aggregate does not exist.
            SnapshotOutcomeUnknownError: the transaction was sent but its response was
                lost and reading the snapshot back did not settle whether it landed.
                Saving again is safe; an offloaded state is left for ``sweep_orphans``.
            StorageError: AWS failed a request.
        """
        self._require_open()
        aggregate_id = check_aggregate_id(aggregate_id)
        checked_version = check_version(version)
        schema = check_schema(schema)
        keep = check_keep(keep)
        record = await self._snapshots.save(aggregate_id, checked_version, state, schema, keep)
        if record is None:
            return None
        return Snapshot(
            aggregate_id=aggregate_id,
            version=record.version,
            schema=schema,
            state=state,
            timestamp=from_us(record.timestamp_us),
        )

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
        return read_change_sets(self._backend, self._decoder, aggregate_id, low, high)

    def iter_events(self, aggregate_id: str, version: int) -> AsyncIterator[Any]:
        """Stream the events of one change set, one at a time, in bounded memory.

        For an offloaded change set the object is first spooled to a temporary file
        (in memory up to 8 MiB) and its size and SHA-256 checked, so no event is
        yielded from a payload that fails the check.

        Raises:
            InvalidInputError: a bad id or version (when called).
            ChangeSetNotFoundError: no change set with that version.
            IntegrityError: the offloaded object is missing or does not match.
        """
        self._require_open()
        aggregate_id = check_aggregate_id(aggregate_id)
        return self._iter_events(aggregate_id, check_version(version))

    async def _iter_events(self, aggregate_id: str, version: int) -> AsyncIterator[Any]:
        record = await self._backend.get_change_set(aggregate_id, version)
        if record is None:
            raise ChangeSetNotFoundError(aggregate_id, version)
        if record.pointer is None:
            for event in self._codec.decode_events(record.payload or b""):
                yield event
            return
        async with aclosing(self._reader.iter_events(record.pointer)) as events:
            async for event in events:
                yield event

    @_operation
    async def load_many(
        self, aggregate_ids: Iterable[str], *, concurrency: int = 16
    ) -> dict[str, AggregateHistory | None]:
        """Load several aggregates concurrently, at most ``concurrency`` at a time.

        Returns:
            Every id given, mapped to its history, or ``None`` when it does not exist.

        Raises:
            InvalidInputError: a bad id or concurrency.
            Others: as :meth:`load`.
        """
        self._require_open()
        ids = check_aggregate_ids(aggregate_ids)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInputError("concurrency", "must be a positive int")
        results: dict[str, AggregateHistory | None] = dict.fromkeys(ids)
        failures: list[Exception] = []
        limiter = anyio.CapacityLimiter(concurrency)

        async def load_one(aggregate_id: str, scope: anyio.CancelScope) -> None:
            async with limiter:
                try:
                    results[aggregate_id] = await self.load(aggregate_id)
                except AggregateNotFoundError:
                    results[aggregate_id] = None
                except Exception as exc:  # the first failure stops the rest, raised as is
                    failures.append(exc)
                    scope.cancel()

        async with anyio.create_task_group() as group:
            for aggregate_id in ids:
                group.start_soon(load_one, aggregate_id, group.cancel_scope)
        if failures:
            raise failures[0]
        return results

    def subscribe(
        self,
        name: str,
        *,
        start: Literal["beginning", "end"] = "beginning",
        lease_seconds: float = 10.0,
        buffer: int = 256,
        poll_interval: float = 0.05,
        max_poll_interval: float = 1.0,
        wait: bool = True,
    ) -> Subscription:
        """A catch-up subscription to the global feed (needs ``feed_shards > 0``).

        ``async with store.subscribe("orders-view") as sub: async for cs in sub: ...``
        delivers every change set from the subscription's checkpoint on (or, for a new
        subscription, from ``start``), then follows new ones, polling every
        ``poll_interval`` seconds and backing off to ``max_poll_interval`` while idle.
        Delivery is at least once: call ``await sub.checkpoint()`` (or
        ``sub.project(...)``) to record progress; leaving the block normally saves it.
        One consumer per name at a time; another waits (or, with ``wait=False``,
        raises :class:`SubscriptionBusyError`) until the lease is released or expires
        after ``lease_seconds``.

        Raises:
            InvalidInputError: a bad argument (``max_poll_interval`` below
                ``poll_interval`` included), or the feed is off.
            LeaseLostError: (from the subscription's calls) another consumer took it
                over. Outages (``StorageUnavailableError``) are waited out.
        """
        self._require_open()
        settings = SubscriptionSettings(
            name=check_name(name, "name"),
            start=check_start(start),
            shards=self._config.feed_shards,
            lease_seconds=check_seconds(lease_seconds, "lease_seconds", 0.5, 3600.0),
            buffer=check_count(buffer, "buffer"),
            poll_min=check_seconds(poll_interval, "poll_interval", 0.001, 60.0),
            poll_max=check_seconds(max_poll_interval, "max_poll_interval", 0.001, 600.0),
            wait=bool(wait),
            backoff=ConflictBackoff.of(self._config),
        )
        if not settings.shards:
            raise InvalidInputError("feed_shards", "is 0: the global feed is off for this store")
        return Subscription(self._backend, self._codec, self._decoder, settings)

    @_operation
    async def get_view(self, view: str, key: str) -> Any | None:
        """A read-model document written by ``Subscription.project``, or None."""
        self._require_open()
        partition = view_partition(check_view_name(view), check_view_key(key))
        record = await self._backend.get(partition, 0)
        if not isinstance(record, ViewRecord):
            return None
        return self._codec.decode_events(record.document)[0]

    @_operation
    async def head(self, aggregate_id: str) -> AggregateHead | None:
        """The aggregate's head, or ``None`` when it does not exist (consistent read)."""
        self._require_open()
        record = await self._backend.get_head(check_aggregate_id(aggregate_id))
        return to_head(record) if record is not None else None


@dataclass(frozen=True, slots=True)
class _AppendHeader:
    """The checked arguments of an append, before its events are encoded."""

    aggregate_id: str
    expected: int | AnyVersion
    aggregate_type: str | None
    commit_id: str
    metadata: dict[str, Any]
    metadata_bytes: bytes | None

    def request(self, encoded: EncodedPayload) -> AppendRequest:
        return AppendRequest(
            aggregate_id=self.aggregate_id,
            events=encoded.events,
            event_count=encoded.event_count,
            payload=encoded.payload,
            pointer=encoded.pointer,
            metadata=self.metadata,
            metadata_bytes=self.metadata_bytes,
            aggregate_type=self.aggregate_type,
            commit_id=self.commit_id,
            guarded=self.expected is ANY,
        )


def _check_batch_shape(headers: list[_AppendHeader], feed_shards: int) -> None:
    seen: dict[str, int] = {}
    for index, header in enumerate(headers):
        if header.aggregate_id in seen:
            raise InvalidInputError(
                f"appends[{index}].aggregate_id",
                f"{header.aggregate_id!r} is also appends[{seen[header.aggregate_id]}]: "
                "one transaction can change an aggregate once",
            )
        seen[header.aggregate_id] = index
    actions = sum(3 if header.expected is ANY else 2 for header in headers)
    feed = ""
    if feed_shards:  # an entry per append and a counter move per shard touched
        shards = {shard_of(header.aggregate_id, feed_shards) for header in headers}
        feed_actions = len(headers) + len(shards)
        actions += feed_actions
        feed = f" ({feed_actions} of them for the feed)"
    if actions > MAX_TRANSACTION_ACTIONS:
        raise InvalidInputError(
            "appends", f"needs {actions} DynamoDB actions{feed}, over the limit of 100"
        )


def _check_sizes(requests: list[AppendRequest], feed: bool) -> None:
    """Each item under 400 KB and the transaction under 4 MB, checked before sending."""
    total = 0
    for request in requests:
        size = change_set_item_size(request.record(version=2**53, timestamp_us=2**62))
        if size > DYNAMODB_ITEM_LIMIT:
            raise ChangeSetTooLargeError("the change set item", size, DYNAMODB_ITEM_LIMIT)
        total += size + _companion_bytes(request, feed)
    if total > DYNAMODB_TRANSACTION_LIMIT:
        raise ChangeSetTooLargeError("the transaction", total, DYNAMODB_TRANSACTION_LIMIT)


def _companion_bytes(request: AppendRequest, feed: bool) -> int:
    """At most what the items written with a change set take: the head, the commit
    marker and, with the feed on, its entry and a share of a shard counter. Each holds
    the aggregate and commit ids, and attribute names and numbers (under 256 bytes)."""
    copies = 3 if feed else 2
    ids = len(request.aggregate_id.encode()) + len(request.commit_id.encode())
    kind = len(request.aggregate_type.encode()) if request.aggregate_type else 0
    return copies * (ids + 256) + kind + (128 if feed else 0)


def _may_be_referenced(error: BaseException, progress: AppendProgress) -> bool:
    """Whether a stored change set may point to the objects of a failed append: a
    transaction carrying them was sent and its outcome never settled, or the caller is
    told the outcome is unknown. Otherwise the append definitely did not land: it
    failed (or was cancelled) before anything was sent (validation, encoding, sizes,
    uploads), or its transaction was refused (ConcurrencyError,
    AggregateTypeMismatchError, a refused or still-conflicting transaction...)."""
    return progress.in_doubt or isinstance(error, CommitOutcomeUnknownError)


@contextmanager
def _naming(prefix: str) -> Iterator[None]:
    """Name a batch entry in the argument of an InvalidInputError (``appends[3].events``)."""
    try:
        yield
    except InvalidInputError as exc:
        if not prefix:
            raise
        raise InvalidInputError(prefix + exc.argument, exc.problem) from None
