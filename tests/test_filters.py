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
from eventstore_async._feed.groups import shard_name
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


class EmptyScans:
    """A backend wrapper that counts the feed scans from ``low`` on that found nothing."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.low = 0
        self.empty = 0
        self._scanned = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def scan_partition(self, partition: str, low: Any, limit: int) -> list[Any]:
        found = await self.inner.scan_partition(partition, low, limit)
        if partition == feed_partition(0) and self.low and low >= self.low and not found:
            self.empty += 1
            self._scanned.set()
        return found  # type: ignore[no-any-return]

    async def wait_empty(self, low: int, scans: int) -> None:
        """Wait for ``scans`` scans from ``low`` on that found nothing."""
        self.low, self.empty = low, 0
        while self.empty < scans:
            self._scanned = anyio.Event()
            await self._scanned.wait()


async def saved_position(store: EventStore, name: str, mode: str) -> int:
    item = shard_name(name, 0) if mode == "shared" else name
    return (await saved_positions(store, item))[0]


@pytest.mark.parametrize("mode", ["exclusive", "shared"])
async def test_a_delivered_change_set_not_yet_saved_holds_the_checkpoint_before_skipped_ones(
    make_store: StoreFactory, mode: str
) -> None:
    """At the head after skipped entries the checkpoint moves past them by itself, but
    never past a change set delivered and not yet saved (a consumer that saves in
    batches still gets it again after a crash)."""
    store = await make_store(feed_shards=1, wrap=EmptyScans)
    spy = backend_of(store)
    assert isinstance(spy, EmptyScans)
    name = f"held-{uuid.uuid4().hex[:6]}"
    polls: dict[str, Any] = {"poll_interval": 0.01, "max_poll_interval": 0.05}
    subscription = store.subscribe(name, mode=mode, aggregate_types=["order"], **polls)  # type: ignore[arg-type]
    with anyio.fail_after(60):
        async with subscription as sub:
            await store.append("order-1", [placed()], expected_version=0, aggregate_type="order")
            assert (await anext(aiter(sub))).aggregate_id == "order-1"  # at 1, not saved
            await store.append("cust-1", [{"n": 1}], expected_version=0, aggregate_type="cust")
            # Four empty polls after the skipped entry (at 2): the first one's news of the
            # head is queued for the consumer (the reader hands on one poll at a time).
            await spy.wait_empty(3, 4)
            await store.append("order-2", [placed()], expected_version=0, aggregate_type="order")
            assert (await anext(aiter(sub))).aggregate_id == "order-2"  # after that news
            assert await saved_position(store, name, mode) == 0  # order-1 still unsaved
            await sub.checkpoint()
            skipped = await store.append(
                "cust-2", [{"n": 1}], expected_version=0, aggregate_type="cust"
            )
            async with anyio.create_task_group() as group:  # the consumer waits for more
                group.start_soon(anext, aiter(sub))
                await store.wait_for(name, skipped, timeout=30)  # all saved: it moves past
                group.cancel_scope.cancel()
    assert await saved_position(store, name, mode) == 4
