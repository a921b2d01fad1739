"""The one error tree of eventstore_async.

Every failure a caller may want to handle differently has its own class::

    EventStoreError
    ├── InvalidInputError (also a ValueError)   bad argument, nothing was sent
    ├── ConcurrencyError                        expected version did not match
    ├── AggregateNotFoundError                  load() of an aggregate with no change sets
    ├── ChangeSetNotFoundError                  iter_events() of a version that does not exist
    ├── AggregateTypeMismatchError              append() named another type than the stored one
    ├── IdempotencyMismatchError                a commit id is stored with other events
    ├── ChangeSetTooLargeError                  over a DynamoDB item or transaction limit
    ├── IntegrityError                          stored data failed a check (hash, format)
    ├── EvolveError                             a decider's evolve failed on stored events
    ├── StoreClosedError                        the store is not open
    ├── SubscriptionError
    │   ├── SubscriptionBusyError               another consumer holds the subscription
    │   └── LeaseLostError                      another consumer took the subscription over
    │       └── ShardLeaseLostError             ... or one shard of a consumer group
    └── StorageError                            AWS refused or failed a request
        ├── SchemaMissingError                  the table or bucket does not exist
        ├── AccessDeniedError                   credentials or permissions
        └── StorageUnavailableError             throttled, timed out, unreachable
            ├── CommitOutcomeUnknownError       an append's outcome could not be settled
            └── SnapshotOutcomeUnknownError     a snapshot save's outcome could not be settled

A botocore or aiohttp exception never reaches the caller: ``_backends/aws/errors.py``
translates them in one place and chains the original as ``__cause__``.

A :class:`StorageError` says who decided: ``code`` is the error code AWS sent
(``"ValidationException"``, ``"TransactionConflict"``...) and ``reason`` is None; or AWS
sent none and ``reason`` says why the library raised it, with ``code`` None:

    AppendDeadline      no commit within ``append_deadline_seconds``
    UploadTooSlow       an upload, or a batch's encoding with uploads, took longer than
                        ``max_upload_seconds``; nothing was committed, a retry is safe
                        (a :class:`StorageUnavailableError`, as for AppendDeadline)
    UnprocessedKeys     BatchGetItem still left keys unprocessed after its retries
    SchemaMismatch      ``ping()``: the table is keyed otherwise than the store's
    TableNotActive      ``ping()``: the table exists but is not ACTIVE
    the exception name  no answer came: the transport or the client failed
                        (``ConnectionClosedError``, ``ReadTimeoutError``, ``SSLError``,
                        ``NoCredentialsError``...; for an append whose outcome is unknown,
                        any other exception it met, ``"RuntimeError"``...)
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "AggregateNotFoundError",
    "AggregateTypeMismatchError",
    "ChangeSetNotFoundError",
    "ChangeSetTooLargeError",
    "CommitOutcomeUnknownError",
    "ConcurrencyError",
    "EventStoreError",
    "EvolveError",
    "IdempotencyMismatchError",
    "IntegrityError",
    "InvalidInputError",
    "LeaseLostError",
    "SchemaMissingError",
    "ShardLeaseLostError",
    "SnapshotOutcomeUnknownError",
    "StorageError",
    "StorageUnavailableError",
    "StoreClosedError",
    "SubscriptionBusyError",
    "SubscriptionError",
]


class EventStoreError(Exception):
    """Root of every error this library raises."""


class InvalidInputError(EventStoreError, ValueError):
    """An argument is not acceptable; raised before anything is sent.

    ``argument`` names the offending parameter (``"aggregate_id"``, ``"events[3]"``...).
    """

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument}: {problem}")
        self.argument = argument
        self.problem = problem


class ConcurrencyError(EventStoreError):
    """The aggregate's version was not the expected one; nothing was written.

    ``actual`` is the version found in the store (0 when the aggregate does not exist).
    For ``append_many``, ``conflicts`` holds one error per aggregate that failed (the
    attributes of this one are the first's); for ``append`` it is ``(self,)``.
    """

    aggregate_id: str
    expected: int
    actual: int
    conflicts: tuple[ConcurrencyError, ...]

    def __init__(
        self,
        aggregate_id: str,
        expected: int,
        actual: int,
        *,
        others: tuple[ConcurrencyError, ...] = (),
    ) -> None:
        message = f"aggregate {aggregate_id!r}: expected version {expected}, found {actual}"
        message += "".join(
            f"; aggregate {o.aggregate_id!r}: expected {o.expected}, found {o.actual}"
            for o in others
        )
        super().__init__(message)
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.actual = actual
        self.conflicts = (self, *others)

    @classmethod
    def of(cls, conflicts: list[ConcurrencyError]) -> ConcurrencyError:
        """One error naming every conflict of a batch."""
        first, *others = conflicts
        return cls(first.aggregate_id, first.expected, first.actual, others=tuple(others))


class AggregateNotFoundError(EventStoreError, LookupError):
    """The aggregate has no change sets."""

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(f"aggregate {aggregate_id!r} does not exist")
        self.aggregate_id = aggregate_id


class ChangeSetNotFoundError(EventStoreError, LookupError):
    """The aggregate has no change set with that version."""

    def __init__(self, aggregate_id: str, version: int) -> None:
        super().__init__(f"aggregate {aggregate_id!r} has no change set {version}")
        self.aggregate_id = aggregate_id
        self.version = version


class AggregateTypeMismatchError(EventStoreError):
    """An append named an aggregate type other than the one the aggregate was created with."""

    def __init__(self, aggregate_id: str, expected_type: str | None, actual_type: str) -> None:
        super().__init__(
            f"aggregate {aggregate_id!r} has type {expected_type!r}, append named {actual_type!r}"
        )
        self.aggregate_id = aggregate_id
        self.stored_type = expected_type
        self.given_type = actual_type


class IdempotencyMismatchError(EventStoreError):
    """A retry reused a commit id that is stored with other events (as DynamoDB's
    ``IdempotentParameterMismatch``): this call wrote nothing, the stored change set
    (``version``) stands. Use a new commit id for new events.
    """

    def __init__(self, aggregate_id: str, commit_id: str, version: int) -> None:
        super().__init__(
            f"aggregate {aggregate_id!r}: commit id {commit_id!r} is stored at version "
            f"{version} with other events; nothing was written (a new change set needs a "
            "new commit id)"
        )
        self.aggregate_id = aggregate_id
        self.commit_id = commit_id
        self.version = version


class ChangeSetTooLargeError(EventStoreError):
    """A change set (or a batch) is over a storage limit; nothing was written."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class IntegrityError(EventStoreError):
    """Stored data failed a check: unknown payload format, size or hash mismatch."""


class EvolveError(EventStoreError):
    """A decider's ``evolve`` raised while folding a stored change set in.

    ``aggregate_id`` and ``version`` name the change set; the exception ``evolve``
    raised is ``__cause__``.
    """

    def __init__(self, aggregate_id: str, version: int, cause: BaseException) -> None:
        super().__init__(
            f"aggregate {aggregate_id!r}: evolve failed on version {version}: "
            f"{type(cause).__name__}: {cause}"
        )
        self.aggregate_id = aggregate_id
        self.version = version


class StoreClosedError(EventStoreError, RuntimeError):
    """The store was used before ``__aenter__`` or after ``aclose()``."""


class SubscriptionError(EventStoreError):
    """A subscription's lease did not allow what was asked."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class SubscriptionBusyError(SubscriptionError):
    """Another consumer holds the subscription's lease (``subscribe(..., wait=False)``)."""


class LeaseLostError(SubscriptionError):
    """The lease expired and another consumer took over: stop, and let it work.

    Nothing after the last checkpoint is lost; it is delivered to the new consumer.
    """


class ShardLeaseLostError(LeaseLostError):
    """One shard of a consumer group (``mode="shared"``) moved to another member, or was
    given up: that shard's work was not saved, the subscription goes on with its other
    shards. ``shard`` is the shard."""

    def __init__(self, name: str, shard: int) -> None:
        super().__init__(
            f"subscription {name!r}: shard {shard} is no longer this consumer's", name=name
        )
        self.shard = shard


#: The reasons the library gives when AWS sent no error code (see the module docstring).
APPEND_DEADLINE = "AppendDeadline"
UPLOAD_TOO_SLOW = "UploadTooSlow"
UNPROCESSED_KEYS = "UnprocessedKeys"
SCHEMA_MISMATCH = "SchemaMismatch"
TABLE_NOT_ACTIVE = "TableNotActive"


class StorageError(EventStoreError):
    """AWS refused or failed a request, or the library gave up on one.

    ``code`` is the error code AWS sent (``"ValidationException"``...), else None.
    ``reason`` is None when AWS sent a code; otherwise why the library raised this:
    ``"AppendDeadline"``, ``"UploadTooSlow"``, ``"UnprocessedKeys"``,
    ``"SchemaMismatch"``, ``"TableNotActive"``, or the name of
    the transport or client exception when no answer came (``"ReadTimeoutError"``...).
    ``operation`` is the API call (``"TransactWriteItems"``...).
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        code: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(f"{operation}: {code or reason}: {message}")
        self.code = code
        self.reason = reason
        self.operation = operation


class SchemaMissingError(StorageError):
    """The table or bucket does not exist (or is not the event store's).

    ``resource`` is ``"table"`` or ``"bucket"`` and ``name`` its name (``None`` when the
    failing call did not say); the message says how to create it.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        code: str | None = None,
        resource: str = "table",
        name: str | None = None,
    ) -> None:
        super().__init__(message, code=code, operation=operation)
        self.resource = resource
        self.name = name

    @classmethod
    def of(
        cls,
        resource: str,
        name: str | None,
        *,
        code: str | None,
        operation: str,
        detail: str = "",
    ) -> SchemaMissingError:
        """The error for a missing ``resource`` (``"table"`` or ``"bucket"``) ``name``;
        ``detail`` is what AWS said."""
        named = f"the {resource} {name!r}" if name else f"the {resource}"
        message = (
            f"{named} does not exist at this endpoint and region; create it with "
            "'eventstore init' (the cli extra), 'await store.create_schema()', or your "
            "infrastructure code (README: Schema), or check table_name, bucket_name, "
            "region_name and endpoint_url"
        )
        if detail:
            message += f" (AWS: {detail})"
        return cls(message, code=code, operation=operation, resource=resource, name=name)


class AccessDeniedError(StorageError):
    """The credentials were refused or lack a permission."""


class StorageUnavailableError(StorageError):
    """Throttled, timed out or unreachable after the configured retries, or a local
    time limit passed before anything was committed (``reason`` ``"AppendDeadline"``,
    ``"UploadTooSlow"``). Safe to retry."""


class CommitOutcomeUnknownError(StorageUnavailableError):
    """An append's response was lost and its outcome could not be read back.

    Retry the append with the same ``commit_id``: it lands at most once.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        commit_id: str,
        commit_ids: tuple[str, ...] = (),
        code: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason, operation=operation)
        self.commit_id = commit_id
        #: Every commit id of the batch (``(commit_id,)`` for a single append).
        self.commit_ids = commit_ids or (commit_id,)


class SnapshotOutcomeUnknownError(StorageUnavailableError):
    """A snapshot's transaction was sent but whether it landed could not be settled:
    the response was lost and reading the snapshot back did not find it (or failed).

    Saving again is safe: a snapshot of the same version replaces this one. Its
    offloaded state, if any, is left for ``sweep_orphans``, which deletes it only if
    no snapshot points to it.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        aggregate_id: str,
        version: int,
        code: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason, operation=operation)
        self.aggregate_id = aggregate_id
        self.version = version
