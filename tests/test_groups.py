"""Consumer groups (``mode="shared"``): members share the shards, each with its own lease
and checkpoint; a member that dies or joins moves shards within about a lease; every
change set is applied once, in per-aggregate order."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore_async import EventStore, InvalidInputError, StorageError
from eventstore_async._backends.memory import MemoryBackend
from eventstore_async._feed.groups import ShardLeaseLostError, shard_name
from eventstore_async._records import CheckpointRecord, checkpoint_partition
from eventstore_async.testing import DynamoDBBackend

from .conftest import StoreFactory, backend_names, backend_of, remote_config, store_on
from .group_consumer import consume

pytestmark = pytest.mark.anyio

SHARDS = 8
LEASE = 2.0
CONSUMER = Path(__file__).with_name("group_consumer.py")


def new_name() -> str:
    return f"group-{uuid.uuid4().hex[:8]}"


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 60.0) -> float:
    """Ask every 50 ms until ``condition`` holds (the state is in the table, written by
    other processes: nothing to wait on); the seconds it took."""
    started = time.monotonic()
    with anyio.fail_after(seconds):
        while not await condition():  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return time.monotonic() - started


async def holders(store: EventStore, name: str) -> list[str | None]:
    """Each shard's lease holder now (None: free or expired)."""
    keys: list[tuple[str, Any]] = [
        (checkpoint_partition(shard_name(name, s)), 0) for s in range(SHARDS)
    ]
    records = await backend_of(store).get_many(keys)
    now = time.time() * 1e6
    return [
        r.owner if isinstance(r, CheckpointRecord) and r.lease_until_us > now else None
        for r in records
    ]


# -- in one process ----------------------------------------------------------------------


async def test_two_members_split_the_shards(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=SHARDS)
    name = new_name()
    for n in range(16):
        await store.append(f"a-{n}", [{"n": n}], expected_version=0)
    first = store.subscribe(name, mode="shared", lease_seconds=LEASE)
    async with first:
        assert first.shards == tuple(range(SHARDS))  # alone: every shard
        second = store.subscribe(name, mode="shared", lease_seconds=LEASE)
        async with second:
            took = await until(lambda: _split(first.shards, second.shards), 10)
            assert took < 2 * LEASE  # about two thirds of a lease, and the polls
    assert set(await holders(store, name)) == {None}  # both left: every shard free


async def _split(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) == SHARDS // 2 and not set(a) & set(b)


async def test_a_name_keeps_its_mode(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=SHARDS)
    shared, exclusive = new_name(), new_name()
    async with store.subscribe(shared, mode="shared", lease_seconds=LEASE):
        pass
    async with store.subscribe(exclusive, lease_seconds=LEASE):
        pass
    with pytest.raises(InvalidInputError) as refused:
        async with store.subscribe(shared):
            pass
    assert refused.value.argument == "mode"
    with pytest.raises(InvalidInputError) as refused:
        async with store.subscribe(exclusive, mode="shared"):
            pass
    assert refused.value.argument == "mode"
    with pytest.raises(InvalidInputError):
        store.subscribe(new_name(), mode="both")  # type: ignore[arg-type]


async def test_project_for_a_shard_given_up_is_refused_for_that_shard(
    make_store: StoreFactory,
) -> None:
    store = await make_store(feed_shards=SHARDS)
    name = new_name()
    await store.append("a-1", [{"n": 1}], expected_version=0)
    sub = store.subscribe(name, mode="shared", lease_seconds=LEASE)
    async with sub:
        change_set = await sub.__anext__()
        shard = sub._last[0].shard  # type: ignore[union-attr]
        await sub._release(sub._held[shard])  # as when a member joins
        with pytest.raises(ShardLeaseLostError) as lost:
            await sub.project("v", put={change_set.aggregate_id: {"n": 1}})
        assert lost.value.shard == shard
        assert shard not in sub.shards
    assert await store.get_view("v", "a-1") is None


# -- the group test: 3 members projecting while writers append; one killed, one joins ----


class Killable:
    """A backend wrapper for an in-process member: once killed, every call fails, as
    calls from a process killed with SIGKILL would never arrive (it releases nothing)."""

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name in ("objects", "open", "aclose"):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise StorageError("killed", code="Killed", operation=name)
            return await attribute(*args, **kwargs)

        return call


async def write_all(store: EventStore, aggregates: int, versions: int) -> None:
    async def writer(index: int) -> None:
        for version in range(versions):
            await store.append(f"agg-{index}", [{"v": version}], expected_version=version)
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as group:
        for index in range(aggregates):
            group.start_soon(writer, index)


async def all_applied(store: EventStore, aggregates: int, versions: int) -> bool:
    for index in range(aggregates):
        document = await store.get_view("applied", f"agg-{index}")
        if document is None or len(document["versions"]) < versions:
            return False
    return True


async def assert_exactly_once_in_order(store: EventStore, aggregates: int, versions: int) -> None:
    for index in range(aggregates):
        document = await store.get_view("applied", f"agg-{index}")
        assert document["versions"] == list(range(1, versions + 1)), f"agg-{index}"


