"""EventStore: the facade users hold. It validates, encodes, and delegates."""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

import anyio
import msgspec

from ._backends.aws.dynamodb import DynamoDBBackend
from ._backends.memory import memory_backend
from ._backends.protocol import Backend
from ._capacity import enter_kind, leave_kind
from ._closing import WriteGate
from ._codec import EventCodec, UndecodableEventError
from ._config import StoreConfig
from ._errors import (
    AggregateNotFoundError,
    ChangeSetNotFoundError,
    InvalidInputError,
    StoreClosedError,
)
from ._feed.filters import FeedFilter, check_type_names
from ._feed.groups import GroupSubscription
from ._feed.shape import FeedShape
from ._feed.subscription import Subscription, SubscriptionSettings
from ._feed.views import check_name, check_view_key, check_view_name
from ._feed.waiting import wait_for_checkpoint
from ._models import (
    AggregateHead,
    AggregateHistory,
    AnyVersion,
    Append,
    ChangeSet,
    Snapshot,
    SweepReport,
    VerifyReport,
)
from ._offload.payload import Offloader, PayloadReader
from ._offload.sweep import SweepScope, sweep_orphans
from ._ops.verify import Progress
from ._ops.verify import verify as verify_table
from ._read.decode import ChangeSetDecoder, to_head
from ._read.load import load_from_snapshot, load_history, read_change_sets
from ._records import ViewRecord, view_partition
from ._retry import ConflictBackoff
from ._telemetry import ENABLED as TRACING
from ._telemetry import traced_iterator, traced_method
from ._timeutil import from_us
from ._types import EventType, Upcaster, check_struct_type
from ._validation import (
    check_aggregate_id,
    check_aggregate_ids,
    check_count,
    check_on_undecodable,
    check_seconds,
    check_start,
    check_version,
    check_version_range,
)
from ._write.append import Appender
from ._write.batch import check_append, check_batch
from ._write.markers import landed_version
from ._write.snapshots import SnapshotWriter, check_keep, check_schema
from ._write.writer import ChangeSetWriter
from .domain._access import StoreAccess
from .domain._aggregate import Aggregate
from .domain._commands import Commands, DeciderLike
from .domain._decider import Decider
from .domain._repository import Outcome, Repository

__all__ = ["EventStore"]


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])
_S = TypeVar("_S")
_A = TypeVar("_A", bound=Aggregate)


def _operation(method: _Method) -> _Method:
    """Count a request/response operation in flight, so ``aclose`` can let it finish;
    name it for the capacity it consumes, and trace it (with the otel extra)."""
    name, traced = method.__name__, traced_method(method.__name__, _trace_settings)(method)

    @functools.wraps(method)
    async def counted(self: EventStore, *args: Any, **kwargs: Any) -> Any:
        self._require_open()
        self._in_flight += 1
        try:
            kind = enter_kind(name)  # DynamoDB capacity is counted as this kind's
            try:
                return await traced(self, *args, **kwargs)
            finally:
                leave_kind(kind)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    return counted  # type: ignore[return-value]


def _trace_settings(store: EventStore) -> tuple[str, bool]:
    return store._config.table_name, store._config.trace_aggregate_ids


