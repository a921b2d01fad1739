"""A subscription and the example web app live through a backend outage.

The emulator process is stopped (SIGSTOP) for 15 s under a live subscription and the
web app, then continued: requests in that time hang until their timeouts, as against
an unreachable DynamoDB, and its data is kept. Both must recover without a restart:
the subscription still the same one, the app's store still open, every change set
projected exactly once.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from eventstore_async import EventStore, StorageUnavailableError, StoreConfig
from eventstore_async._records import CheckpointWrite, CommitPlan, LeaseWrite
from eventstore_async.emulator import Emulator
from examples.webapp import create_app

from .conftest import StoreFactory, backend_of
from .test_subscription_faults import checkpoint_of, new_store, with_faults

pytestmark = pytest.mark.anyio

OUTAGE_SECONDS = 15.0
SHARDS = 2


def outage_config(endpoint_url: str) -> StoreConfig:
    """Short timeouts, so requests fail fast while the backend is gone."""
    token = uuid.uuid4().hex[:12]
    return StoreConfig(
        table_name=f"es-outage-{token}",
        endpoint_url=endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        connect_timeout=0.5,
        read_timeout=1.0,
        max_attempts=2,
        append_deadline_seconds=3.0,
        feed_shards=SHARDS,
    )


@asynccontextmanager
async def web_client(config: StoreConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(lambda: EventStore(config))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def post(client: httpx.AsyncClient, aggregate_id: str, version: int) -> httpx.Response:
    body: dict[str, Any] = {
        "expected_version": version,
        "events": [{"n": version}],
        "commit_id": f"{aggregate_id}-{version}",
    }
    return await client.post(f"/aggregates/{aggregate_id}/changesets", json=body)


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 30.0) -> None:
    """Ask again (every 50 ms) until ``condition`` holds: the read models are read over
    HTTP and the emulator, there is no event to wait on."""
    with anyio.fail_after(seconds):
        while not await condition():  # noqa: ASYNC110
            await anyio.sleep(0.05)


class Watcher:
    """A live subscription projecting every change set it gets into view "watched"."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.delivered: list[tuple[str, int]] = []
        self.subscriptions = 0

    async def run(self) -> None:
        async with self.store.subscribe("watcher", lease_seconds=3.0) as sub:
            self.subscriptions += 1
            async for change_set in sub:
                self.delivered.append((change_set.aggregate_id, change_set.version))
                document = {"version": change_set.version}
                await sub.project("watched", put={change_set.aggregate_id: document})


async def projected(client: httpx.AsyncClient, store: EventStore, want: dict[str, int]) -> bool:
    for aggregate_id, version in want.items():
        summary = await client.get(f"/summaries/{aggregate_id}")
        if summary.status_code != 200 or summary.json()["version"] != version:
            return False
        watched = await store.get_view("watched", aggregate_id)
        if watched != {"version": version}:
            return False
    return True


@pytest.mark.timeout(120)
async def test_subscription_and_web_app_recover_from_a_15_s_outage() -> None:
    aggregates = [f"order-{n}" for n in range(4)]
    async with Emulator() as emulator:
        config = outage_config(emulator.endpoint_url)
        async with EventStore(config) as admin:
            await admin.create_schema()
        async with (
            web_client(config) as client,
            EventStore(config) as store,
            anyio.create_task_group() as group,
        ):
            watcher = Watcher(store)
            group.start_soon(watcher.run)
            for aggregate_id in aggregates:
                assert (await post(client, aggregate_id, 0)).status_code == 201
            await until(lambda: projected(client, store, dict.fromkeys(aggregates, 1)))

            assert emulator.pid is not None
            os.kill(emulator.pid, signal.SIGSTOP)
            try:
                during = await post(client, aggregates[0], 1)
                assert during.status_code == 503
                await anyio.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for a result
            finally:
                os.kill(emulator.pid, signal.SIGCONT)

            for aggregate_id in aggregates:  # the 503 is retried with its commit id
                assert (await post(client, aggregate_id, 1)).status_code == 201
            for aggregate_id in aggregates:
                assert (await post(client, aggregate_id, 2)).status_code == 201
            await until(lambda: projected(client, store, dict.fromkeys(aggregates, 3)))

            summaries = [await client.get(f"/summaries/{a}") for a in aggregates]
            assert [s.json()["events"] for s in summaries] == [3] * len(aggregates)
            for aggregate_id in aggregates:  # each change set once, in version order
                versions = [v for a, v in watcher.delivered if a == aggregate_id]
                assert versions == [1, 2, 3]
            assert watcher.subscriptions == 1
            assert (await client.get("/aggregates/order-0")).json()["version"] == 3
            group.cancel_scope.cancel()


# -- the save's verdicts, on every backend -------------------------------------------------


async def test_a_lease_that_ran_out_untaken_is_taken_again(make_store: StoreFactory) -> None:
    store, name = await new_store(make_store)
    async with store.subscribe(name) as sub:
        await sub.__anext__()
        ran_out = LeaseWrite(sub.name, sub._owner, lease_until_us=1, now_us=1, positions=())
        await backend_of(store).commit(CommitPlan(writes=(ran_out,), token=uuid.uuid4().hex))
        await sub.project("watched", put={"k": {"v": 1}})  # taken again, then saved
        assert sub._lost is None
        assert (await checkpoint_of(store, name)).lease_until_us > 1
    assert await store.get_view("watched", "k") == {"v": 1}


async def test_a_save_whose_answer_was_lost_is_found_landed(make_store: StoreFactory) -> None:
    store, name = await new_store(make_store)
    faults = with_faults(store)
    lost_answers = [1]

    async def answer_lost(plan: CommitPlan) -> str | None:
        if isinstance(plan.writes[0], CheckpointWrite) and lost_answers[0]:
            lost_answers[0] -= 1
            await faults.inner.commit(plan)
            raise StorageUnavailableError("timed out", code="ReadTimeout", operation="Tx")
        return None

    async with store.subscribe(name) as sub:
        await sub.__anext__()
        faults.script = answer_lost
        await sub.project("watched", put={"k": {"v": 1}})  # applied once, not a loss
        assert sub._lost is None
        assert (await checkpoint_of(store, name)).seq == 1
        await sub.checkpoint()
    assert await store.get_view("watched", "k") == {"v": 1}
