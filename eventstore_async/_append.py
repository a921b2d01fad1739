"""Append: send the plan, retry what may be retried, settle what is unknown.

- A refused transaction is explained from its cancellation reasons: a retry of an
  append that already landed returns the stored change set; a lost race raises
  :class:`ConcurrencyError` (or, for ``ANY``, tries again at the actual version).
- ``TransactionConflict`` (another transaction in flight) is retried with bounded
  full-jitter backoff.
- A request that fails in transport after botocore's retries has an unknown
  outcome: the change set it would have written is read back; if it is not there
  :class:`CommitOutcomeUnknownError` tells the caller to retry with the same commit id.
"""

from __future__ import annotations

import random
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
from ._models import AnyVersion
from ._plan import (
    AppendRequest,
    Conflict,
    Landed,
    Outcome,
    Refused,
    TypeMismatch,
    explain,
    plan_append,
)
from ._records import ChangeSetRecord, CommitRejected
from ._timeutil import now_us

__all__ = ["Appender", "Committed", "full_jitter"]


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): uniform in [0, min(cap, base*2^n)]."""
    return random.uniform(0.0, min(cap, base * 2**attempt))


@dataclass(frozen=True, slots=True)
class Committed:
    """Where the request's commit id is stored. ``earlier`` is the stored change set
    when an earlier attempt with this commit id had landed (this one wrote nothing)."""

    version: int
    timestamp_us: int
    earlier: ChangeSetRecord | None


class Appender:
    def __init__(self, backend: Backend, config: StoreConfig) -> None:
        self._backend = backend
        self._retries = config.conflict_retries
        self._backoff = (config.backoff_base, config.backoff_max)

    async def append(self, request: AppendRequest, expected: int | AnyVersion) -> Committed:
        flexible = isinstance(expected, AnyVersion)
        version = await self._current_version(request) if flexible else expected
        assert isinstance(version, int)
        timestamp_us = now_us()
        for attempt in range(self._retries + 1):
            plan = plan_append(request, version, timestamp_us)
            try:
                await self._backend.commit(plan)
                return Committed(version + 1, timestamp_us, None)
            except CommitRejected as rejected:
                outcome = explain(rejected, plan, request)
            except StorageUnavailableError as exc:
                return await self._settle_unknown(request, version + 1, exc)
            if isinstance(outcome, Landed):
                return await self._landed(request, outcome)
            _raise_if_final(request, outcome, version, last_attempt=attempt == self._retries)
            if isinstance(outcome, Conflict):  # ANY: try again at the version found
                version = outcome.actual
            await anyio.sleep(full_jitter(attempt, *self._backoff))
        raise StorageUnavailableError(
            f"aggregate {request.aggregate_id!r}: transaction still conflicting after "
            f"{self._retries + 1} attempts",
            code="TransactionConflict",
            operation="TransactWriteItems",
        )

    async def _current_version(self, request: AppendRequest) -> int:
        head = await self._backend.get_head(request.aggregate_id)
        return head.version if head is not None else 0

    async def _landed(self, request: AppendRequest, landed: Landed) -> Committed:
        record = landed.record
        if record is None:
            record = await self._backend.get_change_set(request.aggregate_id, landed.version)
        if record is None or record.commit_id != request.commit_id:
            raise IntegrityError(
                f"aggregate {request.aggregate_id!r}: commit {request.commit_id!r} is recorded "
                f"at version {landed.version} but that change set is missing"
            )
        return Committed(record.version, record.timestamp_us, record)

    async def _settle_unknown(
        self, request: AppendRequest, version: int, exc: StorageUnavailableError
    ) -> Committed:
        try:
            record = await self._backend.get_change_set(request.aggregate_id, version)
        except StorageError:
            record = None
        if record is not None and record.commit_id == request.commit_id:
            return Committed(record.version, record.timestamp_us, record)
        raise CommitOutcomeUnknownError(
            f"the append of commit {request.commit_id!r} may or may not have landed ({exc}); "
            "retry with the same commit_id and expected_version, it lands at most once",
            code=exc.code,
            operation=exc.operation,
            commit_id=request.commit_id,
        ) from exc


def _raise_if_final(
    request: AppendRequest, outcome: Outcome, version: int, *, last_attempt: bool
) -> None:
    """Raise for outcomes no retry can change; ``ANY`` conflicts are retried until the last."""
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
        raise ConcurrencyError(request.aggregate_id, version, outcome.actual)
