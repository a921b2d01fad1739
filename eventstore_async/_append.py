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

import anyio

from ._backend import Backend
from ._codec import EventCodec
from ._config import StoreConfig
from ._decode import to_change_set
from ._errors import (
    AggregateTypeMismatchError,
    CommitOutcomeUnknownError,
    ConcurrencyError,
    IntegrityError,
    StorageError,
    StorageUnavailableError,
)
from ._models import AnyVersion, ChangeSet
from ._plan import AppendRequest, Conflict, Landed, Refused, TypeMismatch, explain, plan_append
from ._records import CommitRejected
from ._timeutil import now_us

__all__ = ["Appender", "full_jitter"]


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): uniform in [0, min(cap, base*2^n)]."""
    return random.uniform(0.0, min(cap, base * 2**attempt))


class Appender:
    def __init__(self, backend: Backend, codec: EventCodec, config: StoreConfig) -> None:
        self._backend = backend
        self._codec = codec
        self._retries = config.conflict_retries
        self._backoff = (config.backoff_base, config.backoff_max)

    async def append(self, request: AppendRequest, expected: int | AnyVersion) -> ChangeSet:
        flexible = isinstance(expected, AnyVersion)
        version = await self._current_version(request.aggregate_id) if flexible else expected
        assert isinstance(version, int)
        timestamp_us = now_us()
        for attempt in range(self._retries + 1):
            plan = plan_append(request, version, timestamp_us)
            try:
                await self._backend.commit(plan)
                return request.change_set(version + 1, timestamp_us)
            except CommitRejected as rejected:
                outcome = explain(rejected, plan, request)
            except StorageUnavailableError as exc:
                return await self._settle_unknown(request, version + 1, exc)
            if isinstance(outcome, Landed):
                return await self._stored(request, outcome)
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
            if isinstance(outcome, Conflict):
                if not flexible or attempt == self._retries:
                    raise ConcurrencyError(request.aggregate_id, version, outcome.actual)
                version = outcome.actual
            await self._sleep(attempt)
        raise self._still_busy(request)

    async def _current_version(self, aggregate_id: str) -> int:
        head = await self._backend.get_head(aggregate_id)
        return head.version if head is not None else 0

    async def _stored(self, request: AppendRequest, landed: Landed) -> ChangeSet:
        record = landed.record
        if record is None:
            record = await self._backend.get_change_set(request.aggregate_id, landed.version)
        if record is None or record.commit_id != request.commit_id:
            raise IntegrityError(
                f"aggregate {request.aggregate_id!r}: commit {request.commit_id!r} is recorded "
                f"at version {landed.version} but that change set is missing"
            )
        return to_change_set(self._codec, record)

    async def _settle_unknown(
        self, request: AppendRequest, version: int, exc: StorageUnavailableError
    ) -> ChangeSet:
        try:
            record = await self._backend.get_change_set(request.aggregate_id, version)
        except StorageError:
            record = None
        if record is not None and record.commit_id == request.commit_id:
            return to_change_set(self._codec, record)
        raise CommitOutcomeUnknownError(
            f"the append of commit {request.commit_id!r} may or may not have landed ({exc}); "
            "retry with the same commit_id and expected_version, it lands at most once",
            code=exc.code,
            operation=exc.operation,
            commit_id=request.commit_id,
        ) from exc

    async def _sleep(self, attempt: int) -> None:
        await anyio.sleep(full_jitter(attempt, *self._backoff))

    def _still_busy(self, request: AppendRequest) -> StorageUnavailableError:
        return StorageUnavailableError(
            f"aggregate {request.aggregate_id!r}: transaction still conflicting after "
            f"{self._retries + 1} attempts",
            code="TransactionConflict",
            operation="TransactWriteItems",
        )
