"""One writer process of the chaos run; it uses the public API only.

Usage: ``python -m tests.chaos.writer SPEC_JSON OUT_JSON``

The spec (written by :mod:`tests.chaos.run`) says where the store is (the fault proxy),
which shards (table + bucket) and aggregates to write to, how many tasks and appends.
Each task appends to randomly chosen shared aggregates: mostly with the version it just
read (``expected_version=head.version``), sometimes with ``ANY``, always with an explicit
commit id. The ledger written to OUT_JSON has one entry per attempted append:

- ``acked``: the append returned a change set (``version``);
- ``conflict``: ``ConcurrencyError``;
- ``unknown``: ``CommitOutcomeUnknownError``; it is retried (same commit id, same
  expected version, as the library documents) unless abandoned, and ``resolution``
  says how that ended: ``landed`` (acknowledged at ``version``), ``not_landed``
  (``ConcurrencyError``), ``refused`` (a non-transient error: the documented way to
  settle the outcome failed), ``unresolved`` (still unknown or unavailable after the
  retries, ``final_error``), or ``abandoned`` (never retried);
- ``error``: any other error, by class and code (``error``).

Among the appends, a share of ``snapshot_ratio`` of the steps saves a snapshot of an
aggregate at its version instead (some big enough to go to S3), then loads from it; the
outcomes are counted under ``snapshots``. A saved snapshot that does not load
(``IntegrityError``) is a violation.

Anything the library must never do (a foreign exception escaping, an acknowledged change
set that is not the one asked for) is listed under ``violations``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from eventstore_async import (
    ANY,
    ChangeSet,
    CommitOutcomeUnknownError,
    ConcurrencyError,
    EventStore,
    EventStoreError,
    IntegrityError,
    StorageError,
    StorageUnavailableError,
    StoreConfig,
)

AGGREGATE_TYPE = "Chaos"
HEAD_READ_TRIES = 4


@dataclass(slots=True)
class Spec:
    endpoint_url: str
    shards: list[dict[str, str]]  # [{"table": ..., "bucket": ...}]
    aggregates: list[str]  # names inside every shard
    process: int
    tasks: int
    attempts: int  # per task
    seed: int
    any_ratio: float = 0.15
    metadata_ratio: float = 0.3
    unknown_retries: int = 6
    abandon_ratio: float = 0.2
    read_timeout: float = 1.0
    connect_timeout: float = 1.0
    max_attempts: int = 4
    conflict_retries: int = 8
    region_name: str = "us-east-1"
    #: share of appends whose events are big enough to be offloaded to S3
    offload_ratio: float = 0.0
    offload_threshold_bytes: int = 2048
    max_upload_seconds: float = 10.0
    append_deadline_seconds: float = 60.0
    #: share of steps that save a snapshot instead of appending
    snapshot_ratio: float = 0.0

    def config(self, shard: dict[str, str]) -> StoreConfig:
        return StoreConfig(
            table_name=shard["table"],
            bucket_name=shard["bucket"],
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id="chaos",
            aws_secret_access_key="chaos-secret",
            read_timeout=self.read_timeout,
            connect_timeout=self.connect_timeout,
            max_attempts=self.max_attempts,
            conflict_retries=self.conflict_retries,
            max_pool_connections=max(4, self.tasks + 2),
            offload_threshold_bytes=self.offload_threshold_bytes,
            max_upload_seconds=self.max_upload_seconds,
            append_deadline_seconds=self.append_deadline_seconds,
        )


@dataclass(slots=True)
class Ledger:
    operations: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    head_failures: Counter[str] = field(default_factory=Counter)
    unknown_retries: int = 0
    snapshots: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "violations": self.violations,
            "head_failures": dict(self.head_failures),
            "unknown_retries": self.unknown_retries,
            "snapshots": dict(self.snapshots),
        }


def error_name(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}:{code}" if code else type(exc).__name__


class Writer:
    """One task's appends; every outcome goes to the shared ledger."""

    def __init__(self, spec: Spec, stores: list[EventStore], ledger: Ledger, task: int) -> None:
        self.spec = spec
        self.stores = stores
        self.ledger = ledger
        self.name = f"p{spec.process}t{task}"
        self.rng = random.Random(f"{spec.seed}:{self.name}")
        self.known: dict[tuple[int, str], int] = {}  # last version seen per aggregate

    async def run(self) -> None:
        for attempt in range(self.spec.attempts):
            await self.one(attempt)

    async def one(self, attempt: int) -> None:
        shard = self.rng.randrange(len(self.stores))
        aggregate = self.rng.choice(self.spec.aggregates)
        store = self.stores[shard]
        if self.rng.random() < self.spec.snapshot_ratio:
            await self.snapshot(store, shard, aggregate, attempt)
            return
        use_any = self.rng.random() < self.spec.any_ratio
        expected: Any = ANY if use_any else await self.read_version(store, shard, aggregate)
        events: list[dict[str, Any]] = [
            {"writer": self.name, "n": attempt, "k": k} for k in range(self.rng.randint(1, 3))
        ]
        offloaded = self.rng.random() < self.spec.offload_ratio
        if offloaded:  # over the threshold: the payload goes to S3
            padding = self.spec.offload_threshold_bytes // len(events) + 64
            for event in events:
                event["pad"] = self.rng.randbytes(padding // 2).hex()
        metadata = {"writer": self.name} if self.rng.random() < self.spec.metadata_ratio else None
        op: dict[str, Any] = {
            "commit_id": f"{self.name}n{attempt}",
            "shard": shard,
            "aggregate": aggregate,
            "expected": "ANY" if use_any else expected,
            "events": len(events),
            "offloaded": offloaded,
            "outcome": None,
            "version": None,
            "error": None,
            "retries": 0,
            "resolution": None,
            "final_error": None,
        }
        self.ledger.operations.append(op)

        async def append() -> ChangeSet:
            return await store.append(
                aggregate,
                events,
                expected_version=expected,
                aggregate_type=AGGREGATE_TYPE,
                metadata=metadata,
                commit_id=op["commit_id"],
            )

        try:
            self.acked(op, await append())
        except ConcurrencyError as conflict:
            self.conflicted(op, conflict)
        except CommitOutcomeUnknownError as unknown:
            op["outcome"] = "unknown"
            op["error"] = error_name(unknown)
            self.check_unknown(op, unknown)
            await self.resolve(op, append)
        except EventStoreError as exc:
            op["outcome"] = "error"
            op["error"] = error_name(exc)
        except Exception as exc:  # a foreign exception escaped the library
            op["outcome"] = "error"
            op["error"] = error_name(exc)
            self.ledger.violations.append(f"{op['commit_id']}: foreign exception {exc!r}")

    async def snapshot(self, store: EventStore, shard: int, aggregate: str, attempt: int) -> None:
        """Save a snapshot at the aggregate's version (sometimes offloaded), then load
        from it: a saved snapshot must load."""
        version = await self.read_version(store, shard, aggregate)
        if version == 0:
            self.ledger.snapshots["no_aggregate"] += 1
            return
        state: dict[str, Any] = {"writer": self.name, "n": attempt, "version": version}
        if self.rng.random() < self.spec.offload_ratio * 4:
            state["pad"] = self.rng.randbytes(self.spec.offload_threshold_bytes).hex()
        try:
            saved = await store.save_snapshot(aggregate, version, state, schema="chaos")
        except EventStoreError as exc:
            self.ledger.snapshots[f"save {error_name(exc)}"] += 1
            return
        except Exception as exc:
            self.ledger.violations.append(f"save_snapshot({aggregate!r}): foreign {exc!r}")
            return
        self.ledger.snapshots["saved" if saved is not None else "not_needed"] += 1
        if saved is not None:
            await self.load_snapshot(store, shard, aggregate)

    async def load_snapshot(self, store: EventStore, shard: int, aggregate: str) -> None:
        try:
            await store.load(aggregate, snapshot_schema="chaos")
        except IntegrityError as exc:
            self.ledger.violations.append(
                f"shard {shard} {aggregate!r}: load after a snapshot save: {exc!r}"
            )
        except EventStoreError as exc:
            self.ledger.snapshots[f"load {error_name(exc)}"] += 1
        except Exception as exc:
            self.ledger.violations.append(f"load({aggregate!r}): foreign exception {exc!r}")

    async def read_version(self, store: EventStore, shard: int, aggregate: str) -> int:
        """The aggregate's version now; after repeated failures, the last one seen."""
        for _ in range(HEAD_READ_TRIES):
            try:
                head = await store.head(aggregate)
            except StorageError as exc:
                self.ledger.head_failures[error_name(exc)] += 1
                continue
            except Exception as exc:
                self.ledger.violations.append(f"head({aggregate!r}): foreign exception {exc!r}")
                continue
            version = head.version if head is not None else 0
            self.known[shard, aggregate] = version
            return version
        return self.known.get((shard, aggregate), 0)

    def acked(self, op: dict[str, Any], change_set: ChangeSet) -> None:
        op["outcome"] = "acked"
        op["version"] = change_set.version
        self.check_change_set(op, change_set)

    def conflicted(self, op: dict[str, Any], conflict: ConcurrencyError) -> None:
        op["outcome"] = "conflict"
        op["error"] = f"expected {conflict.expected}, actual {conflict.actual}"
        if conflict.expected == conflict.actual:
            self.ledger.violations.append(f"{op['commit_id']}: conflict with expected == actual")

    def check_unknown(self, op: dict[str, Any], unknown: CommitOutcomeUnknownError) -> None:
        if unknown.commit_id != op["commit_id"]:
            self.ledger.violations.append(
                f"{op['commit_id']}: CommitOutcomeUnknownError names commit {unknown.commit_id!r}"
            )

    def check_change_set(self, op: dict[str, Any], change_set: ChangeSet) -> None:
        problems = []
        if change_set.commit_id != op["commit_id"]:
            problems.append(f"commit id {change_set.commit_id!r}")
        if change_set.aggregate_id != op["aggregate"]:
            problems.append(f"aggregate {change_set.aggregate_id!r}")
        if op["expected"] != "ANY" and change_set.version != op["expected"] + 1:
            problems.append(f"version {change_set.version} for expected {op['expected']}")
        if change_set.event_count != op["events"]:
            problems.append(f"{change_set.event_count} events instead of {op['events']}")
        if problems:
            self.ledger.violations.append(f"{op['commit_id']}: acknowledged with {problems}")

    async def resolve(self, op: dict[str, Any], append: Any) -> None:
        """Retry an unknown append with the same commit id and expected version."""
        if self.rng.random() < self.spec.abandon_ratio:
            op["resolution"] = "abandoned"
            return
        for _ in range(self.spec.unknown_retries):
            await anyio.sleep(self.rng.uniform(0.05, 0.3))
            op["retries"] += 1
            self.ledger.unknown_retries += 1
            try:
                change_set = await append()
            except ConcurrencyError as conflict:
                op["resolution"] = "not_landed"
                op["final_error"] = f"expected {conflict.expected}, actual {conflict.actual}"
                return
            except StorageUnavailableError as exc:  # unknown again, or transient: retry
                op["final_error"] = error_name(exc)
                continue
            except EventStoreError as exc:  # the store answered, but not with an outcome
                op["resolution"] = "refused"
                op["final_error"] = error_name(exc)
                return
            except Exception as exc:
                op["resolution"] = "unresolved"
                op["final_error"] = error_name(exc)
                self.ledger.violations.append(f"{op['commit_id']}: foreign exception {exc!r}")
                return
            op["resolution"] = "landed"
            op["version"] = change_set.version
            op["final_error"] = None
            self.check_change_set(op, change_set)
            return
        op["resolution"] = "unresolved"


async def run(spec: Spec) -> Ledger:
    ledger = Ledger()
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(EventStore(spec.config(shard))) for shard in spec.shards
        ]
        async with anyio.create_task_group() as group:
            for task in range(spec.tasks):
                group.start_soon(Writer(spec, stores, ledger, task).run)
    return ledger


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    spec = Spec(**json.loads(Path(spec_path).read_text()))
    started = time.monotonic()
    ledger = anyio.run(run, spec)
    result = ledger.to_json()
    result["elapsed"] = time.monotonic() - started
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
