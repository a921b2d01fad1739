"""Storage-level records and commit plans: what backends store, before decoding.

Pure data shared by every backend. Timestamps are integer microseconds since the
epoch; payloads are the codec's bytes. Records are msgspec Structs without GC
tracking: a load builds one per item, and a frozen dataclass costs ten times as much
to build (measured: 2,234 -> 1,682 us of client CPU per 100-item load).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

import msgspec

__all__ = [
    "MAX_ENTRY_TYPE_BYTES",
    "MAX_TRANSACTION_ACTIONS",
    "TRANSIENT_CODES",
    "ChangeSetRecord",
    "CheckpointRecord",
    "CheckpointWrite",
    "CommitPlan",
    "CommitRejected",
    "DeleteMember",
    "DeleteSnapshot",
    "DeleteView",
    "FeedAdvance",
    "FeedCounterRecord",
    "FeedEntryRecord",
    "FeedShapeRecord",
    "HeadRecord",
    "HeadWrite",
    "LeaseWrite",
    "MarkerRecord",
    "MemberRecord",
    "ObjectPointer",
    "PutChangeSet",
    "PutFeedEntry",
    "PutFeedShape",
    "PutMarker",
    "PutMember",
    "PutSnapshot",
    "PutView",
    "Rejection",
    "SnapshotIndexWrite",
    "SnapshotRecord",
    "SortKey",
    "ViewRecord",
    "checkpoint_partition",
    "feed_partition",
    "group_partition",
    "marker_sort_key",
    "member_sort_key",
    "schema_partition",
    "snapshot_sort_key",
    "token_of",
    "view_partition",
]


class HeadRecord(msgspec.Struct, frozen=True, gc=False):
    aggregate_id: str
    aggregate_type: str | None
    version: int
    last_commit_id: str
    event_count: int
    created_us: int
    updated_us: int
    #: Versions of the retained snapshots, per state schema (oldest first).
    snapshots: dict[str, tuple[int, ...]] = msgspec.field(default_factory=dict)
    #: Bumped by every snapshot save: the optimistic lock of ``snapshots``.
    snapshot_seq: int = 0


class ObjectPointer(msgspec.Struct, frozen=True, gc=False):
    """Where an offloaded payload lives in S3, and how to check what comes back."""

    key: str
    size: int  # bytes of the stored object
    sha256: str  # hex digest of the stored object
    compression: str | None = None  # "zlib" or None


class ChangeSetRecord(msgspec.Struct, frozen=True, gc=False):
    """A change set as stored: its payload inline, or a pointer to it in S3."""

    aggregate_id: str
    version: int
    commit_id: str
    timestamp_us: int
    event_count: int
    payload: bytes | None
    metadata: bytes | None
    pointer: ObjectPointer | None = None
    #: Digest of the events (see ``_offload.payload.array_digest``); None when written
    #: before digests were stored.
    digest: str | None = None


class SnapshotRecord(msgspec.Struct, frozen=True, gc=False):
    """An aggregate's state at ``version``, made with state schema ``schema``."""

    aggregate_id: str
    version: int
    schema: str
    timestamp_us: int
    payload: bytes | None
    pointer: ObjectPointer | None = None


class MarkerRecord(msgspec.Struct, frozen=True, gc=False):
    """Remembers that a commit id landed, for ``ANY``-version appends."""

    aggregate_id: str
    commit_id: str
    version: int


class FeedCounterRecord(msgspec.Struct, frozen=True, gc=False):
    """The last position handed out in one feed shard."""

    shard: int
    position: int


class FeedEntryRecord(msgspec.Struct, frozen=True, gc=False):
    """Position ``position`` of feed shard ``shard``: which change set it is."""

    shard: int
    position: int
    aggregate_id: str
    version: int
    commit_id: str
    timestamp_us: int
    event_count: int
    #: The aggregate type given on the append (None: none given, or an older entry).
    aggregate_type: str | None = None
    #: The change set's distinct event type names, sorted (None: not known).
    event_types: tuple[str, ...] | None = None


