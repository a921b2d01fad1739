"""Append planning, pure: what one append writes, and what a refusal means.

``plan_append`` builds the list of writes for one ``TransactWriteItems``; later
features add writes to that list rather than new code paths. ``explain`` reads the
cancellation reasons (the old items returned by ``ALL_OLD``) and says what happened
without another read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import IntegrityError
from .._models import ChangeSet
from .._records import (
    ChangeSetRecord,
    CommitPlan,
    CommitRejected,
    HeadRecord,
    HeadWrite,
    MarkerRecord,
    ObjectPointer,
    PutChangeSet,
    PutMarker,
    Write,
    token_of,
)
from .._retry import Refusal, classify, some_transient
from .._timeutil import from_us

__all__ = [
    "AppendRequest",
    "Busy",
    "Conflict",
    "Landed",
    "Outcome",
    "Refused",
    "TypeMismatch",
    "combine",
    "explain",
    "explain_each",
    "plan_append",
]


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One validated, encoded append. ``guarded``: also write a commit marker, so a
    retry with the same commit id lands at most once whatever the version. ``exact``:
    a guarded append at an explicit version (a command of a repository), whose conflict
    is final; otherwise a guarded append is an ``ANY`` one, retried at the version found."""

    aggregate_id: str
    events: tuple[Any, ...]  # as given; () when they were streamed to S3
    event_count: int
    payload: bytes | None  # inline payload, or None with a pointer
    pointer: ObjectPointer | None
    metadata: dict[str, Any]
    metadata_bytes: bytes | None
    aggregate_type: str | None
    commit_id: str
    guarded: bool
    exact: bool = False
    digest: str | None = None  # of the events (``EncodedPayload.digest``)

    @property
    def follows_head(self) -> bool:
        """An ``ANY`` append: a conflict is retried at the version found."""
        return self.guarded and not self.exact

    @property
    def same_events_required(self) -> bool:
        """A retry with this commit id must carry the events stored with it. A
        repository's command (guarded, at an explicit version) re-decides its events on
        a retry, and its earlier landing stands whatever they are."""
        return not (self.guarded and self.exact)

    def change_set(self, version: int, timestamp_us: int) -> ChangeSet:
        """The change set this request stores at ``version``."""
        return ChangeSet(
            aggregate_id=self.aggregate_id,
            version=version,
            commit_id=self.commit_id,
            timestamp=from_us(timestamp_us),
            events=self.events,
            metadata=self.metadata,
            event_count=self.event_count,
        )

    def record(self, version: int, timestamp_us: int) -> ChangeSetRecord:
        return ChangeSetRecord(
            aggregate_id=self.aggregate_id,
            version=version,
            commit_id=self.commit_id,
            timestamp_us=timestamp_us,
            event_count=self.event_count,
            payload=self.payload,
            metadata=self.metadata_bytes,
            pointer=self.pointer,
            digest=self.digest,
        )


def plan_append(request: AppendRequest, expected: int, timestamp_us: int) -> CommitPlan:
    """Head move (or creation) + change set insert (+ commit marker when guarded)."""
    version = expected + 1
    head = HeadRecord(
        aggregate_id=request.aggregate_id,
        aggregate_type=request.aggregate_type,
        version=version,
        last_commit_id=request.commit_id,
        event_count=request.event_count,
        created_us=timestamp_us,
        updated_us=timestamp_us,
    )
    writes: list[Write] = [
        HeadWrite(head=head, expected_version=expected, added_events=request.event_count),
        PutChangeSet(record=request.record(version, timestamp_us)),
    ]
    if request.guarded:
        marker = MarkerRecord(request.aggregate_id, request.commit_id, version)
        writes.append(PutMarker(record=marker))
    return CommitPlan(writes=tuple(writes), token=request_token(request, version, timestamp_us))


def combine(plans: list[CommitPlan], extra: Sequence[Write] = ()) -> CommitPlan:
    """One transaction of several appends (``append_many``) and their feed writes."""
    if len(plans) == 1 and not extra:
        return plans[0]
    token = token_of(*(plan.token for plan in plans), *map(repr, extra))
    writes = tuple(w for plan in plans for w in plan.writes) + tuple(extra)
    return CommitPlan(writes=writes, token=token)


