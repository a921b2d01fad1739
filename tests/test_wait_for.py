"""Read-your-writes: store.wait_for(name, change_set, timeout=...), and the web app's
POST option built on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from eventstore_async import ChangeSet, EventStore, InvalidInputError
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
    await store.wait_for(name, earlier, timeout=5)  # long since checkpointed


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
