"""Snapshots: save an aggregate's state at a version; keep the last few per schema.

A snapshot item sits right after the change set it was made at (sort key
``version.xxxxxxxxxx``, the fraction from the schema name), so one Query from it
returns the snapshot and then every later change set. The head lists the retained
versions per schema, so a load knows where to start after one GetItem: two requests
whatever the history's length. Saving is one transaction: the head's list (guarded by
``snap_seq``, so concurrent saves cannot lose one), the snapshot, and the deletion of
snapshots past ``keep``. Large states are offloaded to S3 like change sets.

One transaction holds at most 100 actions, so a save deletes at most
``MAX_DELETIONS`` old snapshots (the oldest first); any others past ``keep`` stay
listed on the head, still valid and still used by loads, and go on later saves.

The objects of evicted or overwritten snapshots are deleted after the commit; a load
that read such a snapshot just before re-reads (``_read/load.py``). The new state's object is
deleted when the save certainly did not land (it failed before sending, or the
transaction was refused); when the outcome is unknown (response lost, cancelled in
flight) the snapshot is read back, and if that does not settle it
:class:`SnapshotOutcomeUnknownError` is raised and the object is left to
``sweep_orphans``, which deletes it only if no snapshot points to it. Any other
failure of the request itself is raised as is, its object also left to the sweep.

The transaction's ``ClientRequestToken`` is a hash of the aggregate, schema,
``snap_seq``, version and timestamp (:func:`request_token`), like an append's.

Refusals go through the one retry loop (``_retry.py``). A save recognises its own
commit as an append does: a refused attempt may be botocore's re-send of one that
landed (without request-token idempotency the re-send is refused because
``snap_seq`` moved), so the snapshot is read back first, and this save's own
(timestamp and pointer) means it landed. A save never deletes the object it
commits; when its last refused attempt may have landed unseen and been removed by
later saves (which delete its object), it writes the state to a new object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import anyio

from .._backends.protocol import Backend
from .._config import StoreConfig
from .._errors import (
    APPEND_DEADLINE,
    AggregateNotFoundError,
    InvalidInputError,
    SnapshotOutcomeUnknownError,
    StorageError,
    StorageUnavailableError,
)
from .._offload.payload import EncodedPayload, Offloader
from .._records import (
    MAX_TRANSACTION_ACTIONS,
    CommitPlan,
    CommitRejected,
    DeleteSnapshot,
    HeadRecord,
    PutSnapshot,
    SnapshotIndexWrite,
    SnapshotRecord,
    SortKey,
    Write,
    snapshot_sort_key,
    token_of,
)
from .._retry import (
    ConflictBackoff,
    Done,
    Refusal,
    Retry,
    classify,
    commit_with_retries,
    still_cancelled,
)
from .._timeutil import now_us

__all__ = [
    "MAX_DELETIONS",
    "SnapshotWriter",
    "check_keep",
    "check_schema",
    "request_token",
]

_SCHEMA = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_KEEP = 100
#: Old snapshots one save deletes at most: the transaction's room once the head's list
#: and the snapshot itself are written.
MAX_DELETIONS = MAX_TRANSACTION_ACTIONS - 2
#: New objects one save may write for an offloaded state: another is needed only when
#: the last attempt may have landed unseen and been removed (its object deleted).
FRESH_OBJECTS = 3


def check_schema(schema: Any) -> str:
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise InvalidInputError("schema", "must be 1 to 64 characters of letters, digits and ._:-")
    return schema


def check_keep(keep: Any) -> int:
    """``keep`` bounds the head's list, not a save's transaction: deletions past one
    transaction's room are spread over later saves (see ``MAX_DELETIONS``)."""
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP:
        raise InvalidInputError("keep", f"must be an int from 1 to {MAX_KEEP}")
    return keep


@dataclass(slots=True)
class _Sending:
    """Whether a transaction that may have landed was sent: then the new state's
    object must not be deleted, a committed snapshot may point to it. ``answered``:
    the last attempt was refused (its transaction finished), so a read-back settles
    whether an earlier send of it landed. ``record`` is the state being saved,
    ``stale`` the objects its last attempt removes."""

    in_flight: bool = False
    answered: bool = False
    record: SnapshotRecord | None = None
    stale: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Retention:
    """What a save does to the head's list of one schema."""

    listed: tuple[int, ...]  # the versions listed after the save, oldest first
    deleted: tuple[int, ...]  # the snapshots it deletes (at most MAX_DELETIONS)