class FeedShapeRecord(msgspec.Struct, frozen=True, gc=False):
    """The table's feed: how many shards every store writing to it must use."""

    shards: int


class CheckpointRecord(msgspec.Struct, frozen=True, gc=False):
    """A subscription's progress (next position to read per shard) and its lease."""

    name: str
    positions: tuple[int, ...]
    owner: str
    lease_until_us: int
    seq: int


class MemberRecord(msgspec.Struct, frozen=True, gc=False):
    """A live consumer of a shared subscription (a consumer group), until its term ends."""

    group: str
    owner: str
    lease_until_us: int


class ViewRecord(msgspec.Struct, frozen=True, gc=False):
    """One document of a read model maintained by a projection."""

    view: str
    key: str
    document: bytes


Record = (
    HeadRecord
    | ChangeSetRecord
    | MarkerRecord
    | SnapshotRecord
    | FeedCounterRecord
    | FeedEntryRecord
    | FeedShapeRecord
    | CheckpointRecord
    | MemberRecord
    | ViewRecord
)

# Partitions that are not aggregates start with a control character, which no
# aggregate id may hold: the namespaces cannot meet.
_SYSTEM = "\x1f"


def feed_partition(shard: int) -> str:
    return f"{_SYSTEM}feed/{shard}"


def schema_partition() -> str:
    """Where the table's own settings live (the feed's shape)."""
    return f"{_SYSTEM}schema"


def checkpoint_partition(name: str) -> str:
    return f"{_SYSTEM}sub/{name}"


def group_partition(group: str) -> str:
    """The members of a shared subscription, one item each."""
    return f"{_SYSTEM}group/{group}"


def member_sort_key(owner: str) -> int:
    """A member's item in its group's partition: 48 bits of SHA-256 of its owner id."""
    return int.from_bytes(hashlib.sha256(owner.encode()).digest()[:6], "big") + 1


def view_partition(view: str, key: str) -> str:
    return f"{_SYSTEM}view/{view}/{key}"


#: Sort keys: 0 the head, 1..n change sets, v.xxxxxxxxxx snapshots (between their
#: version and the next), negative commit markers.
SortKey = int | Decimal


def snapshot_sort_key(version: int, schema: str) -> Decimal:
    """A snapshot sits just after the change set it was made at: ``version`` plus a
    fraction from the schema (ten decimal digits, exact in DynamoDB's 38), so a Query
    from it returns the snapshot and then the change sets after it."""
    digest = hashlib.sha256(schema.encode()).digest()
    slot = int.from_bytes(digest[:8], "big") % 9_999_999_999 + 1
    return Decimal(version) + Decimal(slot).scaleb(-10)


def marker_sort_key(commit_id: str) -> int:
    """The negative sort key of a commit marker: never inside a history's range (>= 0).

    120 bits of SHA-256 keep it within DynamoDB's 38 digits of number precision.
    """
    digest = hashlib.sha256(commit_id.encode()).digest()
    return -(int.from_bytes(digest[:15], "big") + 1)


@dataclass(frozen=True, slots=True)
class HeadWrite:
    """Create the head (``expected_version == 0``) or move it from the expected version.

    ``head`` is the new head; on update only version, commit id, event count delta,
    updated time and (when absent) the type are written, so ``created_us`` stays.
    """

    head: HeadRecord
    expected_version: int
    added_events: int


@dataclass(frozen=True, slots=True)
class PutChangeSet:
    """Insert a change set; fails if that version exists."""

    record: ChangeSetRecord


@dataclass(frozen=True, slots=True)
class PutMarker:
    """Insert a commit marker; fails if that commit id already landed."""

    record: MarkerRecord


@dataclass(frozen=True, slots=True)
class PutSnapshot:
    """Insert or replace a snapshot."""

    record: SnapshotRecord


