"""The subcommands that read: ``show``, ``tail``, ``verify``; and ``sweep``."""

from __future__ import annotations

from typing import Any

import click
import msgspec
from rich.progress import Progress, TaskID

from .._errors import InvalidInputError
from .._models import AggregateHead, ChangeSet, RawEvent, VerifyReport
from .._ops.feed import feed_ends, follow_feed
from .._records import FeedEntryRecord
from .._store import EventStore
from ._context import (
    EXIT_OK,
    EXIT_PROBLEMS,
    Output,
    Settings,
    common_options,
    parse_duration,
    run,
)

__all__ = ["show", "sweep", "tail", "verify"]


def _event(event: Any) -> dict[str, Any]:
    """An event as JSON: ``{"type": ..., "data": ...}`` (a plain mapping has no type)."""
    if isinstance(event, RawEvent):
        return {"type": event.type, "data": msgspec.to_builtins(event.data)}
    if isinstance(event, msgspec.Struct):
        return {"type": type(event).__name__, "data": msgspec.to_builtins(event)}
    return {"type": None, "data": msgspec.to_builtins(event)}


def _event_text(event: Any) -> str:
    shown = _event(event)
    body = msgspec.json.encode(shown["data"]).decode()
    return f"{shown['type']} {body}" if shown["type"] else body


def _head_text(head: AggregateHead) -> str:
    kind = f" (type {head.aggregate_type})" if head.aggregate_type else ""
    return (
        f"aggregate {head.aggregate_id}{kind}: version {head.version}, {head.event_count} "
        f"events, created {head.created_at:%Y-%m-%d %H:%M:%S}, updated "
        f"{head.updated_at:%Y-%m-%d %H:%M:%S}, last commit {head.last_commit_id}"
    )


def _change_set_record(change_set: ChangeSet) -> dict[str, Any]:
    return {
        "aggregate_id": change_set.aggregate_id,
        "version": change_set.version,
        "commit_id": change_set.commit_id,
        "timestamp": change_set.timestamp,
        "metadata": change_set.metadata,
        "events": [_event(e) for e in change_set.events],
    }


# -- show ---------------------------------------------------------------------------------


@click.command()
@common_options
@click.argument("aggregate_id")
@click.option("--from", "from_version", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--to", "to_version", type=click.IntRange(min=1), default=None, help="[default: last]"
)
@click.pass_obj
def show(settings: Settings, aggregate_id: str, from_version: int, to_version: int | None) -> None:
    """The aggregate's head and its change sets with their events."""

    async def body() -> int:
        async with settings.store() as store:
            history = await store.load(
                aggregate_id, from_version=from_version, to_version=to_version
            )
        _print_history(settings.out, history.head, history.change_sets)
        return EXIT_OK

    run(settings, body)


def _print_history(out: Output, head: AggregateHead, change_sets: tuple[ChangeSet, ...]) -> None:
    if out.as_json:
        out.record(head=head)
        for change_set in change_sets:
            out.record(change_set=_change_set_record(change_set))
        return
    out.say(_head_text(head))
    for cs in change_sets:
        metadata = f"  metadata {msgspec.json.encode(cs.metadata).decode()}" if cs.metadata else ""
        out.say(
            f"#{cs.version}  {cs.timestamp:%Y-%m-%d %H:%M:%S.%f}  commit {cs.commit_id}{metadata}"
        )
        for event in cs.events:
            out.say(f"    {_event_text(event)}")


# -- tail ---------------------------------------------------------------------------------


@click.command()
@common_options
@click.option("--from-start", is_flag=True, help="Read the feed from its first position.")
@click.option("--follow/--no-follow", default=True, show_default=True, help="Wait for new entries.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after N entries.")
@click.pass_obj
def tail(settings: Settings, from_start: bool, follow: bool, limit: int | None) -> None:
    """Follow the global feed, read-only (no lease, no checkpoint)."""

    async def body() -> int:
        store, backend = settings.store_and_backend()
        async with store:
            shards = store.config.feed_shards
            if not shards:
                raise InvalidInputError(
                    "feed_shards", "is 0: set EVENTSTORE_FEED_SHARDS to the table's shard count"
                )
            positions = [0] * shards if from_start else await feed_ends(backend, shards)
            seen = 0
            async for entry in follow_feed(backend, positions, follow=follow):
                await _print_entry(settings.out, store, entry)
                seen += 1
                if limit is not None and seen >= limit:
                    break
        return EXIT_OK

    run(settings, body)