class SnapshotWriter:
    def __init__(self, backend: Backend, offloader: Offloader, config: StoreConfig) -> None:
        self._backend = backend
        self._offloader = offloader
        self._backoff = ConflictBackoff.of(config)
        self._deadline = config.append_deadline_seconds

    async def save(
        self, aggregate_id: str, version: int, state: Any, schema: str, keep: int
    ) -> SnapshotRecord | None:
        """Store the snapshot; None when ``keep`` newer ones make it useless.

        Once the state is encoded, the save commits within ``append_deadline_seconds``
        like an append: an offloaded state is committed within the commit window the
        sweep's grace period relies on.

        Raises:
            SnapshotOutcomeUnknownError: sent, but whether it landed is unknown (also
                when the deadline passed with a transaction in flight).
            StorageError: cancelled for a reason no retry mends.
            StorageUnavailableError: other saves kept coming first, no commit
                within the deadline (``reason`` ``"AppendDeadline"``), or the state's
                upload took longer than ``max_upload_seconds`` (``"UploadTooSlow"``);
                nothing was written.
        """
        head = await self._head(aggregate_id, version)
        if _retention(head, schema, version, keep) is None:
            return None
        encoded = await self._offloader.encode(aggregate_id, [state])
        record = _record(aggregate_id, version, schema, encoded)
        sending = _Sending()
        with anyio.move_on_after(self._deadline):
            return await self._save_fresh(head, record, state, keep, sending)
        return await self._past_deadline(record, sending)

    async def _save_fresh(
        self, head: HeadRecord, record: SnapshotRecord, state: Any, keep: int, sending: _Sending
    ) -> SnapshotRecord | None:
        """Save ``record``; with a new object when its own may have been deleted."""
        for _ in range(FRESH_OBJECTS - 1):
            try:
                return await self._save(head, record, keep, sending)
            except _ObjectInDoubt as doubt:
                head = doubt.head  # the object is deleted: save again with a new one
            encoded = await self._offloader.encode(record.aggregate_id, [state])
            record = _record(record.aggregate_id, record.version, record.schema, encoded)
        try:
            return await self._save(head, record, keep, sending)
        except _ObjectInDoubt:
            raise still_cancelled(
                f"aggregate {record.aggregate_id!r}: snapshot at version {record.version}",
                FRESH_OBJECTS,
                {"ConditionalCheckFailed"},
            ) from None

    async def _save(
        self, head: HeadRecord, record: SnapshotRecord, keep: int, sending: _Sending
    ) -> SnapshotRecord | None:
        sending.in_flight, sending.record, sending.stale = False, record, []
        try:
            return await self._commit(head, record, keep, sending)
        except _Superseded:
            await self._discard_state(record)
            return None
        except BaseException:
            if not sending.in_flight:  # nothing landed: no snapshot points to the object
                with anyio.CancelScope(shield=True):
                    await self._discard_state(record)
            raise

    async def _past_deadline(self, first: SnapshotRecord, sending: _Sending) -> SnapshotRecord:
        """No commit within the deadline. With a transaction in flight the snapshot is
        read back (SnapshotOutcomeUnknownError unless it is there); otherwise nothing
        was written and the state's object is already deleted."""
        record = sending.record or first
        timeout = StorageUnavailableError(
            f"aggregate {record.aggregate_id!r}: no snapshot commit within the append "
            f"deadline ({self._deadline:g} s)",
            reason=APPEND_DEADLINE,
            operation="TransactWriteItems",
        )
        if not sending.in_flight:
            raise timeout
        if sending.answered:
            await self._settle_refused(record, timeout)
        else:
            await self._settle(record, timeout)
        for key in sending.stale:
            await self._offloader.discard(key)
        return record

    async def _settle_refused(self, record: SnapshotRecord, late: StorageUnavailableError) -> None:
        """The deadline passed while a refusal was being read back. The refused
        transaction is over, so the read-back is conclusive, as between attempts: return
        if the save's own snapshot is stored (an earlier send landed); anything else
        means nothing of it is stored: its object is deleted and ``late`` raised."""
        try:
            stored = await self._stored(record)
        except StorageError as exc:  # it may be this save's, landed: the object stays
            raise _unknown(record, exc) from exc
        if not _is_same_snapshot(stored, record):
            await self._discard_state(record)
            raise late

    async def _commit(
        self, head: HeadRecord, record: SnapshotRecord, keep: int, sending: _Sending
    ) -> SnapshotRecord:
        attempts = _SaveAttempts(self, head, record, keep, sending)
        return await commit_with_retries(attempts, self._backoff)

    async def _stored(self, record: SnapshotRecord) -> object:
        """The snapshot item at ``record``'s version and schema, as stored now."""
        return await self._backend.get(record.aggregate_id, _sort_key(record))

    async def _settle(self, record: SnapshotRecord, exc: StorageUnavailableError) -> None:
        """The transaction failed in transport: return if the snapshot is stored (it
        landed), else raise, since it may still have landed or land yet."""
        try:
            stored = await self._stored(record)
        except StorageError:
            stored = None
        if _is_same_snapshot(stored, record):
            return
        raise _unknown(record, exc) from exc

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
        if not versions:
            return []
        keys: list[tuple[str, SortKey]] = [
            (record.aggregate_id, snapshot_sort_key(v, record.schema)) for v in versions
        ]
        olds = await self._backend.get_many(keys)
        return [
            old.pointer.key
            for old in olds
            if isinstance(old, SnapshotRecord) and old.pointer is not None
        ]

    async def _discard_state(self, record: SnapshotRecord) -> None:
        """Delete the new state's object: only once no snapshot can point to it."""
        if record.pointer is not None:
            await self._offloader.discard(record.pointer.key)


