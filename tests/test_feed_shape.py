"""The feed's shard count is the table's: recorded once, every store checked against it."""

from __future__ import annotations

import pytest

from eventstore_async import Decider, EventStore, InvalidInputError
from eventstore_async._backends.memory import MemoryBackend
from eventstore_async._records import FeedShapeRecord, schema_partition

from .conftest import StoreFactory, backend_of, in_memory

pytestmark = pytest.mark.anyio


async def recorded(store: EventStore) -> object:
    return await backend_of(store).get(schema_partition(), 0)


def sibling(first: EventStore, feed_shards: int) -> EventStore:
    """Another store on ``first``'s table, with its own feed setting."""
    config = first.config.replace(feed_shards=feed_shards)
    shared = backend_of(first) if isinstance(backend_of(first), MemoryBackend) else None
    return EventStore(config, backend=shared)


async def test_stores_with_another_shard_count_are_refused(make_store: StoreFactory) -> None:
    """The user's case: 4, 0 and 2 shards on one table all appended."""
    four = await make_store(feed_shards=4)
    await four.append("order-4", [{"n": 1}], expected_version=0)
    for shards in (0, 2):
        async with sibling(four, shards) as store:
            with pytest.raises(InvalidInputError) as refused:
                await store.append(f"order-{shards}", [{"n": 1}], expected_version=0)
            assert refused.value.argument == "feed_shards"
            assert "records 4 feed shards" in refused.value.problem
            assert await store.head(f"order-{shards}") is None  # nothing was written
    assert await recorded(four) == FeedShapeRecord(shards=4)


async def test_commands_with_another_shard_count_are_refused(make_store: StoreFactory) -> None:
    """A repository's commands and execute_many write change sets (and feed entries) too:
    on a 0-shard store over a 4-shard table they were stored with no feed entry, so no
    subscription ever delivered them."""
    four = await make_store(feed_shards=4)
    await four.append("order-4", [{"n": 1}], expected_version=0)
    for shards in (0, 2):
        async with sibling(four, shards) as store:
            repository = store.repository(Decider(dict, lambda state, event: state))
            with pytest.raises(InvalidInputError) as refused:
                await repository.execute(f"command-{shards}", lambda state: [{"n": 1}])
            assert refused.value.argument == "feed_shards"
            with pytest.raises(InvalidInputError) as refused:
                await store.execute_many(
                    {f"many-{shards}": lambda state: [{"n": 1}]},
                    deciders=Decider(dict, lambda state, event: state),
                    command_id=f"many-{shards}",
                )
            assert refused.value.argument == "feed_shards"
            for aggregate_id in (f"command-{shards}", f"many-{shards}"):
                assert await store.head(aggregate_id) is None  # nothing was written


async def test_create_schema_records_the_count_and_refuses_another(
    make_store: StoreFactory,
) -> None:
    first = await make_store(feed_shards=3)  # make_store calls create_schema
    assert await recorded(first) == FeedShapeRecord(shards=3)
    with pytest.raises(InvalidInputError) as refused:
        await make_store(feed_shards=5)
    assert refused.value.argument == "feed_shards"


async def test_a_subscription_with_another_count_is_refused(make_store: StoreFactory) -> None:
    first = await make_store(feed_shards=2)
    await first.append("order-1", [{"n": 1}], expected_version=0)
    async with sibling(first, 4) as other:
        with pytest.raises(InvalidInputError) as refused:
            async with other.subscribe("orders"):
                pass
    assert refused.value.argument == "feed_shards"


async def test_a_table_without_a_record_gets_one_on_the_first_append() -> None:
    async with in_memory(feed_shards=2) as store:  # no create_schema call
        assert await recorded(store) is None
        await store.append("order-1", [{"n": 1}], expected_version=0)
        assert await recorded(store) == FeedShapeRecord(shards=2)
