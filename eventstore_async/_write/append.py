"""Append: send the plan, retry what may be retried, settle what is unknown.

One code path serves ``append`` and ``append_many``: a list of requests committed in
one ``TransactWriteItems``.

- A refused transaction is explained from its cancellation reasons: a retry of an
  append that already landed returns the stored change sets; a lost race raises
  :class:`ConcurrencyError` (``ANY`` appends try again at the version found).
- ``TransactionConflict`` (another transaction in flight) is retried with bounded
  full-jitter backoff. The loop and the sorting of refusals by code are
  ``_retry.commit_with_retries``, shared with snapshot saves and checkpoints.
- A transaction whose answer is lost (a transport failure after botocore's retries,
  any other error once it may have gone out, or the deadline) has an unknown outcome:
  every change set it would have written is read back, and only change sets carrying
  this attempt's commit id *and* timestamp count as this attempt's. Anything short of a
  settled answer is :class:`CommitOutcomeUnknownError`: the caller retries with the
  same commit ids.
- :class:`AppendProgress` records, whatever is raised, whether a transaction carrying
  the requests may have been stored, so the caller deletes offloaded objects only when
  none can be referenced.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from .._backends.protocol import Backend
from .._capacity import note_attempt
from .._closing import WriteGate
from .._config import StoreConfig
from .._errors import (
    APPEND_DEADLINE,
    AggregateTypeMismatchError,
    CommitOutcomeUnknownError,
    ConcurrencyError,
    IdempotencyMismatchError,
    IntegrityError,
    StorageError,
    StorageUnavailableError,
)
from .._feed.positions import FeedPositions
from .._models import AnyVersion
from .._records import ChangeSetRecord, CommitPlan, CommitRejected, Write
from .._retry import ConflictBackoff, Done, Refusal, Retry, commit_with_retries
from .._timeutil import now_us
from .plan import (
    AppendRequest,
    Conflict,
    Landed,
    Outcome,
    Refused,
    TypeMismatch,
    combine,
    explain_each,
    plan_append,
)

__all__ = [
    "AppendCounters",
    "AppendProgress",
    "Appender",
    "Committed",
]


@dataclass(frozen=True, slots=True)
class Committed:
    """Where a request's commit id is stored. ``earlier`` is the stored change set
    when an earlier attempt with this commit id had landed (this one wrote nothing)."""

    version: int
    timestamp_us: int
    earlier: ChangeSetRecord | None


@dataclass(slots=True)
class AppendCounters:
    """What this process's appends cost, for tuning (``EventStore.metrics``)."""

    commits: int = 0  # transactions that succeeded
    attempts: int = 0  # transactions sent (commits + refused + failed)
    feed_retries: int = 0  # refused only because a feed shard had moved on
    conflict_retries: int = 0  # TransactionConflict, or ANY appends that lost a race


@dataclass(slots=True)
class AppendProgress:
    """How far one append got, so that a failure is classified right.

    ``sending`` is the attempt whose transaction was sent and whose outcome is not
    settled yet: (versions, timestamp). ``landed`` is set once a refusal said that an
    earlier call stored these commit ids. While :attr:`in_doubt`, a stored change set
    may point to the append's offloaded objects, so they must not be deleted.
    """

    sending: tuple[list[int], int] | None = None
    landed: bool = False

    @property
    def in_doubt(self) -> bool:
        """A transaction carrying these requests may have been stored."""
        return self.sending is not None