class _SaveAttempts:
    """The attempts of one save for :func:`commit_with_retries`. A busy refusal and a
    failed condition (another save moved ``snap_seq``) are both retried on a fresh
    read of the head; a refusal for any other reason is final (nothing was written,
    the caller deletes the new state's object).

    Any refusal may answer botocore's re-send of an attempt that landed (its answer
    lost): without request-token idempotency (the emulator, LocalStack) the re-send
    is refused because ``snap_seq`` moved. So a refusal is settled by reading the
    snapshot back first: this save's own snapshot (its timestamp and pointer) means
    it landed. And a save never deletes the object it commits.
    """

    def __init__(
        self,
        writer: SnapshotWriter,
        head: HeadRecord,
        record: SnapshotRecord,
        keep: int,
        sending: _Sending,
    ) -> None:
        self._writer = writer
        self._head: HeadRecord | None = head
        self._record = record
        self._keep = keep
        self._sending = sending
        self._refused_seq: int | None = None  # snap_seq the last refused attempt built on

    @property
    def subject(self) -> str:
        record = self._record
        return f"aggregate {record.aggregate_id!r}: snapshot at version {record.version}"

    async def send(self) -> SnapshotRecord:
        writer, record = self._writer, self._record
        head = self._head or await writer._head(record.aggregate_id, record.version)
        self._head = head
        if self._may_be_gone(head):
            raise _ObjectInDoubt(head)
        retention = _retention(head, record.schema, record.version, self._keep)
        if retention is None:
            raise _Superseded
        removed = await writer._objects_of(record, _removed(head, record, retention))
        own = record.pointer.key if record.pointer is not None else None
        self._sending.stale = [key for key in removed if key != own]
        self._sending.in_flight, self._sending.answered = True, False
        try:
            await writer._backend.commit(_plan(head, record, retention))
        except CommitRejected as rejected:
            # Refused for good: nothing written. Otherwise the refusal may answer a
            # re-send of an attempt that landed: in flight until the read-back says.
            self._sending.in_flight = classify(rejected) is not Refusal.FINAL
            self._sending.answered = True
            raise
        except StorageUnavailableError as exc:
            await writer._settle(record, exc)
        return await self._landed()

    async def refused(
        self, rejected: CommitRejected, refusal: Refusal, *, last: bool
    ) -> Retry | Done[SnapshotRecord]:
        try:
            stored = await self._writer._stored(self._record)
        except StorageError as exc:  # it may be this save's, landed: the object stays
            raise _unknown(self._record, exc) from exc
        if _is_same_snapshot(stored, self._record):
            return Done(await self._landed())
        self._sending.in_flight = False  # not this save's: the attempt wrote nothing
        assert self._head is not None
        self._refused_seq = self._head.snapshot_seq
        self._head = None  # the next attempt builds on the head as it is then
        return Retry.BACKOFF

    def retrying(self, how: Retry) -> None:
        """No counters for saves."""

    async def _landed(self) -> SnapshotRecord:
        """Stored: delete the objects of the snapshots it evicted or overwrote."""
        for key in self._sending.stale:
            await self._writer._offloader.discard(key)
        return self._record

    def _may_be_gone(self, head: HeadRecord) -> bool:
        """The last refused attempt may have landed unseen and been removed since by
        another save, which then deleted this save's object: more than one save came
        after the one it built on, and the read-back did not find this one."""
        return (
            self._record.pointer is not None
            and self._refused_seq is not None
            and head.snapshot_seq > self._refused_seq + 1
        )


