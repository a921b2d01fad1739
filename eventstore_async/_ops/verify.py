"""The integrity check of a table (``EventStore.verify``, ``eventstore verify``).

It reads the storage records directly (one consistent Scan of the table, or a Query per
aggregate asked for) and checks what the write path promises:

- each aggregate's change sets run 1..n with no gap, and its head agrees with the last
  one (version, commit id) and with their event counts;
- every S3 pointer (change sets and snapshots) names an object that is there, with the
  recorded size and SHA-256;
- each feed shard's positions run 1..counter with no gap, and each entry names a stored
  change set (aggregate, version, commit id);
- snapshots sit at stored versions, and every snapshot the head lists is stored;
- commit markers (``ANY`` appends) name a stored change set with their commit id.

Objects under the table's keys (``{key_prefix}{table}/``) that nothing references are
listed (a crashed writer's,
or an append in flight: ``sweep_orphans`` removes the old ones); they are not problems.
A table written to while it is checked may show problems that are only the scan
meeting an append halfway; check a quiet table, or check again.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import anyio

from .._backends.protocol import Backend, MalformedItem, ObjectStore
from .._errors import StorageError
from .._models import VerifyProblem, VerifyReport
from .._records import (
    ChangeSetRecord,
    CheckpointRecord,
    FeedCounterRecord,
    FeedEntryRecord,
    FeedShapeRecord,
    HeadRecord,
    MarkerRecord,
    MemberRecord,
    ObjectPointer,
    Record,
    SnapshotRecord,
    ViewRecord,
)

__all__ = ["Progress", "verify"]

#: Called with a phase (``"items"``, ``"objects"``), how many more were checked, and
#: the phase's total when known.
Progress = Callable[[str, int, int | None], None]

_FETCHES = 8
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def _no_progress(phase: str, advance: int, total: int | None) -> None:
    return None


@dataclass(frozen=True, slots=True)
class _Pointed:
    """An item holding an S3 pointer."""

    aggregate_id: str
    version: int
    what: str  # "change set" or "snapshot <schema>"
    pointer: ObjectPointer


@dataclass(slots=True)
class _Table:
    """What the scan collected, per kind of item."""

    heads: dict[str, HeadRecord] = field(default_factory=dict)
    change_sets: dict[str, dict[int, ChangeSetRecord]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    snapshots: dict[str, list[SnapshotRecord]] = field(default_factory=lambda: defaultdict(list))
    markers: list[MarkerRecord] = field(default_factory=list)
    counters: dict[int, int] = field(default_factory=dict)
    entries: dict[int, dict[int, FeedEntryRecord]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    problems: list[VerifyProblem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, record: Record | MalformedItem) -> None:
        self.counts["items"] += 1
        if isinstance(record, HeadRecord):
            self.heads[record.aggregate_id] = record
        elif isinstance(record, ChangeSetRecord):
            self.change_sets[record.aggregate_id][record.version] = record
        elif isinstance(record, SnapshotRecord):
            self.snapshots[record.aggregate_id].append(record)
        elif isinstance(record, MarkerRecord):
            self.markers.append(record)
        elif isinstance(record, FeedCounterRecord):
            self.counters[record.shard] = record.position
        elif isinstance(record, FeedEntryRecord):
            self.entries[record.shard][record.position] = record
        elif isinstance(record, CheckpointRecord | ViewRecord):
            self.counts["checkpoints" if isinstance(record, CheckpointRecord) else "views"] += 1
        elif isinstance(record, FeedShapeRecord | MemberRecord):
            pass  # the feed's shard count; a consumer group's member (a heartbeat)
        else:
            self.problems.append(
                VerifyProblem(
                    kind="malformed",
                    where=f"item pk={record.partition!r} sk={record.sort_key}",
                    message=record.problem,
                )
            )


async def verify(
    backend: Backend,
    objects: ObjectStore | None,
    table_prefix: str,
    aggregate_ids: Iterable[str] = (),
    progress: Progress | None = None,
) -> VerifyReport:
    """Check the whole table (or only ``aggregate_ids``: no feed or orphan check then);
    objects under ``table_prefix`` that nothing references are listed.

    Raises:
        StorageError: a request failed (a missing object is a problem, not an error).
    """
    report = progress or _no_progress
    ids = list(aggregate_ids)
    table = await (_collect_some(backend, ids, report) if ids else _collect_all(backend, report))
    problems = list(table.problems)
    for aggregate_id in sorted(set(table.heads) | set(table.change_sets) | set(table.snapshots)):
        problems += _check_aggregate(aggregate_id, table)
    problems += _check_markers(table)
    if not ids:
        problems += _check_feed(table)
    pointed = _pointers(table)
    if pointed and objects is None:
        problems.append(
            VerifyProblem("object-missing", "table", f"{len(pointed)} S3 pointers, no bucket")
        )
    elif objects is not None:
        problems += await _check_objects(objects, pointed, report)
    unreferenced: tuple[str, ...] = ()
    if objects is not None and not ids:
        unreferenced = await _unreferenced(objects, table_prefix, pointed)
    counts = dict(table.counts)
    counts.update(
        aggregates=len(set(table.heads) | set(table.change_sets)),
        change_sets=sum(len(h) for h in table.change_sets.values()),
        snapshots=sum(len(s) for s in table.snapshots.values()),
        feed_entries=sum(len(e) for e in table.entries.values()),
        objects_checked=len(pointed),
    )
    return VerifyReport(problems=tuple(problems), unreferenced=unreferenced, counts=counts)


async def _collect_all(backend: Backend, progress: Progress) -> _Table:
    table = _Table()
    async for page in backend.scan():
        for record in page:
            table.add(record)
        progress("items", len(page), None)
    return table


async def _collect_some(backend: Backend, ids: list[str], progress: Progress) -> _Table:
    table = _Table()
    for aggregate_id in ids:
        async for page in backend.query(aggregate_id, 0, None, with_snapshots=True):
            for record in page:
                table.add(record)
            progress("items", len(page), None)
        if aggregate_id not in table.heads and aggregate_id not in table.change_sets:
            table.problems.append(VerifyProblem("not-found", aggregate_id, "no such aggregate"))
    return table


# -- aggregates ---------------------------------------------------------------------------


def _check_aggregate(aggregate_id: str, table: _Table) -> list[VerifyProblem]:
    history = table.change_sets.get(aggregate_id, {})
    head = table.heads.get(aggregate_id)
    problems = _check_gaps(aggregate_id, history)
    problems += _check_head(aggregate_id, head, history)
    problems += _check_snapshots(aggregate_id, head, history, table.snapshots.get(aggregate_id, []))
    return problems


def _check_gaps(aggregate_id: str, history: dict[int, ChangeSetRecord]) -> list[VerifyProblem]:
    last = max(history, default=0)
    return [
        VerifyProblem(
            "gap",
            f"{aggregate_id}@{version}",
            f"change set missing (stored versions run to {last})",
            aggregate_id=aggregate_id,
            version=version,
        )
        for version in range(1, last + 1)
        if version not in history
    ]


def _check_head(
    aggregate_id: str, head: HeadRecord | None, history: dict[int, ChangeSetRecord]
) -> list[VerifyProblem]:
    last = max(history, default=0)
    where = f"{aggregate_id}@{last}"

    def problem(message: str) -> VerifyProblem:
        return VerifyProblem("head", where, message, aggregate_id=aggregate_id, version=last)

    if head is None:
        return [problem(f"no head, but {len(history)} change sets")] if history else []
    if head.version != last:
        return [problem(f"head says version {head.version}, the last change set is {last}")]
    problems: list[VerifyProblem] = []
    stored = history.get(last)
    if stored is not None and stored.commit_id != head.last_commit_id:
        problems.append(
            problem(
                f"head names commit {head.last_commit_id!r}, "
                f"the change set holds {stored.commit_id!r}"
            )
        )
    counted = sum(cs.event_count for cs in history.values())
    if len(history) == last and counted != head.event_count:
        problems.append(
            problem(f"head counts {head.event_count} events, the change sets hold {counted}")
        )
    return problems


def _check_snapshots(
    aggregate_id: str,
    head: HeadRecord | None,
    history: dict[int, ChangeSetRecord],
    snapshots: list[SnapshotRecord],
) -> list[VerifyProblem]:
    stored = {(s.schema, s.version) for s in snapshots}
    problems = [
        VerifyProblem(
            "snapshot",
            f"{aggregate_id}@{snapshot.version}",
            f"snapshot {snapshot.schema!r} at a version that is not stored",
            aggregate_id=aggregate_id,
            version=snapshot.version,
        )
        for snapshot in snapshots
        if snapshot.version not in history
    ]
    listed = head.snapshots.items() if head is not None else ()
    for schema, versions in listed:
        problems += [
            VerifyProblem(
                "snapshot",
                f"{aggregate_id}@{version}",
                f"the head lists snapshot {schema!r}, which is not stored",
                aggregate_id=aggregate_id,
                version=version,
            )
            for version in versions
            if (schema, version) not in stored
        ]
    return problems


def _check_markers(table: _Table) -> list[VerifyProblem]:
    problems: list[VerifyProblem] = []
    for marker in table.markers:
        stored = table.change_sets.get(marker.aggregate_id, {}).get(marker.version)
        if stored is None or stored.commit_id != marker.commit_id:
            problems.append(
                VerifyProblem(
                    "marker",
                    f"{marker.aggregate_id}@{marker.version}",
                    f"commit marker {marker.commit_id!r} names a change set that is not stored",
                    aggregate_id=marker.aggregate_id,
                    version=marker.version,
                )
            )
    return problems


# -- the feed -----------------------------------------------------------------------------


def _check_feed(table: _Table) -> list[VerifyProblem]:
    problems: list[VerifyProblem] = []
    for shard in sorted(set(table.counters) | set(table.entries)):
        entries = table.entries.get(shard, {})
        counter = table.counters.get(shard, 0)
        where = f"feed shard {shard}"
        problems += [
            VerifyProblem("feed-gap", f"{where} position {p}", f"entry missing (counter {counter})")
            for p in range(1, counter + 1)
            if p not in entries
        ]
        problems += [
            VerifyProblem("feed-gap", f"{where} position {p}", f"entry past counter {counter}")
            for p in sorted(entries)
            if p > counter
        ]
        checked = (_entry_problem(where, e, table) for e in entries.values())
        problems += [p for p in checked if p is not None]
    return problems


def _entry_problem(where: str, entry: FeedEntryRecord, table: _Table) -> VerifyProblem | None:
    stored = table.change_sets.get(entry.aggregate_id, {}).get(entry.version)
    if stored is not None and stored.commit_id == entry.commit_id:
        return None
    return VerifyProblem(
        "feed-entry",
        f"{entry.aggregate_id}@{entry.version}",
        f"{where} position {entry.position} names this change set (commit "
        f"{entry.commit_id!r}), which is not stored",
        aggregate_id=entry.aggregate_id,
        version=entry.version,
    )


# -- objects ------------------------------------------------------------------------------


def _pointers(table: _Table) -> list[_Pointed]:
    pointed = [
        _Pointed(cs.aggregate_id, cs.version, "change set", cs.pointer)
        for history in table.change_sets.values()
        for cs in history.values()
        if cs.pointer is not None
    ]
    pointed += [
        _Pointed(s.aggregate_id, s.version, f"snapshot {s.schema!r}", s.pointer)
        for snapshots in table.snapshots.values()
        for s in snapshots
        if s.pointer is not None
    ]
    return pointed


async def _check_objects(
    objects: ObjectStore, pointed: list[_Pointed], progress: Progress
) -> list[VerifyProblem]:
    problems: list[VerifyProblem] = []
    limiter = anyio.CapacityLimiter(_FETCHES)

    async def check_one(item: _Pointed) -> None:
        async with limiter:
            problem = await _check_object(objects, item)
        if problem is not None:
            problems.append(problem)
        progress("objects", 1, len(pointed))

    async with anyio.create_task_group() as group:
        for item in pointed:
            group.start_soon(check_one, item)
    return sorted(problems, key=lambda p: (p.aggregate_id or "", p.version or 0, p.kind))


async def _check_object(objects: ObjectStore, item: _Pointed) -> VerifyProblem | None:
    digest = hashlib.sha256()
    size = 0
    key = item.pointer.key

    def problem(kind: str, message: str) -> VerifyProblem:
        where = f"{item.aggregate_id}@{item.version}"
        return VerifyProblem(
            kind,
            where,
            f"{item.what}: {message}",
            aggregate_id=item.aggregate_id,
            version=item.version,
        )

    try:
        async for chunk in objects.get(key):
            digest.update(chunk)
            size += len(chunk)
    except StorageError as exc:
        if exc.code in _MISSING_CODES:
            return problem("object-missing", f"object {key!r} is missing")
        raise
    if size != item.pointer.size:
        return problem(
            "object-size", f"object {key!r} is {size} bytes, the pointer says {item.pointer.size}"
        )
    if digest.hexdigest() != item.pointer.sha256:
        return problem("object-hash", f"object {key!r} does not match its SHA-256")
    return None


async def _unreferenced(
    objects: ObjectStore, table_prefix: str, pointed: list[_Pointed]
) -> tuple[str, ...]:
    referenced = {item.pointer.key for item in pointed}
    return tuple(
        [info.key async for info in objects.list(table_prefix) if info.key not in referenced]
    )
