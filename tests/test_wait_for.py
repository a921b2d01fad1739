"""Read-your-writes: store.wait_for(name, change_set, timeout=...), and the web app's
POST option built on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from eventstore_async import ChangeSet, EventStore, InvalidInputError
from eventstore_async._feed.positions import shard_of
from examples.webapp import create_app

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio


async def project_until(store: EventStore, name: str, stop: anyio.Event) -> None:
    """A projector: one view document per change set, saved with the checkpoint."""
    async with store.subscribe(name, poll_interval=0.01) as sub:
        async for change_set in sub:
            await sub.project("seen", put={change_set.aggregate_id: {"v": change_set.version}})
            if stop.is_set():
                return


async def test_wait_for_returns_once_the_read_model_has_the_change(
    make_store: StoreFactory,
) -> None:
    store = await make_store(feed_shards=2)
    name = f"rw-{uuid.uuid4().hex[:6]}"
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(project_until, store, name, stop)
        for n in range(6):
            change_set = await store.append(f"order-{n}", [{"n": n}], expected_version=0)
            await store.wait_for(name, change_set, timeout=20)
            assert await store.get_view("seen", f"order-{n}") == {"v": 1}  # read own write
        stop.set()
        await store.append("wake", [{}], expected_version=0)
    again = await store.append("order-0", [{"n": 9}], expected_version=1)
    with pytest.raises(TimeoutError):  # nobody projects any more
        await store.wait_for(name, again, timeout=0.3)
    earlier = ChangeSet(
        aggregate_id="order-0", version=1, commit_id="x", timestamp=again.timestamp, events=()
    )
    await store.wait_for(name, earlier, timeout=30)  # long since checkpointed: at once


async def project_orders(store: EventStore, name: str, mode: str, seen: list[str]) -> None:
    """A filtered projector: only the change sets of orders."""
    subscription = store.subscribe(
        name,
        mode=mode,  # type: ignore[arg-type]
        aggregate_types=["order"],
        poll_interval=0.01,
        max_poll_interval=0.05,
    )
    async with subscription as sub:
        async for change_set in sub:
            seen.append(change_set.aggregate_id)
            await sub.project("orders", put={change_set.aggregate_id: {"v": change_set.version}})


def ids_in_shard(prefix: str, shard: int, shards: int, count: int) -> list[str]:
    """``count`` aggregate ids starting with ``prefix`` that belong to ``shard``."""
    candidates = (f"{prefix}-{n}" for n in range(1000))
    return [i for i in candidates if shard_of(i, shards) == shard][:count]


@pytest.mark.parametrize("mode", ["exclusive", "shared"])
async def test_wait_for_change_sets_the_filter_skips_returns(
    make_store: StoreFactory, mode: str
) -> None:
    """A skipped change set is never projected: the caught-up subscription saves its
    checkpoint past it by itself, after a projected one in its shard or in a shard
    where nothing matched, and again for skipped ones that follow a save."""
    store = await make_store(feed_shards=2)
    name = f"skip-{uuid.uuid4().hex[:6]}"
    (order,) = ids_in_shard("order", 0, 2, 1)
    same_shard = ids_in_shard("customer", 0, 2, 3)
    other_shard = ids_in_shard("customer", 1, 2, 1)
    seen: list[str] = []
    async with anyio.create_task_group() as group:
        group.start_soon(project_orders, store, name, mode, seen)
        matched = await store.append(order, [{"n": 1}], expected_version=0, aggregate_type="order")
        await store.wait_for(name, matched, timeout=30)
        for customer in [*same_shard, *other_shard]:  # each right after a save: throttled
            skipped = await store.append(
                customer, [{"n": 1}], expected_version=0, aggregate_type="customer"
            )
            await store.wait_for(name, skipped, timeout=30)
        group.cancel_scope.cancel()
    assert seen == [order]


async def test_wait_for_a_subscription_not_started_times_out(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=2)
    change_set = await store.append("order-1", [{"n": 1}], expected_version=0)
    with pytest.raises(TimeoutError):
        await store.wait_for("nobody", change_set, timeout=0.2)


async def test_wait_for_refuses_bad_arguments(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=2)
    change_set = await store.append("order-1", [{"n": 1}], expected_version=0)
    for args, kwargs, argument in [
        (("bad name", change_set), {}, "name"),
        (("ok", "order-1"), {}, "change_set"),
        (("ok", change_set), {"timeout": 0}, "timeout"),
    ]:
        with pytest.raises(InvalidInputError) as refused:
            await store.wait_for(*args, **kwargs)  # type: ignore[arg-type]
        assert refused.value.argument == argument


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(lambda: EventStore.in_memory(feed_shards=2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_web_app_post_can_wait_for_its_read_model(client: httpx.AsyncClient) -> None:
    for version in range(3):
        body = {"expected_version": version, "events": [{"n": version}], "wait_seconds": 10}
        response = await client.post("/aggregates/order-1/changesets", json=body)
        assert response.status_code == 201
        assert response.json()["projected"] is True
        summary = await client.get("/summaries/order-1")  # no polling: it is there
        assert summary.json()["version"] == version + 1


async def test_web_app_refuses_a_bad_wait_before_writing(client: httpx.AsyncClient) -> None:
    body = {"expected_version": 0, "events": [{"n": 0}], "wait_seconds": 600}
    response = await client.post("/aggregates/order-1/changesets", json=body)
    assert (response.status_code, response.json()["argument"]) == (400, "wait_seconds")
    assert (await client.get("/aggregates/order-1")).status_code == 404
