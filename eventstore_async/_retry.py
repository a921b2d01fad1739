"""Commit retries, written once: what a refused transaction means, and how often to try.

Every write the library makes is one ``TransactWriteItems``: an append (or a batch),
a snapshot save, a lease or checkpoint write, a projection. DynamoDB cancels it with a
reason per item; :func:`classify` sorts a refusal by those codes, for every caller:

- :attr:`Refusal.BUSY`: only ``TransactionConflict`` or throttling (another
  transaction was in flight on an item, or an item was throttled). Nothing was
  written and a new attempt may pass: retried after a full-jitter wait, at most
  ``conflict_retries`` times.
- :attr:`Refusal.CONDITION`: a condition failed (``ConditionalCheckFailed``). What it
  means is the caller's: an append lost a race or finds its own earlier landing, a
  snapshot save finds the head's ``snap_seq`` moved (another save, or its own landed
  attempt), a checkpoint finds the lease gone.
- :attr:`Refusal.FINAL`: any other reason (``ValidationError``,
  ``ItemCollectionSizeLimitExceeded``...): no retry mends it, :class:`StorageError`
  with the codes, at once.

:func:`commit_with_retries` is the one loop: it sends attempts, raises final refusals,
asks the caller what a busy or conditional refusal means (:class:`CommitAttempts`),
waits and retries within the bound. A failure in transport (the answer lost, the
request maybe applied) is not a refusal: each caller settles it in ``send`` by reading
back what the attempt would have written.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import anyio

from ._errors import StorageError, StorageUnavailableError
from ._records import TRANSIENT_CODES, CommitRejected

if TYPE_CHECKING:
    from ._config import StoreConfig

__all__ = [
    "CommitAttempts",
    "ConflictBackoff",
    "Done",
    "Refusal",
    "Retry",
    "cancelled",
    "classify",
    "commit_with_retries",
    "full_jitter",
    "some_transient",
    "still_cancelled",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): uniform in [0, min(cap, base*2^n)]."""
    return random.uniform(0.0, min(cap, base * 2**attempt))


@dataclass(frozen=True, slots=True)
class ConflictBackoff:
    """How a busy transaction is retried: at most ``retries`` more attempts, full-jitter
    waits from ``base`` doubling to ``cap`` (StoreConfig's ``conflict_retries``,
    ``backoff_base``, ``backoff_max``). Appends, snapshot saves and checkpoints share it."""

    retries: int
    base: float
    cap: float

    @classmethod
    def of(cls, config: StoreConfig) -> ConflictBackoff:
        return cls(config.conflict_retries, config.backoff_base, config.backoff_max)

    def seconds(self, attempt: int) -> float:
        """Full-jitter wait before retry ``attempt`` (0-based)."""
        return full_jitter(attempt, self.base, self.cap)


class Refusal(enum.Enum):
    """What a cancelled transaction's reasons say, before the caller reads the items."""

    BUSY = "only TransactionConflict or throttling: nothing written, a retry may pass"
    CONDITION = "a condition failed: the caller reads the items that stood in the way"
    FINAL = "a reason no retry mends"


def classify(rejected: CommitRejected) -> Refusal:
    """Sort a refusal by its cancellation codes (the only place that does)."""
    codes = rejected.codes()
    if "ConditionalCheckFailed" in codes:
        return Refusal.CONDITION
    if codes and codes <= TRANSIENT_CODES:
        return Refusal.BUSY
    return Refusal.FINAL


def some_transient(rejected: CommitRejected) -> bool:
    """A busy reason was among the codes: a condition that depends on another item's
    may not have been evaluated, so asking again may answer differently."""
    return bool(rejected.codes() & TRANSIENT_CODES)


class Retry(enum.Enum):
    """How the caller wants a refused attempt tried again."""

    BACKOFF = "counted against conflict_retries, after a full-jitter wait"
    SHORTLY = "counted against the loop's short_retries, after at most backoff_base"


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """The refusal settled the operation (say, it showed an earlier attempt landed)."""

    value: T


class CommitAttempts(Protocol[T]):
    """One operation's attempts, as :func:`commit_with_retries` drives them."""

    @property
    def subject(self) -> str:
        """What the operation is about, for messages ("aggregate 'a'")."""
        ...

    async def send(self) -> T:
        """Build and send one attempt; its result once it is stored.

        Raises:
            CommitRejected: the transaction was cancelled (nothing was written).
        """
        ...

    async def refused(
        self, rejected: CommitRejected, refusal: Refusal, *, last: bool
    ) -> Retry | Done[T]:
        """What a busy or conditional refusal means: retry, done, or raise. ``last``:
        no counted retry is left."""
        ...

    def retrying(self, how: Retry) -> None:
        """Told before each retry's wait (for counters)."""
        ...


async def commit_with_retries(
    attempts: CommitAttempts[T], backoff: ConflictBackoff, *, short_retries: int = 0
) -> T:
    """Send attempts until one is stored, a refusal settles or ends the operation, or
    the retries run out.

    Raises:
        StorageError: a refusal no retry mends (:attr:`Refusal.FINAL`).
        StorageUnavailableError: still refused after ``backoff.retries`` retries.
    """
    counted = short = 0
    while True:
        last = counted == backoff.retries
        try:
            return await attempts.send()
        except CommitRejected as rejected:
            refusal = classify(rejected)
            if refusal is Refusal.FINAL:
                raise cancelled(attempts.subject, rejected) from None
            decision = await attempts.refused(rejected, refusal, last=last)
            codes = rejected.codes()
        if isinstance(decision, Done):
            return decision.value
        if decision is Retry.SHORTLY and short < short_retries:
            short += 1
            attempts.retrying(Retry.SHORTLY)
            await anyio.sleep(backoff.seconds(0))
            continue
        if last:
            raise still_cancelled(attempts.subject, counted + 1, codes)
        attempts.retrying(Retry.BACKOFF)
        await anyio.sleep(backoff.seconds(counted))
        counted += 1


def cancelled(subject: str, rejected: CommitRejected) -> StorageError:
    """A refusal no retry mends, with its codes."""
    return StorageError(
        f"{subject}: transaction cancelled",
        code=",".join(sorted(rejected.codes())) or "TransactionCanceledException",
        operation="TransactWriteItems",
    )


def still_cancelled(subject: str, attempts: int, codes: set[str]) -> StorageUnavailableError:
    """Refused as busy (or by a condition the caller retries) after every attempt."""
    return StorageUnavailableError(
        f"{subject}: transaction still cancelled after {attempts} attempts, by other "
        "transactions on its items or by throttling; nothing was written: retry",
        code=",".join(sorted(codes)) or "TransactionConflict",
        operation="TransactWriteItems",
    )
