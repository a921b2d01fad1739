"""The in-memory backend refuses the transactions DynamoDB refuses before any condition.

DynamoDB answers ``ValidationException`` (a :class:`StorageError` with that code) to a
``TransactWriteItems`` with no actions or more than 100, or with two actions on one item.
Each case runs on both backends, so the memory backend cannot drift from DynamoDB and
the store cannot build such a plan unnoticed in the fast unit tests.
"""

from __future__ import annotations

import uuid

import pytest

from eventstore_async import EventStore, StorageError
from eventstore_async._records import (
    CommitPlan,
    CommitRejected,
    DeleteView,
    LeaseWrite,
    PutView,
    ViewRecord,
    Write,
    view_partition,
)

from .conftest import StoreFactory, backend_of, in_memory

pytestmark = pytest.mark.anyio

VIEW = "limits"


def put(key: str) -> PutView:
    return PutView(ViewRecord(VIEW, key, b"[]"))


def plan(*writes: Write) -> CommitPlan:
    return CommitPlan(writes=writes, token=uuid.uuid4().hex)


async def refused_as_invalid(store: EventStore, refused: CommitPlan) -> StorageError:
    with pytest.raises(StorageError) as raised:
        await backend_of(store).commit(refused)
    assert raised.value.code == "ValidationException"
    assert raised.value.operation == "TransactWriteItems"
    return raised.value


async def stored(store: EventStore, key: str) -> bool:
    return await backend_of(store).get(view_partition(VIEW, key), 0) is not None


async def test_more_than_100_writes_are_refused(store: EventStore) -> None:
    await refused_as_invalid(store, plan(*(put(f"k{n}") for n in range(101))))
    assert not await stored(store, "k0")
    await backend_of(store).commit(plan(*(put(f"k{n}") for n in range(100))))
    assert await stored(store, "k99")


async def test_two_writes_to_one_item_are_refused(store: EventStore) -> None:
    await refused_as_invalid(store, plan(put("a"), put("k"), DeleteView(VIEW, "k")))
    await refused_as_invalid(store, plan(DeleteView(VIEW, "k"), DeleteView(VIEW, "k")))
    assert not await stored(store, "a")
    await backend_of(store).commit(plan(put("a"), put("k")))
    assert await stored(store, "k")


async def test_validation_comes_before_conditions(make_store: StoreFactory) -> None:
    store = await make_store()
    name = f"sub-{uuid.uuid4().hex[:8]}"
    held = LeaseWrite(name, "holder", 2**62, 0, ())
    await backend_of(store).commit(plan(held))
    taken = LeaseWrite(name, "other", 2**62, 1, ())
    with pytest.raises(CommitRejected):  # alone, its condition fails
        await backend_of(store).commit(plan(taken))
    await refused_as_invalid(store, plan(taken, put("k"), put("k")))


async def test_an_empty_plan_is_refused_in_memory() -> None:
    # DynamoDB refuses it too (length 1 to 100); the emulator (moto) lets it through.
    async with in_memory() as store:
        await refused_as_invalid(store, plan())
