"""Cancellation and shutdown: no half state, nothing leaked, operations end cleanly."""

from __future__ import annotations

import uuid

import anyio
import anyio.lowlevel
import pytest

from eventstore_async import EventStore, StoreClosedError

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio


def new_id() -> str:
    return f"life-{uuid.uuid4().hex[:10]}"


async def assert_consistent(store: EventStore, aggregate: str) -> int:
    head = await store.head(aggregate)
    if head is None:
        assert [cs async for cs in store.read(aggregate)] == []
        return 0
    history = await store.load(aggregate)  # raises on a gap
    assert history.head.last_commit_id == history.change_sets[-1].commit_id
    assert history.head.event_count == sum(cs.event_count for cs in history.change_sets)
    return head.version


async def append_time(store: EventStore) -> float:
    """The slowest of three uncancelled appends like the test's, in seconds."""
    times = []
    for n in range(3):
        started = anyio.current_time()
        events = [{"n": n, "blob": "x" * (3000 if n % 2 else 10)}]
        await store.append(new_id(), events, expected_version=0)
        times.append(anyio.current_time() - started)
    return max(times)


async def test_appends_cancelled_at_any_point_leave_no_half_state(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=2048)
    full = await append_time(store)  # the delays scale with this machine's speed
    aggregate = new_id()
    landed = 0
    for step in range(40):
        delay = step * full / 20  # from before the first await to twice an append's time
        events = [{"n": step, "blob": "x" * (3000 if step % 2 else 10)}]
        with anyio.move_on_after(delay):
            await store.append(aggregate, events, expected_version=landed)
        landed = await assert_consistent(store, aggregate)
    assert landed > 0, "no append ever finished: the delays were all too short"


async def test_closing_lets_operations_in_flight_finish(make_store: StoreFactory) -> None:
    store = await make_store()
    aggregates = [new_id() for _ in range(8)]
    results: list[object] = []

    async def append(aggregate: str) -> None:
        try:
            results.append(await store.append(aggregate, [{"n": 1}], expected_version=0))
        except StoreClosedError as refused:
            results.append(refused)

    async with anyio.create_task_group() as group:
        for aggregate in aggregates:
            group.start_soon(append, aggregate)
        await anyio.lowlevel.checkpoint()  # let them start
        await store.aclose()

    finished = [r for r in results if not isinstance(r, StoreClosedError)]
    assert len(results) == len(aggregates)
    assert finished, "every append was refused: the close did not wait for any"
    with pytest.raises(StoreClosedError):
        await store.head(aggregates[0])


async def test_a_closed_store_refuses_new_work_at_once(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.aclose()
    with pytest.raises(StoreClosedError):
        await store.append(new_id(), [{"n": 1}], expected_version=0)
    with pytest.raises(StoreClosedError):
        store.read(new_id())
    await store.aclose()  # twice is fine
