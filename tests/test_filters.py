"""Filtered subscriptions: aggregate_types= and event_types=, judged from the feed entry
when it says enough, else from the change set; the checkpoint moves past what is skipped."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import msgspec
import pytest

from eventstore_async import (
    ChangeSet,
    EventStore,
    GroupSubscription,
    InvalidInputError,
    RawEvent,
    Subscription,
)
from eventstore_async._records import (
    CheckpointRecord,
    FeedEntryRecord,
    checkpoint_partition,
    feed_partition,
)

from .conftest import StoreFactory, backend_of
from .domain import OrderPlaced, OrderShipped

pytestmark = pytest.mark.anyio


class ReadSpy:
    """A backend wrapper that remembers the change sets read (``get_many`` keys > 0)."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.change_sets_read: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_many(self, keys: list[tuple[str, Any]]) -> list[Any]:
        self.change_sets_read += [(k, v) for k, v in keys if v != 0]
        return await self.inner.get_many(keys)  # type: ignore[no-any-return]


async def append_mix(store: EventStore) -> ChangeSet:
    """order-1: placed, shipped; customer-1: a mapping event; order-2: placed (the last,
    returned)."""
    await store.append("order-1", [placed()], expected_version=0, aggregate_type="order")
    await store.append("customer-1", [{"name": "ada"}], expected_version=0, aggregate_type="cust")
    await store.append("order-1", [OrderShipped(carrier="ups")], expected_version=1)
    return await store.append("order-2", [placed()], expected_version=0, aggregate_type="order")


def placed() -> OrderPlaced:
    return OrderPlaced(sku="book", qty=1)


async def drain(
    store: EventStore, name: str, want: int, last: ChangeSet, **filters: Any
) -> list[tuple[str, int]]:
    """The first ``want`` change sets delivered (each checkpointed), and any more
    delivered until the checkpoint is past ``last``, the feed's last change set (the
    subscription saves it past a skipped tail by itself)."""
    got: list[tuple[str, int]] = []

    async def consume(sub: Subscription | GroupSubscription) -> None:
        async for change_set in sub:
            got.append((change_set.aggregate_id, change_set.version))
            await sub.checkpoint()

    async with store.subscribe(name, **filters) as sub, anyio.create_task_group() as group:
        group.start_soon(consume, sub)
        await store.wait_for(name, last, timeout=30)
        group.cancel_scope.cancel()
    assert len(got) >= want  # more is for the caller's assertion to show
    return got


async def saved_positions(store: EventStore, name: str) -> tuple[int, ...]:
    record = await backend_of(store).get(checkpoint_partition(name), 0)
    assert isinstance(record, CheckpointRecord)
    return record.positions


async def test_new_entries_carry_the_aggregate_type_and_event_type_names(
    make_store: StoreFactory,
) -> None:
    store = await make_store(feed_shards=1)
    await append_mix(store)
    entries = await backend_of(store).scan_partition(feed_partition(0), 1, 10)
    assert [(e.aggregate_type, e.event_types) for e in entries] == [
        ("order", ("OrderPlaced",)),
        ("cust", ()),
        (None, ("shipped",)),  # no type given on this append
        ("order", ("OrderPlaced",)),
    ]


async def test_filters_deliver_only_matches_and_read_only_their_change_sets(
    make_store: StoreFactory,
) -> None:
    store = await make_store(feed_shards=1, wrap=ReadSpy)
    last = await append_mix(store)
    spy = backend_of(store)
    assert isinstance(spy, ReadSpy)

    by_event = await drain(store, "by-event", 2, last, event_types=["OrderPlaced"])
    assert by_event == [("order-1", 1), ("order-2", 1)]
    assert spy.change_sets_read == [("order-1", 1), ("order-2", 1)]  # no skipped one read
    assert await saved_positions(store, "by-event") == (4,)  # past the skipped ones

    by_type = await drain(store, "by-type", 3, last, aggregate_types=["order"])
    assert by_type == [("order-1", 1), ("order-1", 2), ("order-2", 1)]
    both = await drain(store, "both", 1, last, aggregate_types={"order"}, event_types={"shipped"})
    assert both == [("order-1", 2)]
    assert await saved_positions(store, "both") == (4,)


async def test_entries_without_types_are_filtered_after_reading(
    make_store: StoreFactory,
) -> None:
    """Entries written before they carried types: the change set (and head) decide."""
    store = await make_store(feed_shards=1)
    last = await append_mix(store)
    backend = backend_of(store)
    for entry in await backend.scan_partition(feed_partition(0), 1, 10):
        assert isinstance(entry, FeedEntryRecord)
        await _rewrite_as_old(store, entry)

    got = await drain(
        store, "old-entries", 1, last, aggregate_types=["order"], event_types=["shipped"]
    )
    assert got == [("order-1", 2)]
    assert await saved_positions(store, "old-entries") == (4,)


async def _rewrite_as_old(store: EventStore, entry: FeedEntryRecord) -> None:
    """Put the entry back without the type attributes, as before this change."""
    old = msgspec.structs.replace(entry, aggregate_type=None, event_types=None)
    backend: Any = backend_of(store)
    if hasattr(backend, "_partitions"):  # memory
        backend._partitions[feed_partition(0)][entry.position] = old
        return
    from eventstore_async._backends.aws.items import record_to_item

    item = record_to_item(old)
    assert "agg_type" not in item and "event_types" not in item
    await backend._dynamodb.put_item(TableName=store.config.table_name, Item=item)


async def test_raw_events_match_by_their_type(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=1)
    await store.append("x-1", [RawEvent(type="Legacy", data={"a": 1})], expected_version=0)
    last = await store.append("x-2", [{"a": 2}], expected_version=0)
    assert await drain(store, "raw", 1, last, event_types=["Legacy"]) == [("x-1", 1)]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"aggregate_types": "order"}, "aggregate_types"),
        ({"aggregate_types": []}, "aggregate_types"),
        ({"event_types": [""]}, "event_types"),
        ({"event_types": [3]}, "event_types"),
    ],
)
async def test_bad_filters_are_refused(
    make_store: StoreFactory, kwargs: dict[str, Any], argument: str
) -> None:
    store = await make_store(feed_shards=1)
    with pytest.raises(InvalidInputError) as refused:
        store.subscribe(f"bad-{uuid.uuid4().hex[:6]}", **kwargs)
    assert refused.value.argument == argument