async def _print_entry(out: Output, store: EventStore, entry: FeedEntryRecord) -> None:
    version = entry.version
    events = [
        event
        async for change_set in store.read(
            entry.aggregate_id, from_version=version, to_version=version
        )
        for event in change_set.events
    ]
    if out.as_json:
        out.record(
            shard=entry.shard,
            position=entry.position,
            aggregate_id=entry.aggregate_id,
            version=version,
            commit_id=entry.commit_id,
            timestamp_us=entry.timestamp_us,
            event_count=entry.event_count,
            events=[_event(e) for e in events],
        )
        return
    types = ", ".join(str(_event(e)["type"]) for e in events)
    out.say(
        f"{entry.shard}:{entry.position}  {entry.aggregate_id}@{version}  "
        f"{entry.event_count} events  {types}"
    )


# -- verify -------------------------------------------------------------------------------


@click.command()
@common_options
@click.argument("aggregate_ids", nargs=-1)
@click.pass_obj
def verify(settings: Settings, aggregate_ids: tuple[str, ...]) -> None:
    """Check the table's integrity (or only these aggregates'); exit 1 on any problem.

    Versions gapless from 1, heads agreeing with their last change sets, every S3 object
    present with its size and SHA-256, feed positions dense and naming stored change
    sets, snapshots at stored versions; unreferenced objects are listed.
    """

    async def body() -> int:
        out = settings.out
        async with settings.store() as store:
            with out.progress() as progress:
                report = await store.verify(aggregate_ids, progress=_progress_of(progress))
        _print_report(out, report)
        return EXIT_PROBLEMS if report.problems else EXIT_OK

    run(settings, body)


def _progress_of(progress: Progress | None) -> Any:
    if progress is None:
        return None
    tasks: dict[str, TaskID] = {}

    def advance(phase: str, count: int, total: int | None) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(f"{phase} checked", total=total)
        progress.update(tasks[phase], advance=count, total=total)

    return advance


def _print_report(out: Output, report: VerifyReport) -> None:
    counts = report.counts
    if out.as_json:
        for problem in report.problems:
            out.record(problem=problem.kind, **msgspec.to_builtins(problem))
        for key in report.unreferenced:
            out.record(unreferenced=key)
        out.record(summary=counts, problems=len(report.problems))
        return
    for problem in report.problems:
        out.say(str(problem))
    for key in report.unreferenced:
        out.say(f"unreferenced object: {key}")
    out.say(
        f"checked {counts.get('items', 0)} items: {counts.get('aggregates', 0)} aggregates, "
        f"{counts.get('change_sets', 0)} change sets, {counts.get('snapshots', 0)} snapshots, "
        f"{counts.get('feed_entries', 0)} feed entries, {counts.get('objects_checked', 0)} "
        f"objects; {len(report.problems)} problems, {len(report.unreferenced)} unreferenced "
        "objects"
    )


# -- sweep --------------------------------------------------------------------------------


@click.command()
@common_options
@click.option(
    "--older-than",
    default="1h",
    show_default=True,
    help="Only objects older than this (at least the commit window): 90m, 1h30m, 2d.",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.pass_obj
def sweep(settings: Settings, older_than: str, dry_run: bool) -> None:
    """Delete offloaded objects no change set references (left by crashed writers)."""
    age = parse_duration(older_than)

    async def body() -> int:
        out = settings.out
        async with settings.store() as store:
            report = await store.sweep_orphans(older_than=age, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        for key in report.objects_deleted:
            out.say(f"{verb} {key}")
        if out.as_json:
            out.record(summary=report, dry_run=dry_run)
        out.say(
            f"{verb} {len(report.objects_deleted)} of {report.objects_scanned} objects; "
            f"{'would abort' if dry_run else 'aborted'} {report.uploads_aborted} uploads"
        )
        return EXIT_OK

    run(settings, body)
