"""The global feed and subscriptions: nothing skipped, nothing doubled, order kept."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore_async import (
    EventStore,
    InvalidInputError,
    LeaseLostError,
    SubscriptionBusyError,
)
from eventstore_async._records import (
    CheckpointRecord,
    CommitPlan,
    FeedEntryRecord,
    LeaseWrite,
    checkpoint_partition,
    feed_partition,
)
from eventstore_async.testing import DynamoDBBackend

from .concurrent_writer import writer
from .conftest import StoreFactory, backend_names, backend_of, remote_config, store_on
from .test_concurrency import run_writers

pytestmark = pytest.mark.anyio

SHARDS = 4
CONSUMER_SCRIPT = Path(__file__).with_name("feed_consumer.py")


def new_name() -> str:
    return f"sub-{uuid.uuid4().hex[:8]}"


async def feed_entries(store: EventStore, shards: int) -> dict[int, list[FeedEntryRecord]]:
    """Every feed entry, per shard, read straight from storage."""
    entries: dict[int, list[FeedEntryRecord]] = {}
    for shard in range(shards):
        records = await backend_of(store).scan_partition(feed_partition(shard), 1, 100_000)
        entries[shard] = [r for r in records if isinstance(r, FeedEntryRecord)]
    return entries


async def append_some(
    store: EventStore, aggregates: list[str], count: int
) -> list[tuple[str, int]]:
    done: list[tuple[str, int]] = []
    for n in range(count):
        aggregate = aggregates[n % len(aggregates)]
        head = await store.head(aggregate)
        cs = await store.append(aggregate, [{"n": n}], expected_version=head.version if head else 0)
        done.append((aggregate, cs.version))
    return done


async def consume(store: EventStore, name: str, want: int, **options: Any) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    with anyio.fail_after(60):
        async with store.subscribe(
            name, poll_interval=0.01, max_poll_interval=0.1, **options
        ) as sub:
            async for change_set in sub:
                seen.append((change_set.aggregate_id, change_set.version))
                if len(seen) == want:
                    break
    return seen


def assert_in_aggregate_order(seen: list[tuple[str, int]]) -> None:
    by_aggregate: dict[str, list[int]] = {}
    for aggregate, version in seen:
        by_aggregate.setdefault(aggregate, []).append(version)
    for aggregate, versions in by_aggregate.items():
        assert versions == sorted(versions), f"{aggregate} out of order: {versions}"


async def test_feed_is_gapless_and_complete_under_concurrent_writers(
    make_store: StoreFactory,
) -> None:
    store = await make_store(feed_shards=SHARDS)
    aggregates = [f"feed-{uuid.uuid4().hex[:6]}-{n}" for n in range(6)]
    out: dict[str, Any] = {"acks": [], "conflicts": []}
    async with anyio.create_task_group() as group:
        for task in range(16):
            group.start_soon(writer, store, f"t{task}", aggregates, 6, out)

    entries = await feed_entries(store, SHARDS)
    listed = [(e.aggregate_id, e.version, e.commit_id) for shard in entries.values() for e in shard]
    for shard_entries in entries.values():
        assert [e.position for e in shard_entries] == list(range(1, len(shard_entries) + 1))
    assert sorted(listed) == sorted((a, v, c) for a, v, c in out["acks"])
    assert out["conflicts"], "the writers never raced"


async def test_subscription_delivers_everything_once_in_order(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=SHARDS)
    aggregates = [f"sub-{uuid.uuid4().hex[:6]}-{n}" for n in range(5)]
    appended = await append_some(store, aggregates, 30)

    seen = await consume(store, new_name(), len(appended))

    assert sorted(seen) == sorted(appended)
    assert_in_aggregate_order(seen)


async def test_live_subscription_while_tasks_append(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=SHARDS)
    aggregates = [f"live-{uuid.uuid4().hex[:6]}-{n}" for n in range(4)]
    out: dict[str, Any] = {"acks": [], "conflicts": []}
    seen: list[tuple[str, int]] = []
    tasks, attempts = 8, 5

    async def consumer() -> None:
        async with store.subscribe(new_name(), poll_interval=0.01, max_poll_interval=0.05) as sub:
            async for change_set in sub:
                if not change_set.aggregate_id.startswith("wake-"):
                    seen.append((change_set.aggregate_id, change_set.version))
                if writers_done.is_set() and len(seen) == len(out["acks"]):
                    return

    writers_done = anyio.Event()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            group.start_soon(consumer)
            async with anyio.create_task_group() as writers:
                for task in range(tasks):
                    writers.start_soon(writer, store, f"w{task}", aggregates, attempts, out)
            writers_done.set()
            # if the consumer already has everything it waits for the next entry: wake it
            await store.append(f"wake-{uuid.uuid4().hex[:6]}", [{}], expected_version=0)

    assert sorted(seen) == sorted((a, v) for a, v, _ in out["acks"])
    assert_in_aggregate_order(seen)


async def test_restart_from_checkpoint(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=SHARDS)
    aggregates = [f"ckpt-{uuid.uuid4().hex[:6]}-{n}" for n in range(3)]
    appended = await append_some(store, aggregates, 12)
    name = new_name()

    first: list[tuple[str, int]] = []
    with pytest.raises(RuntimeError, match="crash"):
        async with store.subscribe(name, poll_interval=0.01) as sub:
            async for change_set in sub:
                first.append((change_set.aggregate_id, change_set.version))
                if len(first) == 5:
                    await sub.checkpoint()
                if len(first) == 8:
                    raise RuntimeError("crash after 8, checkpoint at 5")
    rest = await consume(store, name, len(appended) - 5)

    assert sorted(first[:5] + rest) == sorted(appended)
    assert set(first[5:8]) <= set(rest)  # delivered again: at least once


async def test_leaving_normally_saves_what_was_acknowledged(make_store: StoreFactory) -> None:
    """A consumer that asked for the next change set is done with the one before; the
    last one handed out may not be processed (the consumer broke on it), so leaving
    checkpoints everything but it, and the next consumer gets it first."""
    store = await make_store(feed_shards=SHARDS)
    aggregates = [f"save-{uuid.uuid4().hex[:6]}"]
    appended = await append_some(store, aggregates, 4)
    name = new_name()
    assert await consume(store, name, 4) == appended
    later = await append_some(store, aggregates, 2)
    assert await consume(store, name, 3) == [appended[-1], *later]


async def test_a_consumer_that_breaks_on_its_first_change_set_gets_it_again(
    make_store: StoreFactory,
) -> None:
    store = await make_store(feed_shards=SHARDS)
    appended = await append_some(store, [f"brk-{uuid.uuid4().hex[:6]}"], 2)
    name = new_name()
    assert await consume(store, name, 1) == appended[:1]
    assert await consume(store, name, 1) == appended[:1]  # not processed: delivered again
    assert await consume(store, name, 2) == appended


async def test_leaving_after_projecting_the_last_one_does_not_deliver_it_again(
    make_store: StoreFactory,
) -> None:
    store = await make_store(feed_shards=SHARDS)
    appended = await append_some(store, [f"ack-{uuid.uuid4().hex[:6]}"], 3)
    name = new_name()
    async with store.subscribe(name, poll_interval=0.01) as sub:
        async for change_set in sub:
            await sub.project("acks", put={str(change_set.version): {"v": change_set.version}})
            if change_set.version == 2:
                break
    assert await consume(store, name, 1) == appended[2:]


async def test_start_at_the_end_skips_the_past(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=SHARDS)
    aggregates = [f"end-{uuid.uuid4().hex[:6]}"]
    await append_some(store, aggregates, 3)
    name = new_name()
    async with store.subscribe(name, start="end"):
        pass
    later = await append_some(store, aggregates, 2)
    assert await consume(store, name, 2) == later


async def test_projection_applies_each_change_set_exactly_once(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=SHARDS)
    aggregates = [f"proj-{uuid.uuid4().hex[:6]}-{n}" for n in range(3)]
    appended = await append_some(store, aggregates, 15)
    name = new_name()

    async def project(crash_after: int | None) -> None:
        applied = 0
        async with store.subscribe(name, poll_interval=0.01) as sub:
            async for change_set in sub:
                doc = await store.get_view("counts", change_set.aggregate_id) or {"count": 0}
                await sub.project(
                    "counts", put={change_set.aggregate_id: {"count": doc["count"] + 1}}
                )
                applied += 1
                if applied == crash_after:
                    raise RuntimeError("crash right after a projection")
                if crash_after is None and applied == 15 - 7:
                    return

    with pytest.raises(RuntimeError):
        await project(crash_after=7)
    with anyio.fail_after(30):
        await project(crash_after=None)

    for aggregate in aggregates:
        expected = sum(1 for a, _ in appended if a == aggregate)
        assert await store.get_view("counts", aggregate) == {"count": expected}


async def test_one_consumer_at_a_time(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=SHARDS)
    await append_some(store, [f"lock-{uuid.uuid4().hex[:6]}"], 2)
    name = new_name()
    async with store.subscribe(name):
        with pytest.raises(SubscriptionBusyError):
            async with store.subscribe(name, wait=False):
                pass
    async with store.subscribe(name, wait=False):  # released on exit: free at once
        pass


async def test_a_consumer_whose_lease_was_taken_stops(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=SHARDS)
    await append_some(store, [f"lost-{uuid.uuid4().hex[:6]}"], 2)
    name = new_name()
    async with store.subscribe(name, lease_seconds=5.0) as sub:
        far_future = 2**62
        usurper = LeaseWrite(name, "someone-else", far_future + 1, far_future, ())
        await backend_of(store).commit(CommitPlan(writes=(usurper,), token=uuid.uuid4().hex))
        with pytest.raises(LeaseLostError):
            await sub.checkpoint()


async def test_feed_off_costs_nothing_and_cannot_be_subscribed(store: EventStore) -> None:
    await append_some(store, [f"off-{uuid.uuid4().hex[:6]}"], 3)
    assert (await feed_entries(store, SHARDS)) == {s: [] for s in range(SHARDS)}
    with pytest.raises(InvalidInputError) as off:
        store.subscribe(new_name())
    assert off.value.argument == "feed_shards"


async def test_max_poll_interval_below_poll_interval_is_refused() -> None:
    async with EventStore.in_memory(feed_shards=SHARDS) as store:
        with pytest.raises(InvalidInputError) as refused:
            store.subscribe(new_name(), poll_interval=0.5, max_poll_interval=0.1)
        assert refused.value.argument == "max_poll_interval"
        store.subscribe(new_name(), poll_interval=0.5, max_poll_interval=0.5)  # no backoff


@pytest.mark.parametrize(
    ("put", "delete", "argument"),
    [
        ({f"k{n}": {"n": n} for n in range(100)}, [], "put"),  # 101 actions with the checkpoint
        ({f"k{n}": {"n": n} for n in range(60)}, [f"d{n}" for n in range(40)], "delete"),
        ({"k": {"x": 1}}, ["k"], "delete[0]"),  # two actions on one item
        ({}, ["k", "j", "k"], "delete[2]"),
        ({}, "k", "delete"),  # a str is not a list of keys
        ([("k", {"x": 1})], [], "put"),
        ({"": {"x": 1}}, [], "put"),
        ({}, ["ok", 7], "delete[1]"),
    ],
)
async def test_project_refuses_what_one_transaction_cannot_hold(
    make_store: StoreFactory, put: Any, delete: Any, argument: str
) -> None:
    store = await make_store(feed_shards=SHARDS)
    await append_some(store, [f"limits-{uuid.uuid4().hex[:6]}"], 1)
    name = new_name()
    async with store.subscribe(name) as sub:
        await sub.__anext__()
        with pytest.raises(InvalidInputError) as refused:
            await sub.project("limits", put=put, delete=delete)
        assert refused.value.argument == argument
        record = await backend_of(store).get(checkpoint_partition(name), 0)
        assert isinstance(record, CheckpointRecord) and record.seq == 0  # nothing written
        assert await store.get_view("limits", "k") is None
        # The most one call can hold: 99 documents and the checkpoint.
        await sub.project("limits", put={f"k{n}": {"n": n} for n in range(98)}, delete=["gone"])
    assert await store.get_view("limits", "k97") == {"n": 97}


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", [n for n in backend_names() if n != "memory"])
async def test_many_processes_append_while_a_subscription_follows(
    backend_name: str, request: pytest.FixtureRequest
) -> None:
    config = remote_config(backend_name, request, feed_shards=SHARDS)
    aggregates = [f"mp-{n}" for n in range(4)]
    async with EventStore(config) as store:
        await store.create_schema()
        try:
            seen: list[tuple[str, int]] = []
            outputs: list[dict[str, Any]] = []

            async def follow(want: anyio.Event) -> None:
                async with store.subscribe(new_name(), poll_interval=0.01) as sub:
                    async for change_set in sub:
                        seen.append((change_set.aggregate_id, change_set.version))
                        if want.is_set() and len(seen) >= sum(len(o["acks"]) for o in outputs):
                            return

            done = anyio.Event()
            with anyio.fail_after(120):
                async with anyio.create_task_group() as group:
                    group.start_soon(follow, done)
                    outputs += await run_writers(config, 3, 4, 6, aggregates)
                    done.set()
                    await store.append("mp-wake", [{}], expected_version=0)
            acks = sorted((a, v) for out in outputs for a, v, _ in out["acks"])
            assert sorted(x for x in seen if x[0] != "mp-wake") == acks
            assert_in_aggregate_order(seen)
        finally:
            await store.drop_schema()


async def checkpointed(store: EventStore, name: str) -> set[tuple[str, int]]:
    """The change sets the subscription's checkpoint covers (read from storage)."""
    record = await backend_of(store).get(checkpoint_partition(name), 0)
    assert isinstance(record, CheckpointRecord)
    entries = await feed_entries(store, len(record.positions))
    return {
        (entry.aggregate_id, entry.version)
        for shard, shard_entries in entries.items()
        for entry in shard_entries
        if entry.position <= record.positions[shard]
    }


