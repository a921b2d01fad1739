"""The contract every backend keeps: append, load, read, head, idempotency, limits."""

from __future__ import annotations

import uuid

import pytest

from eventstore_async import (
    ANY,
    AggregateNotFoundError,
    AggregateTypeMismatchError,
    ChangeSetTooLargeError,
    ConcurrencyError,
    EventStore,
    RawEvent,
    SchemaMissingError,
)

from .conftest import StoreFactory
from .domain import OrderPlaced, OrderShipped

pytestmark = pytest.mark.anyio


def new_id() -> str:
    return f"order-{uuid.uuid4().hex[:10]}"


async def test_append_then_load_returns_the_events_in_order(store: EventStore) -> None:
    aggregate = new_id()
    first = await store.append(
        aggregate,
        [OrderPlaced(sku="a", qty=1), {"note": "plain mapping"}],
        expected_version=0,
        aggregate_type="Order",
        metadata={"user": "u-1", "trace": [1, 2]},
    )
    second = await store.append(aggregate, [OrderShipped(carrier="ups")], expected_version=1)

    history = await store.load(aggregate)

    assert (first.version, second.version) == (1, 2)
    assert history.version == 2
    assert history.head.aggregate_type == "Order"
    assert history.head.event_count == 3
    assert history.head.last_commit_id == second.commit_id
    assert history.head.created_at == first.timestamp
    assert history.head.updated_at == second.timestamp
    assert history.change_sets == (first, second)
    assert history.events == [OrderPlaced("a", 1), {"note": "plain mapping"}, OrderShipped("ups")]
    assert history.change_sets[0].metadata == {"user": "u-1", "trace": [1, 2]}


async def test_head_reports_the_current_version(store: EventStore) -> None:
    aggregate = new_id()
    assert await store.head(aggregate) is None
    for version in range(3):
        await store.append(aggregate, [OrderPlaced("s", version)], expected_version=version)
    head = await store.head(aggregate)
    assert head is not None
    assert (head.version, head.event_count) == (3, 3)


async def test_wrong_expected_version_raises_with_the_actual_version(store: EventStore) -> None:
    aggregate = new_id()
    await store.append(aggregate, [OrderPlaced("a", 1)], expected_version=0)
    await store.append(aggregate, [OrderPlaced("a", 2)], expected_version=1)

    with pytest.raises(ConcurrencyError) as stale:
        await store.append(aggregate, [OrderPlaced("a", 3)], expected_version=1)
    with pytest.raises(ConcurrencyError) as exists:
        await store.append(aggregate, [OrderPlaced("a", 3)], expected_version=0)
    with pytest.raises(ConcurrencyError) as missing:
        await store.append(new_id(), [OrderPlaced("a", 3)], expected_version=4)

    assert (stale.value.expected, stale.value.actual) == (1, 2)
    assert (exists.value.expected, exists.value.actual) == (0, 2)
    assert (missing.value.expected, missing.value.actual) == (4, 0)
    assert stale.value.aggregate_id == aggregate
    assert (await store.load(aggregate)).version == 2


async def test_any_appends_whatever_the_version(store: EventStore) -> None:
    aggregate = new_id()
    versions = [
        (await store.append(aggregate, [OrderPlaced("a", n)], expected_version=ANY)).version
        for n in range(3)
    ]
    assert versions == [1, 2, 3]
    assert [e.qty for e in (await store.load(aggregate)).events] == [0, 1, 2]


async def test_retry_with_the_same_commit_id_returns_the_stored_change_set(
    store: EventStore,
) -> None:
    aggregate = new_id()
    await store.append(aggregate, [OrderPlaced("a", 1)], expected_version=0)
    original = await store.append(
        aggregate, [OrderPlaced("b", 2)], expected_version=1, commit_id="cmd-42"
    )

    retried = await store.append(
        aggregate, [OrderPlaced("b", 2)], expected_version=1, commit_id="cmd-42"
    )
    await store.append(aggregate, [OrderPlaced("c", 3)], expected_version=2)
    retried_later = await store.append(
        aggregate, [OrderPlaced("b", 2)], expected_version=1, commit_id="cmd-42"
    )

    assert retried == original
    assert retried_later == original
    history = await store.load(aggregate)
    assert [cs.commit_id for cs in history.change_sets].count("cmd-42") == 1
    assert history.version == 3


async def test_any_retry_with_the_same_commit_id_never_lands_twice(store: EventStore) -> None:
    aggregate = new_id()
    original = await store.append(
        aggregate, [OrderPlaced("a", 1)], expected_version=ANY, commit_id="once"
    )
    await store.append(aggregate, [OrderPlaced("b", 2)], expected_version=ANY)
    retried = await store.append(
        aggregate, [OrderPlaced("a", 1)], expected_version=ANY, commit_id="once"
    )

    assert retried == original
    history = await store.load(aggregate)
    assert history.version == 2
    assert [cs.commit_id for cs in history.change_sets].count("once") == 1