class EventStore:
    """An event store on DynamoDB, used as an async context manager.

    ``async with EventStore(config) as store:`` opens the pooled AWS clients;
    leaving the block (or ``await store.aclose()``) closes them. A closed store
    cannot be reopened.

    Args:
        config: where the data lives and how to reach it.
        types: msgspec Struct event types to decode back to, each a Struct type
            (version 1) or an :class:`EventType` (version, upcasters, aliases), as
            :meth:`register` takes them.
        verify_on_open: :meth:`ping` when opening, so a wrong endpoint, region, table
            or bucket fails at start-up (``__aenter__`` raises what ``ping`` raises).
        backend: for tests (and tools that keep a handle on the storage, as the
            ``eventstore`` command does): the storage to use instead of the DynamoDB +
            S3 backend built from ``config`` (see :mod:`eventstore_async.testing`).
            The store opens and closes it with itself.
    """

    def __init__(
        self,
        config: StoreConfig,
        *,
        types: Iterable[type[msgspec.Struct] | EventType] = (),
        verify_on_open: bool = False,
        backend: Backend | None = None,
    ) -> None:
        self._config = config
        self._verify_on_open = bool(verify_on_open)
        self._codec = EventCodec(*types)
        self._backend: Backend = backend if backend is not None else DynamoDBBackend(config)
        self._gate = WriteGate()
        self._appender = Appender(self._backend, config, self._gate)
        self._shape = FeedShape(self._backend, config.feed_shards, config.table_name)
        self._state = _State.UNOPENED
        self._in_flight = 0
        self._idle = anyio.Event()
        access = StoreAccess(
            self, self._append_commands, self._landed_version, self._codec.register_if_absent
        )
        self._commands = Commands(access)  # the command layer's own seam into the store
        self._wire_payloads()

    def _wire_payloads(self) -> None:
        """Offload and read-back use the backend's object store, known once open."""
        objects = self._backend.objects
        self._offloader = Offloader(self._codec, objects, self._config, self._gate)
        self._reader = PayloadReader(self._codec, objects)
        self._decoder = ChangeSetDecoder(self._codec, self._reader, self._config.fetch_concurrency)
        self._snapshots = SnapshotWriter(self._backend, self._offloader, self._config)
        self._writer = ChangeSetWriter(
            self._appender, self._backend, self._offloader, self._decoder, self._config
        )

    @classmethod
    def in_memory(
        cls, *, types: Iterable[type[msgspec.Struct] | EventType] = (), **config: Any
    ) -> EventStore:
        """A store kept in this process, with the same semantics, for unit tests.

        ``config`` takes :class:`StoreConfig` fields (``page_size``,
        ``offload_threshold_bytes``...); offloaded payloads go to an in-memory bucket
        unless ``bucket_name=None``. The schema exists from the start. Nothing is
        shared between two such stores (for a handle on the storage, or two stores on
        one, pass ``backend=`` a :func:`eventstore_async.testing.memory_backend`).
        """
        settings: dict[str, Any] = {"table_name": "in-memory", "bucket_name": "in-memory"}
        settings.update(config)
        store_config = StoreConfig(**settings)
        return cls(store_config, types=types, backend=memory_backend(store_config))

    @property
    def config(self) -> StoreConfig:
        return self._config

    @property
    def metrics(self) -> dict[str, Any]:
        """Counters of this store's appends: ``commits``, ``attempts`` (transactions
        sent), ``feed_retries`` (refused because a feed shard moved on) and
        ``conflict_retries`` (TransactionConflict, or ANY appends that lost a race);
        and ``read_capacity_units`` / ``write_capacity_units``: what DynamoDB reported,
        by operation (``{"append": 8.0, "load": 2.5, ...}``; ``other`` for subscriptions
        and ``read()`` streams; refused transactions are not reported by DynamoDB)."""
        read, write = self._backend.capacity.as_dicts()
        counters: dict[str, Any] = dataclasses.asdict(self._appender.counters)
        return {**counters, "read_capacity_units": read, "write_capacity_units": write}

    def register(
        self,
        cls: type[msgspec.Struct],
        /,
        *more: type[msgspec.Struct],
        version: int = 1,
        upcasters: Mapping[int, Upcaster] | None = None,
        aliases: Iterable[str] = (),
    ) -> None:
        """Make loads decode events of ``cls`` back to it, at schema ``version``.

        Events are written with their type's name and version. An event stored at an
        older version ``n`` runs ``upcasters[n]``, ``upcasters[n + 1]``... (each
        ``dict -> dict``, turning the body of one version into the next), then decodes
        as ``cls``. ``aliases`` are older names of the type (renames): their events
        decode as ``cls`` through the same chain. Events of types never registered, of
        a newer version than registered, or whose upcaster fails load as
        :class:`RawEvent`. Appending a type does not register it. Registering ``cls``
        again replaces its registration. ``register(A, B, ...)`` registers several
        types at version 1 (as before versions existed).

        Raises:
            InvalidInputError: not a Struct type; several types with a version,
                upcasters or aliases; ``version`` not an int >= 1;
                ``upcasters`` missing a step from 1 to ``version`` (or with other keys);
                the type's name or an alias already belonging to another type.
        """
        self._codec.register(cls, *more, version=version, upcasters=upcasters, aliases=aliases)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise StoreClosedError(f"the store is {self._state.value}; create a new EventStore")
        await self._backend.open()
        self._wire_payloads()
        self._state = _State.OPEN
        if self._verify_on_open:
            try:
                await self.ping()
            except BaseException:
                await self.aclose()
                raise
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
        flight get up to ``grace_seconds`` to finish. Then uploads still running are
        stopped (a multipart upload aborted, an object deleted) and no append sends its
        transaction any more: those appends raise :class:`StoreClosedError`, nothing was
        written. The clients close once the stopped uploads have cleaned up (at most
        twice ``connect_timeout`` plus ``read_timeout``); an operation whose request is
        still out then fails with a :class:`StorageError`, and an append among them may
        have landed (see :class:`CommitOutcomeUnknownError`).
        """
        if self._state in (_State.CLOSING, _State.CLOSED):
            return
        self._state = _State.CLOSING
        with anyio.CancelScope(shield=True):
            await self._wait_idle(grace_seconds)
            await self._gate.close(2 * (self._config.connect_timeout + self._config.read_timeout))
            self._state = _State.CLOSED
            await self._backend.aclose()

    async def _wait_idle(self, seconds: float) -> None:
        """Until no operation is in flight, or ``seconds`` have passed."""
        with anyio.move_on_after(seconds):
            while self._in_flight:
                self._idle = anyio.Event()
                await self._idle.wait()

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
        await self._shape.check()

    @_operation
    async def ping(self) -> None:
        """Check the connection and the schema: the table exists, is active and has the
        store's keys, and the bucket (when configured) exists. Two requests.

        Raises:
            SchemaMissingError: the table or bucket is missing (``resource``, ``name``).
            StorageUnavailableError: the endpoint does not answer (after the retries).
            AccessDeniedError: the credentials are refused.
            StorageError: the table has another key schema (``code`` ``SchemaMismatch``).
        """
        await self._backend.ping()

    @_operation
    async def drop_schema(self) -> None:
        """Delete the table and the bucket, with all their data."""
        self._require_open()
        await self._backend.drop_schema()
        self._shape.forget()

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
        header = check_append(
            self._codec, aggregate_id, events, expected_version, aggregate_type, metadata, commit_id
        )
        await self._shape.check()
        (change_set,) = await self._writer.commit([header], [events])
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
        headers = check_batch(self._codec, appends, self._config.feed_shards)
        await self._shape.check()
        return await self._writer.commit(headers, [append.events for append in appends])

    @_operation
    async def _append_commands(self, appends: Sequence[Append], *, marked: bool) -> list[ChangeSet]:
        """``append_many`` for repositories: with ``marked`` each entry also writes its
        commit marker, so its commit id lands at most once whatever its version. One
        entry is checked as by ``append`` (its arguments named as given: ``events[2]``);
        the feed's shape is checked as by ``append``."""
        self._require_open()
        if len(appends) == 1:
            one = appends[0]
            headers = [
                check_append(
                    self._codec,
                    *(one.aggregate_id, one.events, one.expected_version),
                    *(one.aggregate_type, one.metadata, one.commit_id),
                    marked=marked,
                )
            ]
        else:
            headers = check_batch(self._codec, appends, self._config.feed_shards, marked=marked)
        await self._shape.check()
        return await self._writer.commit(headers, [append.events for append in appends])

    @_operation
    async def _landed_version(self, aggregate_id: str, commit_id: str) -> int | None:
        """Where a marked commit id landed on the aggregate, or None (one read)."""
        self._require_open()
        return await landed_version(self._backend, aggregate_id, commit_id)

    # -- commands (eventstore_async.domain) --------------------------------------------

    @overload
    def repository(self, decider: Decider[_S]) -> Repository[_S]: ...
    @overload
    def repository(self, decider: type[_A]) -> Repository[_A]: ...
    def repository(self, decider: DeciderLike) -> Repository[Any]:
        """The repository of ``decider`` (a :class:`Decider` or an :class:`Aggregate`
        subclass): ``get`` and ``execute`` commands. The same decider gets the same
        repository, so its cache lives as long as the store.

        Raises:
            InvalidInputError: not a Decider or an Aggregate subclass.
        """
        return self._commands.repository(decider)

    @_operation
    async def execute_many(
        self,
        decides: Mapping[str, Callable[[Any], Any]],
        *,
        deciders: DeciderLike | Mapping[str, DeciderLike],
        command_id: str | None = None,
        max_attempts: int = 3,
    ) -> dict[str, Outcome[Any]]:
        """One command on several aggregates, all or nothing (one ``append_many``).

        Args:
            decides: aggregate id -> ``decide(state) -> events`` for that aggregate.
            deciders: one decider (or Aggregate subclass) for all, or one per id.
            command_id: stored as the commit id of every change set; lands at most once
                per aggregate, as in :meth:`Repository.execute`.
            max_attempts: decides of every aggregate in all; a conflict on any of them
                reads the newer change sets of those that moved and re-decides all.

        Returns:
            Each aggregate's outcome (``change_set`` None where its decide returned none).

        Raises:
            InvalidInputError: a bad argument or bad events (nothing was written).
            ConcurrencyError: still conflicting after ``max_attempts``.
            Others: as :meth:`Repository.execute` and :meth:`append_many`.
        """
        return await self._commands.execute_many(decides, deciders, command_id, max_attempts)

    @_operation
    async def sweep_orphans(
        self,
        *,
        older_than: timedelta = timedelta(hours=1),
        legacy_keys: bool = False,
        dry_run: bool = False,
    ) -> SweepReport:
        """Delete offloaded objects that no change set references, and abort old
        multipart uploads: what a writer that crashed mid-append left behind.

        Only objects older than ``older_than`` are considered; it must be at least
        ``config.commit_window_seconds`` (the longest an append can take to commit its
        object), so an append still in flight never loses its object. Only keys under
        this table's name are considered, so tables may share a bucket and prefix.
        Objects written by release 0.1.0 have keys that name no table: they are swept
        only with ``legacy_keys=True``, which says that no other table ever wrote under
        this bucket's ``key_prefix`` (see the README, "Sharing a bucket"). Costs one
        LIST per 1,000 objects and one Query (pointer attributes) per aggregate with
        old objects. With ``dry_run`` nothing is deleted or aborted: the report says
        what would be.

        Raises:
            InvalidInputError: ``older_than`` is shorter than the commit window, or
                ``legacy_keys`` is not a bool.
            StorageError: AWS failed a request.
        """
        self._require_open()
        objects = self._backend.objects
        window = timedelta(seconds=self._config.commit_window_seconds)
        if not isinstance(older_than, timedelta) or older_than < window:
            raise InvalidInputError(
                "older_than", f"must be a timedelta of at least {window} (commit_window_seconds)"
            )
        if not isinstance(legacy_keys, bool):
            raise InvalidInputError("legacy_keys", "must be True or False")
        if objects is None:
            return SweepReport(objects_scanned=0, objects_deleted=(), uploads_aborted=0)
        config = self._config
        scope = SweepScope(config.key_prefix, config.table_name, legacy_keys, bool(dry_run))
        return await sweep_orphans(self._backend, objects, scope, older_than)

    @_operation
    async def verify(
        self, aggregate_ids: Iterable[str] = (), *, progress: Progress | None = None
    ) -> VerifyReport:
        """Check the table's integrity (or only some aggregates'): gapless versions, heads
        agreeing with their last change sets, every S3 object present with its size and
        SHA-256, the feed dense and naming stored change sets, snapshots at stored
        versions; objects nothing references are listed. Reads every item (one Scan)
        and every object: an operator's tool, not for a request path.

        ``progress(phase, advance, total)`` is called as items and objects are checked.

        Raises:
            InvalidInputError: a bad aggregate id.
            StorageError: a request failed.
        """
        self._require_open()
        ids = check_aggregate_ids(aggregate_ids) if aggregate_ids else []
        prefix = f"{self._config.key_prefix}{self._config.table_name}/"  # this table's keys
        return await verify_table(self._backend, self._backend.objects, prefix, ids, progress)

    # -- reads --------------------------------------------------------------------------

    @_operation
    async def load(
        self,
        aggregate_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        snapshot_schema: str | None = None,
        state_type: type[msgspec.Struct] | None = None,
    ) -> AggregateHistory:
        """The aggregate's head and its change sets ``from_version..to_version``.

        Reads are strongly consistent and follow every page. The change sets never go
        past the head's version, so ``history.version`` is the version to expect next.

        With ``snapshot_schema``, the newest snapshot made with that schema (at or before
        ``to_version``) comes back as ``history.snapshot`` and ``change_sets`` holds only
        the change sets after it: two requests whatever the history's length. Snapshots
        of other schemas are ignored; with none usable, every change set is loaded. If a
        concurrent save evicts or overwrites the snapshot being read, the load reads
        again (at most 3 times), then replays every change set. ``state_type`` decodes
        the snapshot's state as that Struct type (through its registration, upcasters
        included, when it has one); without it the state decodes as registered types
        do (an unregistered one loads as :class:`RawEvent`).

        Raises:
            InvalidInputError: a bad id, version range or schema (``from_version`` must
                stay 1 with a snapshot schema).
            AggregateNotFoundError: the aggregate has no change sets.
            IntegrityError: stored data does not decode (an event of a registered type
                names its type, stored version, change set and field), a version is
                missing, or a snapshot listed on the head has lost its offloaded state.
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
        state_type = check_struct_type(state_type, "state_type")
        return await load_from_snapshot(
            self._backend, self._decoder, aggregate_id, schema, high, state_type
        )

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
        stream = read_change_sets(self._backend, self._decoder, aggregate_id, low, high)
        return self._traced_read(aggregate_id, stream) if TRACING else stream

    def _traced_read(self, aggregate_id: str, stream: AsyncIterator[ChangeSet]) -> Any:
        ids = {"eventstore.aggregate_id": aggregate_id} if self._config.trace_aggregate_ids else {}
        return traced_iterator("read", self._config.table_name, ids, stream)

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
        try:
            if record.pointer is None:
                for event in self._codec.decode_events(record.payload or b""):
                    yield event
                return
            async with aclosing(self._reader.iter_events(record.pointer)) as events:
                async for event in events:
                    yield event
        except UndecodableEventError as exc:
            raise exc.located(aggregate_id, version) from exc

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
        aggregate_types: Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        mode: Literal["exclusive", "shared"] = "exclusive",
        on_undecodable: Literal["raise", "raw"] = "raise",
    ) -> Subscription | GroupSubscription:
        """A catch-up subscription to the global feed (needs ``feed_shards > 0``).

        ``async with store.subscribe("orders-view") as sub: async for cs in sub: ...``
        delivers every change set from the subscription's checkpoint on (or, for a new
        subscription, from ``start``), then follows new ones, polling every
        ``poll_interval`` seconds and backing off to ``max_poll_interval`` while idle.
        Delivery is at least once: call ``await sub.checkpoint()`` (or
        ``sub.project(...)``) to record progress; leaving the block normally saves
        every change set delivered before the last one handed out (the last one is
        delivered again unless ``checkpoint()``/``project()`` saved it).
        One consumer per name at a time; another waits (or, with ``wait=False``,
        raises :class:`SubscriptionBusyError`) until the lease is released or expires
        after ``lease_seconds``.

        With ``aggregate_types`` and/or ``event_types`` only change sets of those
        aggregate types holding an event of those types are delivered (whole); the
        checkpoint moves past the others. See the README ("Filtered subscriptions").

        With ``mode="shared"`` consumers of that name in any number of processes share
        the shards (a consumer group, see the README): each holds about
        ``shards / members`` of them (``sub.shards``), with a lease and a checkpoint
        per shard. A name keeps its mode: the other one is refused.

        A change set that cannot be decoded (an event of a registered type whose body
        no longer fits it, an offloaded object missing or damaged) ends the iteration
        with :class:`IntegrityError` by default (``on_undecodable="raise"``), and again
        at the same place after every restart. With ``on_undecodable="raw"`` it is
        delivered instead, each event that does not decode as a :class:`RawEvent` with
        its ``error``; a payload that cannot be read at all as one ``RawEvent(type="",
        data=None, version=0, error=...)``: the consumer decides, and its checkpoint
        moves past it.

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
            table=self._config.table_name,
            filter=FeedFilter(
                check_type_names(aggregate_types, "aggregate_types"),
                check_type_names(event_types, "event_types"),
            ),
            on_undecodable=check_on_undecodable(on_undecodable),
        )
        if not settings.shards:
            raise InvalidInputError("feed_shards", "is 0: the global feed is off for this store")
        if mode not in ("exclusive", "shared"):
            raise InvalidInputError("mode", 'must be "exclusive" or "shared"')
        kind = GroupSubscription if mode == "shared" else Subscription
        return kind(self._backend, self._codec, self._decoder, settings, self._shape)

    @_operation
    async def wait_for(
        self,
        name: str,
        change_set: ChangeSet,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the API's bound, as in asyncio.wait_for
    ) -> None:
        """Return once subscription ``name`` has checkpointed past ``change_set`` (as
        returned by :meth:`append`): its read model then holds the change
        (read-your-writes). It polls the checkpoint, from 20 ms backing off to 250 ms.

        Raises:
            InvalidInputError: a bad name or timeout, not a ChangeSet, or the feed is off.
            TimeoutError: not checkpointed past it within ``timeout`` seconds.
            StorageError: a read failed.
        """
        self._require_open()
        name = check_name(name, "name")
        seconds = check_seconds(timeout, "timeout", 0.001, 3600.0)
        if not isinstance(change_set, ChangeSet):
            raise InvalidInputError("change_set", "must be a ChangeSet (as append returns)")
        if not self._config.feed_shards:
            raise InvalidInputError("feed_shards", "is 0: the global feed is off for this store")
        with anyio.fail_after(seconds):
            await wait_for_checkpoint(
                self._backend,
                name,
                self._config.feed_shards,
                change_set.aggregate_id,
                change_set.version,
            )

    @_operation
    async def get_view(
        self, view: str, key: str, *, type: type[msgspec.Struct] | None = None
    ) -> Any | None:
        """A read-model document written by ``Subscription.project``, or None.

        With ``type``, the document decodes as that Struct type (through its
        registration when it has one); without, as registered types do: a document of
        an unregistered type is a :class:`RawEvent`, a mapping a dict.

        Raises:
            InvalidInputError: a bad view name, key or type.
            IntegrityError: the document does not decode as its type.
        """
        self._require_open()
        partition = view_partition(check_view_name(view), check_view_key(key))
        doc_type = check_struct_type(type, "type")
        record = await self._backend.get(partition, 0)
        if not isinstance(record, ViewRecord):
            return None
        if doc_type is not None:
            return self._codec.decode_as(record.document, doc_type)
        return self._codec.decode_events(record.document)[0]

    @_operation
    async def head(self, aggregate_id: str) -> AggregateHead | None:
        """The aggregate's head, or ``None`` when it does not exist (consistent read)."""
        self._require_open()
        record = await self._backend.get_head(check_aggregate_id(aggregate_id))
        return to_head(record) if record is not None else None