class Appender:
    def __init__(self, backend: Backend, config: StoreConfig, gate: WriteGate) -> None:
        self._backend = backend
        self.gate = gate  # closed by aclose: no transaction is sent after
        self._backoff = ConflictBackoff.of(config)
        self._deadline = config.append_deadline_seconds
        self._feed = FeedPositions(backend, config.feed_shards)
        self.counters = AppendCounters()

    async def append(
        self,
        requests: list[AppendRequest],
        expected: Sequence[int | AnyVersion],
        progress: AppendProgress,
    ) -> list[Committed]:
        """Commit every request atomically (one transaction), within the deadline.

        ``progress`` is kept up to date, so that whatever this raises (cancellation
        included) the caller knows whether the requests may have been stored.
        """
        with anyio.move_on_after(self._deadline):
            versions = await self._start_versions(requests, expected)
            async with self._feed.turns(requests):
                return await self._commit(requests, versions, progress)
        return await self._past_deadline(requests, progress)

    async def _past_deadline(
        self, requests: list[AppendRequest], progress: AppendProgress
    ) -> list[Committed]:
        """The deadline passed. With a transaction in flight the outcome is unknown
        (settled by a read if possible). After a refusal said an earlier call stored
        these commit ids, they are stored but were not read back in time: unknown too,
        and a retry returns them. Otherwise nothing was written."""
        timeout = StorageUnavailableError(
            f"aggregate {requests[0].aggregate_id!r}: no commit within the append deadline "
            f"({self._deadline:g} s)",
            reason=APPEND_DEADLINE,
            operation="TransactWriteItems",
        )
        if progress.sending is not None:
            return await self._settle_unknown(requests, progress, timeout)
        if progress.landed:
            raise _outcome_unknown(
                requests, timeout, "an earlier call stored it, but it was not read back in time"
            ) from timeout
        raise timeout

    async def _commit(
        self, requests: list[AppendRequest], versions: list[int], progress: AppendProgress
    ) -> list[Committed]:
        attempts = _AppendAttempts(self, requests, versions, progress)
        return await commit_with_retries(attempts, self._backoff, short_retries=FEED_RETRIES)

    async def _start_versions(
        self, requests: list[AppendRequest], expected: Sequence[int | AnyVersion]
    ) -> list[int]:
        """Explicit versions as given; ``ANY`` ones from a consistent read of the head."""
        versions = [v if isinstance(v, int) else -1 for v in expected]
        for index, request in enumerate(requests):
            if versions[index] < 0:
                head = await self._backend.get_head(request.aggregate_id)
                versions[index] = head.version if head is not None else 0
        return versions

    async def _landed(
        self, requests: list[AppendRequest], outcomes: list[Outcome | None]
    ) -> list[Committed]:
        """An earlier attempt with these commit ids landed: all of it (it was atomic)."""
        committed = []
        for request, outcome in zip(requests, outcomes, strict=True):
            if not isinstance(outcome, Landed):
                raise _partly_stored(request)
            record = outcome.record or await self._read_back(request, outcome.version, requests)
            if record is None or record.commit_id != request.commit_id:
                raise IntegrityError(
                    f"aggregate {request.aggregate_id!r}: commit {request.commit_id!r} is "
                    f"recorded at version {outcome.version} but that change set is missing"
                )
            _check_same_events(request, record)
            committed.append(Committed(record.version, record.timestamp_us, record))
        return committed

    async def _read_back(
        self, request: AppendRequest, version: int, requests: list[AppendRequest]
    ) -> ChangeSetRecord | None:
        """The landed change set; if it cannot be read now (whatever the error: the
        client may have been closed under us), the caller is told to retry."""
        try:
            return await self._backend.get_change_set(request.aggregate_id, version)
        except Exception as exc:
            raise _outcome_unknown(requests, exc, "it landed but could not be read back") from exc

    async def _settle_unknown(
        self, requests: list[AppendRequest], progress: AppendProgress, cause: Exception
    ) -> list[Committed]:
        """A sent transaction's answer was lost: read back the change set of every entry,
        at the version this attempt wrote, and settle the outcome if the reads allow.

        - Every one written by this attempt (its commit id and timestamp): it landed.
        - Every one written by an earlier call with the same commit id (another
          timestamp): that call landed them and this attempt cannot (the versions are
          taken). They are returned as when a refusal says so (``Committed.earlier``).
        - Some written by an earlier call and the others surely not stored: part of a
          batch with these commit ids is stored and part is not, and this attempt
          cannot land. The same :class:`IntegrityError` as when a refusal says so.
        - Anything else is :class:`CommitOutcomeUnknownError`, with this attempt's objects
          left in place: a version still free (the transaction may be in flight),
          another writer's change set, a failed read, or entries that disagree in a way
          a retry settles (this attempt seen at one version, not yet at another).
          Retrying with the same commit ids returns the stored change sets or lands
          them once.

        A cancellation is not caught: it propagates, the outcome still in doubt.
        """
        assert progress.sending is not None
        versions, timestamp_us = progress.sending
        found = [
            await self._look_up(request, version + 1, timestamp_us)
            for request, version in zip(requests, versions, strict=True)
        ]
        kinds = {kind for kind, _ in found}
        if kinds == {_Found.THIS_ATTEMPT}:
            progress.sending = None
            return [Committed(version + 1, timestamp_us, None) for version in versions]
        if kinds == {_Found.EARLIER_CALL}:
            progress.sending = None
            for request, (_, record) in zip(requests, found, strict=True):
                assert record is not None
                _check_same_events(request, record)
            return [Committed(r.version, r.timestamp_us, r) for _, r in found if r is not None]
        if kinds == {_Found.EARLIER_CALL, _Found.NOT_STORED}:
            progress.sending = None
            missing = next(i for i, (kind, _) in enumerate(found) if kind is _Found.NOT_STORED)
            raise _partly_stored(requests[missing]) from cause
        raise _outcome_unknown(requests, cause, "it may or may not have landed") from cause

    async def _look_up(
        self, request: AppendRequest, version: int, timestamp_us: int
    ) -> tuple[_Found, ChangeSetRecord | None]:
        """Who wrote the change set at ``version``. A read that fails, whatever the error
        (the client may have been closed under us), is ``UNSETTLED``, never raised."""
        try:
            record = await self._backend.get_change_set(request.aggregate_id, version)
        except Exception:
            return _Found.UNSETTLED, None
        if record is None or record.commit_id != request.commit_id:
            return (_Found.UNSETTLED if request.guarded else _Found.NOT_STORED), record
        if record.timestamp_us != timestamp_us:
            return _Found.EARLIER_CALL, record
        return _Found.THIS_ATTEMPT, record