async def test_aggregate_type_is_kept_and_checked(store: EventStore) -> None:
    aggregate = new_id()
    await store.append(aggregate, [OrderPlaced("a", 1)], expected_version=0, aggregate_type="Order")
    await store.append(aggregate, [OrderPlaced("a", 2)], expected_version=1, aggregate_type="Order")
    await store.append(aggregate, [OrderPlaced("a", 3)], expected_version=2)

    with pytest.raises(AggregateTypeMismatchError) as mismatch:
        await store.append(aggregate, [OrderPlaced("a", 4)], expected_version=3, aggregate_type="X")

    assert mismatch.value.stored_type == "Order"
    head = await store.head(aggregate)
    assert head is not None
    assert (head.version, head.aggregate_type) == (3, "Order")


async def test_load_and_read_version_ranges(store: EventStore) -> None:
    aggregate = new_id()
    for version in range(6):
        await store.append(aggregate, [OrderPlaced("s", version + 1)], expected_version=version)

    middle = await store.load(aggregate, from_version=2, to_version=4)
    tail = await store.load(aggregate, from_version=5)
    head_only = await store.load(aggregate, to_version=2)
    past_end = await store.load(aggregate, from_version=9)
    streamed = [cs.version async for cs in store.read(aggregate, from_version=3)]

    assert [cs.version for cs in middle.change_sets] == [2, 3, 4]
    assert middle.version == 6
    assert [cs.version for cs in tail.change_sets] == [5, 6]
    assert [cs.version for cs in head_only.change_sets] == [1, 2]
    assert past_end.change_sets == ()
    assert streamed == [3, 4, 5, 6]


async def test_missing_aggregate(store: EventStore) -> None:
    with pytest.raises(AggregateNotFoundError):
        await store.load(new_id())
    with pytest.raises(AggregateNotFoundError):
        await store.load(new_id(), from_version=3)
    assert [cs async for cs in store.read(new_id())] == []


async def test_every_page_is_followed(make_store: StoreFactory) -> None:
    store = await make_store(page_size=2)
    aggregate = new_id()
    for version in range(7):
        await store.append(aggregate, [OrderPlaced("s", version)], expected_version=version)

    history = await store.load(aggregate)
    ranged = await store.load(aggregate, from_version=2, to_version=6)
    streamed = [cs.version async for cs in store.read(aggregate)]

    assert [cs.version for cs in history.change_sets] == list(range(1, 8))
    assert [cs.version for cs in ranged.change_sets] == list(range(2, 7))
    assert streamed == list(range(1, 8))


async def test_history_larger_than_one_megabyte_page(store: EventStore) -> None:
    aggregate = new_id()
    blob = "x" * 150_000
    count = 9  # about 1.35 MB of change sets: DynamoDB returns it in two pages
    for version in range(count):
        await store.append(aggregate, [{"blob": blob, "n": version}], expected_version=version)

    history = await store.load(aggregate)
    streamed = [cs.version async for cs in store.read(aggregate)]

    assert [event["n"] for event in history.events] == list(range(count))
    assert streamed == list(range(1, count + 1))


async def test_oversized_change_set_without_a_bucket_is_refused_before_anything_is_written(
    make_store: StoreFactory,
) -> None:
    store = await make_store(bucket_name=None)
    aggregate = new_id()
    with pytest.raises(ChangeSetTooLargeError) as too_large:
        await store.append(aggregate, [{"blob": "x" * 500_000}], expected_version=0)
    assert too_large.value.size > too_large.value.limit
    assert await store.head(aggregate) is None


async def test_unregistered_types_load_as_raw_events(make_store: StoreFactory) -> None:
    writer = await make_store()
    reader = await make_store(types=())
    aggregate = new_id()
    await writer.append(aggregate, [OrderShipped("dhl"), {"k": 1}], expected_version=0)

    events = (await reader.load(aggregate)).events

    assert events == [
        RawEvent(type="shipped", data={"type": "shipped", "carrier": "dhl"}),
        {"k": 1},
    ]


async def test_create_schema_is_idempotent(store: EventStore) -> None:
    await store.create_schema()
    await store.create_schema()
    aggregate = new_id()
    await store.append(aggregate, [OrderPlaced("a", 1)], expected_version=0)
    assert (await store.load(aggregate)).version == 1


async def test_dropped_schema_raises_schema_missing(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.drop_schema()
    with pytest.raises(SchemaMissingError):
        await store.append(new_id(), [OrderPlaced("a", 1)], expected_version=0)
    with pytest.raises(SchemaMissingError):
        await store.load(new_id())
    await store.create_schema()  # for the fixture's teardown