class _ObjectInDoubt(Exception):
    """This save's object may have been deleted by another save: use a new one."""

    def __init__(self, head: HeadRecord) -> None:
        super().__init__(head.aggregate_id)
        self.head = head


class _Superseded(Exception):
    """Newer snapshots arrived meanwhile; this one would be dropped at once."""


def _retention(head: HeadRecord, schema: str, version: int, keep: int) -> _Retention | None:
    """The ``keep`` newest versions once ``version`` is added (None if it is not among
    them), plus those past ``keep`` that do not fit in this save's transaction: the
    oldest are deleted first, the others stay listed until a later save."""
    listed = head.snapshots.get(schema, ())
    newest = tuple(sorted({*listed, version}))[-keep:]
    if version not in newest:
        return None
    dropped = sorted(v for v in listed if v not in newest)
    deleted, overflow = dropped[:MAX_DELETIONS], dropped[MAX_DELETIONS:]
    return _Retention(listed=tuple(sorted({*overflow, *newest})), deleted=tuple(deleted))


def _removed(head: HeadRecord, record: SnapshotRecord, retention: _Retention) -> list[int]:
    """Versions whose stored snapshot this save deletes or overwrites."""
    removed = list(retention.deleted)
    if record.version in head.snapshots.get(record.schema, ()):
        removed.append(record.version)  # overwritten: its object goes too
    return removed


def _unknown(record: SnapshotRecord, exc: StorageError) -> SnapshotOutcomeUnknownError:
    return SnapshotOutcomeUnknownError(
        f"aggregate {record.aggregate_id!r}: the snapshot at version {record.version} "
        f"(schema {record.schema!r}) may or may not have been saved ({exc}); saving "
        "it again is safe",
        code=exc.code,
        reason=exc.reason,
        operation=exc.operation,
        aggregate_id=record.aggregate_id,
        version=record.version,
    )


def _sort_key(record: SnapshotRecord) -> SortKey:
    return snapshot_sort_key(record.version, record.schema)


def _is_same_snapshot(stored: object, record: SnapshotRecord) -> bool:
    return (
        isinstance(stored, SnapshotRecord)
        and stored.timestamp_us == record.timestamp_us
        and stored.pointer == record.pointer
        and stored.payload == record.payload
    )


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


def _plan(head: HeadRecord, record: SnapshotRecord, retention: _Retention) -> CommitPlan:
    index = SnapshotIndexWrite(
        aggregate_id=record.aggregate_id,
        schema=record.schema,
        versions=retention.listed,
        expected_seq=head.snapshot_seq,
        min_version=record.version,
    )
    writes: list[Write] = [index, PutSnapshot(record)]
    writes += [DeleteSnapshot(record.aggregate_id, v, record.schema) for v in retention.deleted]
    return CommitPlan(writes=tuple(writes), token=request_token(record, head.snapshot_seq))


def request_token(record: SnapshotRecord, snapshot_seq: int) -> str:
    """The ``ClientRequestToken`` (at most 36 characters) of one save attempt.

    Like an append's (``_write/plan.py``, ``request_token``), a hash of everything that tells the
    attempt apart: the aggregate, the schema, the head's ``snap_seq`` the attempt
    builds on, the version and the save's timestamp. botocore's re-sends keep it, so a
    re-sent transaction that landed is answered with success; saves of other
    aggregates or schemas in the same microsecond get other tokens instead of
    ``IdempotentParameterMismatch``.
    """
    return token_of(
        record.aggregate_id, record.schema, snapshot_seq, record.version, record.timestamp_us
    )