@dataclass(frozen=True, slots=True)
class DeleteSnapshot:
    aggregate_id: str
    version: int
    schema: str


@dataclass(frozen=True, slots=True)
class SnapshotIndexWrite:
    """Set the head's list of retained snapshot versions for one schema, if the head
    is at ``min_version`` or later and nobody saved a snapshot since ``expected_seq``."""

    aggregate_id: str
    schema: str
    versions: tuple[int, ...]
    expected_seq: int
    min_version: int


@dataclass(frozen=True, slots=True)
class FeedAdvance:
    """Move a feed shard's counter from ``expected`` to ``expected + count``."""

    shard: int
    expected: int
    count: int


@dataclass(frozen=True, slots=True)
class PutFeedEntry:
    record: FeedEntryRecord


@dataclass(frozen=True, slots=True)
class PutFeedShape:
    """Record the table's feed shape; fails if one is recorded (``old`` is it)."""

    record: FeedShapeRecord


@dataclass(frozen=True, slots=True)
class LeaseWrite:
    """Take or renew a subscription's lease: allowed when it is free, expired, or ours.
    Creates the checkpoint (at ``positions``) when there is none."""

    name: str
    owner: str
    lease_until_us: int
    now_us: int
    positions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CheckpointWrite:
    """Save progress, only while ``owner`` holds an unexpired lease and nobody else
    saved since ``expected_seq``."""

    name: str
    owner: str
    positions: tuple[int, ...]
    expected_seq: int
    now_us: int
    lease_until_us: int | None = None  # also extend (or, with 0, release) the lease


@dataclass(frozen=True, slots=True)
class PutMember:
    """Announce (or renew) a member of a consumer group."""

    record: MemberRecord


@dataclass(frozen=True, slots=True)
class DeleteMember:
    group: str
    owner: str


@dataclass(frozen=True, slots=True)
class PutView:
    record: ViewRecord


@dataclass(frozen=True, slots=True)
class DeleteView:
    view: str
    key: str


Write = (
    HeadWrite
    | PutChangeSet
    | PutMarker
    | PutSnapshot
    | DeleteSnapshot
    | SnapshotIndexWrite
    | FeedAdvance
    | PutFeedEntry
    | PutFeedShape
    | LeaseWrite
    | CheckpointWrite
    | PutView
    | DeleteView
    | PutMember
    | DeleteMember
)


#: Event type names a feed entry carries at most (UTF-8 bytes, all names together); a
#: change set with more leaves them out and a filter reads it instead.
MAX_ENTRY_TYPE_BYTES = 1024

#: DynamoDB's limit on actions in one TransactWriteItems (each on another item).
MAX_TRANSACTION_ACTIONS = 100

#: Cancellation reason codes a new attempt may not meet again: another transaction was
#: in flight on one of the items, or an item was throttled. Any other reason
#: (ValidationError, ItemCollectionSizeLimitExceeded...) no retry mends.
TRANSIENT_CODES = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)


def token_of(*parts: object) -> str:
    """A ``ClientRequestToken`` (36 characters, DynamoDB's limit) that only the same
    ``parts`` give: a SHA-256 of them, joined with NUL."""
    seed = "\x00".join(map(str, parts))
    return hashlib.sha256(seed.encode()).hexdigest()[:36]


@dataclass(frozen=True, slots=True)
class CommitPlan:
    """Writes that commit together or not at all, with an idempotency token."""

    writes: tuple[Write, ...]
    token: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one write of a plan was refused, with the item that stood in its way."""

    code: str  # "ConditionalCheckFailed", "TransactionConflict", ...
    old: Record | None


class CommitRejected(Exception):
    """A plan was cancelled; ``reasons`` lines up with ``plan.writes`` (None = no objection)."""

    def __init__(self, reasons: list[Rejection | None]) -> None:
        super().__init__(reasons)
        self.reasons = reasons

    def codes(self) -> set[str]:
        return {r.code for r in self.reasons if r is not None and r.code != "None"}
