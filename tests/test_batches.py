"""append_many commits several aggregates in one transaction; load_many reads many."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from eventstore_async import (
    ANY,
    Append,
    ChangeSetTooLargeError,
    ConcurrencyError,
    EventStore,
    InvalidInputError,
)

from .conftest import StoreFactory
from .domain import OrderPlaced

pytestmark = pytest.mark.anyio


def ids(count: int) -> list[str]:
    token = uuid.uuid4().hex[:8]
    return [f"batch-{token}-{n}" for n in range(count)]


async def test_append_many_commits_every_aggregate(store: EventStore) -> None:
    a, b, c = ids(3)
    await store.append(b, [OrderPlaced("b", 1)], expected_version=0)

    stored = await store.append_many(
        [
            Append(aggregate_id=a, events=[OrderPlaced("a", 1)], expected_version=0),
            Append(aggregate_id=b, events=[OrderPlaced("b", 2)], expected_version=1),
            Append(aggregate_id=c, events=[{"n": 1}], expected_version=ANY, metadata={"m": 1}),
        ]
    )

    assert [(cs.aggregate_id, cs.version) for cs in stored] == [(a, 1), (b, 2), (c, 1)]
    histories = await store.load_many([a, b, c])
    assert [h.version for h in histories.values() if h] == [1, 2, 1]
    assert histories[c] is not None and histories[c].change_sets[0].metadata == {"m": 1}


async def test_a_conflict_writes_nothing_and_names_each_aggregate(store: EventStore) -> None:
    a, b, c = ids(3)
    await store.append(a, [OrderPlaced("a", 1)], expected_version=0)
    await store.append(c, [OrderPlaced("c", 1)], expected_version=0)
    await store.append(c, [OrderPlaced("c", 2)], expected_version=1)

    with pytest.raises(ConcurrencyError) as conflict:
        await store.append_many(
            [
                Append(aggregate_id=a, events=[{"n": 1}], expected_version=0),
                Append(aggregate_id=b, events=[{"n": 1}], expected_version=0),
                Append(aggregate_id=c, events=[{"n": 1}], expected_version=1),
            ]
        )

    found = {(e.aggregate_id, e.expected, e.actual) for e in conflict.value.conflicts}
    assert found == {(a, 0, 1), (c, 1, 2)}
    assert await store.head(b) is None
    assert (await store.load(a)).version == 1
    assert (await store.load(c)).version == 2


async def test_retrying_a_batch_with_its_commit_ids_lands_once(store: EventStore) -> None:
    a, b = ids(2)
    batch = [
        Append(aggregate_id=a, events=[{"n": 1}], expected_version=0, commit_id="ba-1"),
        Append(aggregate_id=b, events=[{"n": 2}], expected_version=ANY, commit_id="bb-1"),
    ]
    first = await store.append_many(batch)
    again = await store.append_many(batch)

    assert again == first
    assert [(await store.load(x)).version for x in (a, b)] == [1, 1]


async def test_batch_shape_is_checked_before_sending(store: EventStore) -> None:
    a, b = ids(2)
    with pytest.raises(InvalidInputError) as twice:
        await store.append_many(
            [
                Append(aggregate_id=a, events=[{"n": 1}], expected_version=0),
                Append(aggregate_id=a, events=[{"n": 2}], expected_version=1),
            ]
        )
    with pytest.raises(InvalidInputError) as too_many:
        await store.append_many(
            [Append(aggregate_id=x, events=[{"n": 1}], expected_version=0) for x in ids(51)]
        )
    with pytest.raises(InvalidInputError) as bad_event:
        await store.append_many(
            [
                Append(aggregate_id=a, events=[{"n": 1}], expected_version=0),
                Append(aggregate_id=b, events=[{"n": 1}, 7], expected_version=0),
            ]
        )
    with pytest.raises(InvalidInputError) as empty:
        await store.append_many([])

    assert twice.value.argument == "appends[1].aggregate_id"
    assert too_many.value.argument == "appends"
    assert bad_event.value.argument == "appends[1].events[1]"
    assert empty.value.argument == "appends"
    assert await store.head(a) is None and await store.head(b) is None


@pytest.mark.parametrize(
    ("events", "problem"),
    [([], "at least one"), ((), "at least one"), ({"n": 1}, "not dict"), (7, "not int")],
)
async def test_every_entry_is_checked_before_any_is_encoded(
    store: EventStore, events: Any, problem: str
) -> None:
    a, b = ids(2)
    encoded: list[int] = []

    def first_events() -> Iterator[dict[str, Any]]:
        encoded.append(1)  # the first entry's events were started (and could be uploaded)
        yield {"blob": "x" * 100_000}

    with pytest.raises(InvalidInputError, match=problem) as refused:
        await store.append_many(
            [
                Append(aggregate_id=a, events=first_events(), expected_version=0),
                Append(aggregate_id=b, events=events, expected_version=0),
            ]
        )

    assert refused.value.argument == "appends[1].events"
    assert encoded == []
    assert await store.head(a) is None


async def test_feed_writes_count_towards_the_action_limit(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=4)
    aggregates = ids(40)  # 80 actions of their own, 40 feed entries and up to 4 counters
    with pytest.raises(InvalidInputError, match=r"needs 12\d DynamoDB actions \(4\d of them"):
        await store.append_many(
            [Append(aggregate_id=x, events=[{"n": 1}], expected_version=0) for x in aggregates]
        )
    assert await store.head(aggregates[0]) is None
    fits = aggregates[:30]  # 60 + 30 + at most 4
    stored = await store.append_many(
        [Append(aggregate_id=x, events=[{"n": 1}], expected_version=0) for x in fits]
    )
    assert [change_set.version for change_set in stored] == [1] * 30
    assert all([await store.head(x) for x in fits])


async def test_transaction_over_four_megabytes_is_refused(make_store: StoreFactory) -> None:
    store = await make_store(bucket_name=None)
    entries = [
        Append(aggregate_id=x, events=[{"blob": "x" * 350_000}], expected_version=0)
        for x in ids(12)
    ]
    with pytest.raises(ChangeSetTooLargeError) as too_large:
        await store.append_many(entries)
    assert too_large.value.limit == 4 * 1024 * 1024
    assert await store.head(entries[0].aggregate_id) is None


async def test_load_many_maps_missing_ids_to_none(store: EventStore) -> None:
    present, missing = ids(2)
    await store.append(present, [OrderPlaced("p", 1)], expected_version=0)
    loaded = await store.load_many([present, missing, present], concurrency=2)
    assert list(loaded) == [present, missing]
    assert loaded[missing] is None
    assert loaded[present] is not None and loaded[present].version == 1
    with pytest.raises(InvalidInputError):
        await store.load_many([present], concurrency=0)


@pytest.mark.parametrize("aggregate_ids", ["abc", b"abc", 7])
async def test_load_many_refuses_a_str_for_its_ids(store: EventStore, aggregate_ids: Any) -> None:
    await store.append("a", [{"n": 1}], expected_version=0)
    with pytest.raises(InvalidInputError) as refused:
        await store.load_many(aggregate_ids)
    assert refused.value.argument == "aggregate_ids"
