"""Append: send the plan, retry what may be retried, settle what is unknown.

One code path serves ``append`` and ``append_many``: a list of requests committed in
one ``TransactWriteItems``.

- A refused transaction is explained from its cancellation reasons: a retry of an
  append that already landed returns the stored change sets; a lost race raises
  :class:`ConcurrencyError` (``ANY`` appends try again at the version found).
- ``TransactionConflict`` (another transaction in flight) is retried with bounded
  full-jitter backoff.
- A request that fails in transport after botocore's retries has an unknown
  outcome: the first change set it would have written is read back (the transaction
  is atomic, so one tells for all); if it is not there :class:`CommitOutcomeUnknownError`
  tells the caller to retry with the same commit ids.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from ._backend import Backend
from ._config import StoreConfig
from ._errors import (
    AggregateTypeMismatchError,
    CommitOutcomeUnknownError,
    ConcurrencyError,
    IntegrityError,
    StorageError,
    StorageUnavailableError,
)
from ._feed import FeedPositions
from ._models import AnyVersion
from ._plan import (
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
from ._records import ChangeSetRecord, CommitRejected
from ._timeutil import now_us

__all__ = ["AppendCounters", "Appender", "Committed", "full_jitter"]


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): uniform in [0, min(cap, base*2^n)]."""
    return random.uniform(0.0, min(cap, base * 2**attempt))


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
class _Progress:
    """The transaction in flight, if any: (versions, timestamp) of the attempt."""

    sending: tuple[list[int], int] | None = None


class Appender:
    def __init__(self, backend: Backend, config: StoreConfig) -> None:
        self._backend = backend
        self._retries = config.conflict_retries
        self._backoff = (config.backoff_base, config.backoff_max)
        self._deadline = config.append_deadline_seconds
        self._feed = FeedPositions(backend, config.feed_shards)
        self.counters = AppendCounters()

    async def append(
        self, requests: list[AppendRequest], expected: Sequence[int | AnyVersion]
    ) -> list[Committed]:
        """Commit every request atomically (one transaction), within the deadline."""
        progress = _Progress()
        with anyio.move_on_after(self._deadline):
            versions = await self._start_versions(requests, expected)
            async with self._feed.turns(requests):
                return await self._commit(requests, versions, progress)
        return await self._past_deadline(requests, progress)

    async def _past_deadline(
        self, requests: list[AppendRequest], progress: _Progress
    ) -> list[Committed]:
        """The deadline passed. With a transaction in flight the outcome is unknown
        (settled by a read if possible); otherwise nothing was written."""
        timeout = StorageUnavailableError(
            f"aggregate {requests[0].aggregate_id!r}: no commit within the append deadline "
            f"({self._deadline:g} s)",
            code="AppendDeadline",
            operation="TransactWriteItems",
        )
        if progress.sending is None:
            raise timeout
        versions, timestamp_us = progress.sending
        return await self._settle_unknown(requests, versions, timestamp_us, timeout)

    async def _commit(
        self, requests: list[AppendRequest], versions: list[int], progress: _Progress
    ) -> list[Committed]:
        timestamp_us = now_us()
        attempt = feed_retries = 0
        while True:
            plans = [
                plan_append(r, v, timestamp_us) for r, v in zip(requests, versions, strict=True)
            ]
            feed = await self._feed.writes(requests, versions, timestamp_us)
            self.counters.attempts += 1
            progress.sending = (versions, timestamp_us)
            try:
                await self._backend.commit(combine(plans, feed))
                self._feed.committed(feed)
                self.counters.commits += 1
                return [Committed(version + 1, timestamp_us, None) for version in versions]
            except CommitRejected as rejected:
                progress.sending = None  # refused: this attempt wrote nothing
                outcomes = explain_each(rejected, plans, requests)
                offset = sum(len(plan.writes) for plan in plans)
                feed_behind = self._feed.correct(rejected, feed, offset)
            except StorageUnavailableError as exc:
                return await self._settle_unknown(requests, versions, timestamp_us, exc)
            if any(isinstance(outcome, Landed) for outcome in outcomes):
                return await self._landed(requests, outcomes)
            last = attempt == self._retries
            _raise_if_final(requests, outcomes, versions, last_attempt=last)
            if feed_behind and not any(outcomes) and feed_retries < FEED_RETRIES:
                # Only the shard moved on: retry after a short jitter at the position it reported.
                feed_retries += 1
                self.counters.feed_retries += 1
                await anyio.sleep(full_jitter(0, *self._backoff))
                continue
            if last:
                raise _still_busy(requests, attempt)
            versions = [_retry_version(o, v) for o, v in zip(outcomes, versions, strict=True)]
            self.counters.conflict_retries += 1
            await anyio.sleep(full_jitter(attempt, *self._backoff))
            attempt += 1

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
                raise IntegrityError(
                    f"aggregate {request.aggregate_id!r}: part of a batch with the same commit "
                    "ids is stored and part is not"
                )
            record = outcome.record or await self._read_back(request, outcome.version, requests)
            if record is None or record.commit_id != request.commit_id:
                raise IntegrityError(
                    f"aggregate {request.aggregate_id!r}: commit {request.commit_id!r} is "
                    f"recorded at version {outcome.version} but that change set is missing"
                )
            committed.append(Committed(record.version, record.timestamp_us, record))
        return committed

    async def _read_back(
        self, request: AppendRequest, version: int, requests: list[AppendRequest]
    ) -> ChangeSetRecord | None:
        """The landed change set; if it cannot be read now, the caller is told to retry."""
        try:
            return await self._backend.get_change_set(request.aggregate_id, version)
        except StorageError as exc:
            raise _outcome_unknown(requests, exc, "it landed but could not be read back") from exc

    async def _settle_unknown(
        self,
        requests: list[AppendRequest],
        versions: list[int],
        timestamp_us: int,
        exc: StorageUnavailableError,
    ) -> list[Committed]:
        first = requests[0]
        try:
            record = await self._backend.get_change_set(first.aggregate_id, versions[0] + 1)
        except StorageError:
            record = None
        if record is not None and record.commit_id == first.commit_id:
            return [Committed(version + 1, timestamp_us, None) for version in versions]
        raise _outcome_unknown(requests, exc, "it may or may not have landed") from exc


def _outcome_unknown(
    requests: list[AppendRequest], exc: StorageError, what: str
) -> CommitOutcomeUnknownError:
    commit_ids = tuple(request.commit_id for request in requests)
    return CommitOutcomeUnknownError(
        f"the append of commit {', '.join(map(repr, commit_ids))}: {what} ({exc}); retry "
        "with the same commit ids and expected versions, it lands at most once",
        code=exc.code,
        operation=exc.operation,
        commit_id=commit_ids[0],
        commit_ids=commit_ids,
    )


#: Attempts after a stale feed position (each refusal reports the current one).
FEED_RETRIES = 64


def _still_busy(requests: list[AppendRequest], attempt: int) -> StorageUnavailableError:
    return StorageUnavailableError(
        f"aggregate {requests[0].aggregate_id!r}: transaction still conflicting after "
        f"{attempt + 1} attempts",
        code="TransactionConflict",
        operation="TransactWriteItems",
    )


def _retry_version(outcome: Outcome | None, version: int) -> int:
    """An ANY append that lost a race tries again at the version it found."""
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
        if isinstance(outcome, Conflict) and (not request.guarded or last_attempt):
            conflicts.append(ConcurrencyError(request.aggregate_id, version, outcome.actual))
    if conflicts:
        raise ConcurrencyError.of(conflicts)
