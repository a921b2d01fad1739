"""Many writers, one truth: every acknowledged append is stored exactly once, versions
run 1..n with no gap, and every loser was told with ConcurrencyError.

One process with many tasks runs on every backend; several OS processes run against
the emulator (and an endpoint from the environment), through the public API only.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore_async import EventStore, StoreConfig

from .concurrent_writer import writer
from .conftest import StoreFactory, backend_names, remote_config

pytestmark = pytest.mark.anyio

WRITER_SCRIPT = Path(__file__).with_name("concurrent_writer.py")


async def check_invariants(
    store: EventStore, aggregates: list[str], outputs: list[dict[str, Any]], attempts: int
) -> None:
    acks = [ack for out in outputs for ack in out["acks"]]
    conflicts = [conflict for out in outputs for conflict in out["conflicts"]]
    assert len(acks) + len(conflicts) == attempts, "an append neither landed nor conflicted"
    assert all(actual != expected for _, expected, actual in conflicts)

    stored: dict[str, tuple[str, int]] = {}
    for aggregate in aggregates:
        head = await store.head(aggregate)
        if head is None:
            continue
        history = await store.load(aggregate)
        assert [cs.version for cs in history.change_sets] == list(range(1, head.version + 1))
        assert history.head.last_commit_id == history.change_sets[-1].commit_id
        for change_set in history.change_sets:
            assert change_set.commit_id not in stored, "a commit landed twice"
            stored[change_set.commit_id] = (aggregate, change_set.version)

    assert stored == {commit_id: (aggregate, version) for aggregate, version, commit_id in acks}


async def test_many_tasks_one_process(make_store: StoreFactory) -> None:
    store = await make_store()
    aggregates = [f"shared-{n}" for n in range(3)]
    tasks, attempts = 24, 8
    out: dict[str, Any] = {"acks": [], "conflicts": []}
    async with anyio.create_task_group() as group:
        for task in range(tasks):
            group.start_soon(writer, store, f"t{task}", aggregates, attempts, out)

    assert out["conflicts"], "the writers never raced: the test shows nothing"
    await check_invariants(store, aggregates, [out], tasks * attempts)


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", [name for name in backend_names() if name != "memory"])
async def test_many_processes(backend_name: str, request: pytest.FixtureRequest) -> None:
    config = remote_config(backend_name, request)
    aggregates = [f"shared-{n}" for n in range(3)]
    processes, tasks, attempts = 4, 6, 8
    async with EventStore(config) as store:
        await store.create_schema()
        try:
            outputs = await run_writers(config, processes, tasks, attempts, aggregates)
            assert sum(len(out["conflicts"]) for out in outputs) > 0
            await check_invariants(store, aggregates, outputs, processes * tasks * attempts)
        finally:
            await store.drop_schema()


async def run_writers(
    config: StoreConfig, processes: int, tasks: int, attempts: int, aggregates: list[str]
) -> list[dict[str, Any]]:
    fields = dataclasses.asdict(config)
    results: list[dict[str, Any]] = []

    async def one(name: str) -> None:
        command = [
            sys.executable,
            str(WRITER_SCRIPT),
            json.dumps(fields),
            name,
            str(tasks),
            str(attempts),
            *aggregates,
        ]
        done = await anyio.run_process(command, check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        results.append(json.loads(done.stdout))

    async with anyio.create_task_group() as group:
        for index in range(processes):
            group.start_soon(one, f"p{index}")
    return results