def start_consumer(config: Any, name: str, *, lease_seconds: float) -> subprocess.Popen[str]:
    fields = json.dumps(dataclasses.asdict(config))
    command = [sys.executable, str(CONSUMER_SCRIPT), fields, name, str(lease_seconds)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", [n for n in backend_names() if n != "memory"])
async def test_takeover_after_the_consumer_is_killed(
    backend_name: str, request: pytest.FixtureRequest
) -> None:
    config = remote_config(backend_name, request, feed_shards=SHARDS)
    name = new_name()
    async with store_on(config, DynamoDBBackend(config)) as store:
        await store.create_schema()
        try:
            appended = await append_some(store, [f"kill-{n}" for n in range(3)], 20)
            consumer = start_consumer(config, name, lease_seconds=1.0)
            assert consumer.stdout is not None
            lines = [await anyio.to_thread.run_sync(consumer.stdout.readline) for _ in range(7)]
            consumer.kill()  # no release: its lease must expire
            await anyio.to_thread.run_sync(consumer.wait)
            consumer.stdout.close()
            first = [(a, int(v)) for a, v in (line.split() for line in lines)]
            # It checkpoints, then prints: it may have saved one more than we read.
            saved = await checkpointed(store, name)
            rest = await consume(store, name, len(appended) - len(saved))
            assert set(first) <= saved
            assert len(rest) == len(set(rest)), "delivered twice after the last checkpoint"
            assert sorted(saved | set(rest)) == sorted(appended)
        finally:
            await store.drop_schema()