@pytest.mark.parametrize("backend_name", ["memory"])
async def test_group_of_three_in_one_process(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=SHARDS)
    shared = backend_of(store)
    assert isinstance(shared, MemoryBackend)
    name, aggregates, versions = new_name(), 16, 12
    owners_of: list[list[str]] = [[] for _ in range(4)]  # per member: its owner id
    members: list[tuple[Killable, anyio.CancelScope]] = []

    async def member(backend: Killable, scope: anyio.CancelScope, owners: list[str]) -> None:
        async with EventStore(store.config, backend=backend) as own:
            with scope, _quiet():
                await consume(own, name, LEASE, lambda line: _owner(line, owners))

    async with anyio.create_task_group() as group:
        for index in range(3):
            backend, scope = Killable(shared), anyio.CancelScope()
            members.append((backend, scope))
            group.start_soon(member, backend, scope, owners_of[index])
        writing = anyio.Event()

        async def write_then_flag() -> None:
            await write_all(store, aggregates, versions)
            writing.set()

        group.start_soon(write_then_flag)
        await until(lambda: _count(owners_of[:3]))
        await until(lambda: _applied_some(store, aggregates))
        members[0][0].dead = True  # SIGKILL: nothing released
        moved = await until(lambda: _none_held_by(store, name, owners_of[0][0]))
        group.start_soon(member, Killable(shared), anyio.CancelScope(), owners_of[3])
        await until(lambda: _count(owners_of))
        joined = await until(lambda: _holds_a_share(store, name, owners_of[3][0]))
        await writing.wait()
        await until(lambda: all_applied(store, aggregates, versions))
        await assert_exactly_once_in_order(store, aggregates, versions)
        print(f"rebalancing: a dead member's shards {moved:.2f} s, a joiner's {joined:.2f} s")
        assert moved < 2 * LEASE and joined < 2 * LEASE
        group.cancel_scope.cancel()


class _quiet:
    """Swallow what ends a killed member (its backend fails every call)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        return isinstance(exc, StorageError)


def _owner(line: str, owners: list[str]) -> None:
    if line.startswith("owner "):
        owners.append(line.split()[1])


async def _count(owners_of: list[list[str]]) -> bool:
    return all(owners_of)


async def _applied_some(store: EventStore, aggregates: int) -> bool:
    documents = [await store.get_view("applied", f"agg-{n}") for n in range(aggregates)]
    return sum(len(d["versions"]) for d in documents if d) >= aggregates


async def _none_held_by(store: EventStore, name: str, owner: str) -> bool:
    now = await holders(store, name)
    return owner not in now and None not in now


async def _holds_a_share(store: EventStore, name: str, owner: str) -> bool:
    return (await holders(store, name)).count(owner) >= SHARDS // 3


@pytest.mark.slow
@pytest.mark.timeout(300)  # 40-90 s on a busy 2-core machine: processes and the emulator
@pytest.mark.parametrize("backend_name", [n for n in backend_names() if n != "memory"])
async def test_group_of_three_processes_with_a_kill_and_a_joiner(
    backend_name: str, request: pytest.FixtureRequest
) -> None:
    config = remote_config(backend_name, request, feed_shards=SHARDS)
    name, aggregates, versions = new_name(), 12, 10
    fields = json.dumps(dataclasses.asdict(config))
    async with store_on(config, DynamoDBBackend(config)) as store:
        await store.create_schema()
        processes: list[subprocess.Popen[str]] = []
        try:
            owners: list[str] = []

            async def start_member() -> None:
                command = [sys.executable, str(CONSUMER), fields, name, str(LEASE)]
                process = subprocess.Popen(  # noqa: ASYNC220 - it runs beside the test
                    command, stdout=subprocess.PIPE, text=True
                )
                processes.append(process)
                assert process.stdout is not None
                line = await anyio.to_thread.run_sync(process.stdout.readline)
                owners.append(line.split()[1])

            for _ in range(3):
                await start_member()
            async with anyio.create_task_group() as group:
                done = anyio.Event()

                async def write_then_flag() -> None:
                    await write_all(store, aggregates, versions)
                    done.set()

                group.start_soon(write_then_flag)
                await until(lambda: _applied_some(store, aggregates))
                os.kill(processes[0].pid, signal.SIGKILL)
                moved = await until(lambda: _none_held_by(store, name, owners[0]))
                await start_member()
                joined = await until(lambda: _holds_a_share(store, name, owners[3]))
                await done.wait()
            await until(lambda: all_applied(store, aggregates, versions), 120)
            await assert_exactly_once_in_order(store, aggregates, versions)
            print(f"rebalancing: a dead member's shards {moved:.2f} s, a joiner's {joined:.2f} s")
            assert moved < 3 * LEASE and joined < 3 * LEASE
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                process.wait(10)
                if process.stdout is not None:
                    process.stdout.close()
            await store.drop_schema()
