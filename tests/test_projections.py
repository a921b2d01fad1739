"""``project()`` with several views: one transaction for all of them and the checkpoint."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from eventstore_async import EventStore, InvalidInputError
from eventstore_async._records import CheckpointRecord, checkpoint_partition

from .conftest import StoreFactory, backend_of

pytestmark = pytest.mark.anyio


async def new_subscription(make_store: StoreFactory) -> tuple[EventStore, str]:
    store = await make_store(feed_shards=2)
    for n in range(3):
        await store.append(f"order-{n}", [{"amount": 10 * (n + 1)}], expected_version=0)
    return store, f"views-{uuid.uuid4().hex[:8]}"


async def test_one_change_set_updates_a_per_aggregate_and_a_totals_view(
    make_store: StoreFactory,
) -> None:
    store, name = await new_subscription(make_store)
    total = 0
    async with store.subscribe(name) as sub:
        for _ in range(3):
            change_set = await sub.__anext__()
            total += change_set.events[0]["amount"]
            await sub.project(
                "orders",
                put={change_set.aggregate_id: {"version": change_set.version}},
                views={"totals": {"put": {"all": {"amount": total}}}},
            )
    assert await store.get_view("totals", "all") == {"amount": 60}
    assert [await store.get_view("orders", f"order-{n}") for n in range(3)] == [{"version": 1}] * 3


async def test_views_alone_with_puts_and_deletes(make_store: StoreFactory) -> None:
    store, name = await new_subscription(make_store)
    async with store.subscribe(name) as sub:
        await sub.__anext__()
        await sub.project(views={"a": {"put": {"k": {"n": 1}, "gone": {"n": 0}}}, "b": {}})
        await sub.__anext__()
        await sub.project(views={"a": {"delete": ["gone"]}, "b": {"put": {"k": {"n": 2}}}})
    assert await store.get_view("a", "k") == {"n": 1}
    assert await store.get_view("a", "gone") is None
    assert await store.get_view("b", "k") == {"n": 2}


def documents(count: int) -> dict[str, Any]:
    return {f"k{n}": {"n": n} for n in range(count)}


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"views": {"a": {"put": documents(50)}, "b": {"put": documents(50)}}}, "views"),
        ({"view": "a", "put": documents(60), "views": {"b": {"delete": ["x"] * 1}}}, None),
        ({"view": "a", "views": {"a": {}}}, "views['a']"),
        ({"views": {"a": {"add": {}}}}, "views['a']"),
        ({"views": {"a": {"put": {"": {}}}}}, "views['a'].put"),
        ({"views": {"a": {"delete": ["x", "x"]}}}, "views['a'].delete[1]"),
        ({"views": {"bad name": {}}}, "views"),
        ({"views": ["a"]}, "views"),
        ({"put": {"k": {}}}, "view"),
    ],
)
async def test_bad_projections_are_refused_before_anything_is_written(
    make_store: StoreFactory, kwargs: dict[str, Any], argument: str | None
) -> None:
    store, name = await new_subscription(make_store)
    async with store.subscribe(name) as sub:
        await sub.__anext__()
        if argument is None:  # 61 documents in two views: within the limit
            await sub.project(**kwargs)
            return
        with pytest.raises(InvalidInputError) as refused:
            await sub.project(**kwargs)
        assert refused.value.argument == argument
        record = await backend_of(store).get(checkpoint_partition(name), 0)
        assert isinstance(record, CheckpointRecord) and record.seq == 0
        # The most one call can hold: 99 documents over the views, and the checkpoint.
        await sub.project(views={"a": {"put": documents(49)}, "b": {"put": documents(50)}})
    assert await store.get_view("b", "k49") == {"n": 49}