class _AppendAttempts:
    """The attempts of one append (or batch) for :func:`commit_with_retries`: one
    timestamp for all of them; versions (``ANY`` ones) and feed positions as the
    refusals report them."""

    def __init__(
        self,
        appender: Appender,
        requests: list[AppendRequest],
        versions: list[int],
        progress: AppendProgress,
    ) -> None:
        self._appender = appender
        self._requests = requests
        self._versions = versions
        self._progress = progress
        self._timestamp_us = now_us()
        self._plans: list[CommitPlan] = []
        self._feed: list[Write] = []

    @property
    def subject(self) -> str:
        return f"aggregate {self._requests[0].aggregate_id!r}"

    async def send(self) -> list[Committed]:
        """One transaction; a lost answer is settled by reading back (``_settle_unknown``)."""
        appender, requests, versions = self._appender, self._requests, self._versions
        appender.gate.check("the append's transaction was sent")
        self._plans = [
            plan_append(r, v, self._timestamp_us) for r, v in zip(requests, versions, strict=True)
        ]
        self._feed = await appender._feed.writes(requests, versions, self._timestamp_us)
        appender.counters.attempts += 1
        note_attempt()
        self._progress.sending = (versions, self._timestamp_us)
        try:
            await appender._backend.commit(combine(self._plans, self._feed))
        except CommitRejected:
            self._progress.sending = None  # refused: this attempt wrote nothing
            raise
        except StorageUnavailableError as exc:
            return await appender._settle_unknown(requests, self._progress, exc)
        except StorageError:
            self._progress.sending = None  # AWS answered with a refusal: nothing was written
            raise
        except Exception as exc:  # the request may have gone out: as if its answer was lost
            return await appender._settle_unknown(requests, self._progress, exc)
        appender._feed.committed(self._feed)
        appender.counters.commits += 1
        return [Committed(version + 1, self._timestamp_us, None) for version in versions]

    async def refused(
        self, rejected: CommitRejected, refusal: Refusal, *, last: bool
    ) -> Retry | Done[list[Committed]]:
        """Explained per append: an earlier landing, a lost race, a feed shard that
        moved on (retried shortly at the position it reported)."""
        requests = self._requests
        outcomes = explain_each(rejected, self._plans, requests)
        offset = sum(len(plan.writes) for plan in self._plans)
        feed_behind = self._appender._feed.correct(rejected, self._feed, offset)
        if any(isinstance(outcome, Landed) for outcome in outcomes):
            self._progress.landed = True
            return Done(await self._appender._landed(requests, outcomes))
        _raise_if_final(requests, outcomes, self._versions, last_attempt=last)
        if feed_behind and not any(outcomes):
            return Retry.SHORTLY
        if not last:
            self._versions = [
                _retry_version(o, v) for o, v in zip(outcomes, self._versions, strict=True)
            ]
        return Retry.BACKOFF

    def retrying(self, how: Retry) -> None:
        counters = self._appender.counters
        if how is Retry.SHORTLY:
            counters.feed_retries += 1
        else:
            counters.conflict_retries += 1