def explain_each(
    rejected: CommitRejected, plans: list[CommitPlan], requests: list[AppendRequest]
) -> list[Outcome | None]:
    """Per append of a combined plan: its outcome, or None where nothing objected."""
    outcomes: list[Outcome | None] = []
    offset = 0
    for plan, request in zip(plans, requests, strict=True):
        reasons = rejected.reasons[offset : offset + len(plan.writes)]
        offset += len(plan.writes)
        if all(reason is None or reason.code == "None" for reason in reasons):
            outcomes.append(None)
        else:
            outcomes.append(explain(CommitRejected(list(reasons)), plan, request))
    return outcomes


def request_token(request: AppendRequest, version: int, timestamp_us: int) -> str:
    """The ``ClientRequestToken`` (at most 36 characters) of one attempt.

    botocore re-sends a request unchanged, token included, so DynamoDB answers a
    re-sent transaction that already landed with success. Any other attempt has other
    parameters (another version, or a later call's timestamps) and so gets another
    token: DynamoDB refuses a token reused with new parameters
    (IdempotentParameterMismatch), and the conditions find the landed commit instead.
    """
    return token_of(request.aggregate_id, request.commit_id, version, timestamp_us)


# -- what a refusal means -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Landed:
    """This commit id is already stored at ``version`` (a retry of a landed append)."""

    version: int
    record: ChangeSetRecord | None  # the stored change set, when the refusal returned it


@dataclass(frozen=True, slots=True)
class Conflict:
    """Another writer moved the aggregate; ``actual`` is its version now."""

    actual: int


@dataclass(frozen=True, slots=True)
class TypeMismatch:
    stored_type: str | None


@dataclass(frozen=True, slots=True)
class Busy:
    """Cancelled for a passing reason: another transaction was in flight on the same
    items (TransactionConflict), or an item was throttled. A retry mends it."""


@dataclass(frozen=True, slots=True)
class Refused:
    """Cancelled for a reason no retry mends (ValidationError, item collection full...)."""

    codes: tuple[str, ...]


Outcome = Landed | Conflict | TypeMismatch | Busy | Refused


def explain(rejected: CommitRejected, plan: CommitPlan, request: AppendRequest) -> Outcome:
    """Turn cancellation reasons (aligned with ``plan.writes``) into an outcome."""
    failed = [
        (write, reason)
        for write, reason in zip(plan.writes, rejected.reasons, strict=False)
        if reason is not None and reason.code == "ConditionalCheckFailed"
    ]
    if not failed:
        if classify(rejected) is Refusal.BUSY:
            return Busy()
        return Refused(tuple(sorted(rejected.codes())))
    # The change set's own old item says the most (it needs no read-back): look first.
    for write, reason in sorted(failed, key=lambda pair: isinstance(pair[0], HeadWrite)):
        landed = _landed(write, reason.old, request.commit_id)
        if landed is not None:
            return landed
    head_write = plan.writes[0]
    assert isinstance(head_write, HeadWrite)
    for write, reason in failed:
        if isinstance(write, HeadWrite):
            return _head_outcome(reason.old, head_write, request)
    if some_transient(rejected):  # the head's own condition was not evaluated: ask again
        return Busy()
    raise IntegrityError(
        f"aggregate {request.aggregate_id!r}: change set {head_write.head.version} exists "
        f"but the head is at version {head_write.expected_version}"
    )


def _landed(write: Write, old: object, commit_id: str) -> Landed | None:
    if isinstance(old, MarkerRecord) and old.commit_id == commit_id:
        return Landed(version=old.version, record=None)
    if isinstance(old, ChangeSetRecord) and old.commit_id == commit_id:
        return Landed(version=old.version, record=old)
    if isinstance(old, HeadRecord) and old.last_commit_id == commit_id:
        return Landed(version=old.version, record=None)
    return None


def _head_outcome(old: object, write: HeadWrite, request: AppendRequest) -> Outcome:
    if not isinstance(old, HeadRecord):
        return Conflict(actual=0)
    given = request.aggregate_type
    stored = old.aggregate_type
    if old.version == write.expected_version and given is not None and stored not in (None, given):
        return TypeMismatch(stored_type=stored)
    return Conflict(actual=old.version)