class _Found(enum.Enum):
    """What a read-back found at the version an attempt wrote."""

    THIS_ATTEMPT = "this attempt's change set (its commit id and timestamp)"
    EARLIER_CALL = "the commit id's change set, written by an earlier call"
    NOT_STORED = "not this commit id, and an explicit-version append stores it nowhere else"
    UNSETTLED = "the read failed, or a guarded append's commit id may be at another version"


def _check_same_events(request: AppendRequest, stored: ChangeSetRecord) -> None:
    """A retry of a landed commit id must carry the events stored with it: answering
    other events with the stored change set would tell the caller they were stored.
    Change sets written before digests were stored are not compared."""
    if not request.same_events_required or stored.digest is None:
        return
    if stored.digest != request.digest:
        raise IdempotencyMismatchError(request.aggregate_id, request.commit_id, stored.version)


def _partly_stored(request: AppendRequest) -> IntegrityError:
    return IntegrityError(
        f"aggregate {request.aggregate_id!r}: part of a batch with the same commit ids is "
        "stored and part is not"
    )


def _outcome_unknown(
    requests: list[AppendRequest], cause: Exception, what: str
) -> CommitOutcomeUnknownError:
    commit_ids = tuple(request.commit_id for request in requests)
    if isinstance(cause, StorageError):
        code, reason, operation = cause.code, cause.reason, cause.operation
    else:
        code, reason, operation = None, type(cause).__name__, "TransactWriteItems"
    return CommitOutcomeUnknownError(
        f"the append of commit {', '.join(map(repr, commit_ids))}: {what} ({cause}); retry "
        "with the same commit ids and expected versions, it lands at most once",
        code=code,
        reason=reason,
        operation=operation,
        commit_id=commit_ids[0],
        commit_ids=commit_ids,
    )


#: Attempts after a stale feed position (each refusal reports the current one).
FEED_RETRIES = 64


def _retry_version(outcome: Outcome | None, version: int) -> int:
    """An ANY append that lost a race tries again at the version it found (an append
    at an explicit version raised before this)."""
    return outcome.actual if isinstance(outcome, Conflict) else version


def _raise_if_final(
    requests: list[AppendRequest],
    outcomes: list[Outcome | None],
    versions: list[int],
    *,
    last_attempt: bool,
) -> None:
    """Raise for outcomes no retry can change; ``ANY`` conflicts are retried until the last."""
    conflicts: list[ConcurrencyError] = []
    for request, outcome, version in zip(requests, outcomes, versions, strict=True):
        if isinstance(outcome, Refused):
            raise StorageError(
                f"aggregate {request.aggregate_id!r}: transaction cancelled",
                code=",".join(outcome.codes),
                operation="TransactWriteItems",
            )
        if isinstance(outcome, TypeMismatch):
            raise AggregateTypeMismatchError(
                request.aggregate_id, outcome.stored_type, request.aggregate_type or ""
            )
        if isinstance(outcome, Conflict) and (not request.follows_head or last_attempt):
            conflicts.append(ConcurrencyError(request.aggregate_id, version, outcome.actual))
    if conflicts:
        raise ConcurrencyError.of(conflicts)
