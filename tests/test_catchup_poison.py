"""A change set that does not decode, met by the read-ahead of catch-up: the healthy
change sets before it in its shard are all delivered (and can be projected and
checkpointed) before the error, which comes at the poison's turn in feed order."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import msgspec
import pytest

from eventstore_async import Append, ChangeSet, EventStore, IntegrityError

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio

#: Healthy change sets before the poison: a page (100) and half of the next.
HEALTHY = 150
POISON = "poison-cart"


class PriceSet(msgspec.Struct, tag="PriceSet", frozen=True):
    sku: str
    cents: int


class StrictPriceSet(msgspec.Struct, tag="PriceSet", frozen=True):
    sku: str
    cents: str  # the stored bodies hold ints: undecodable


class PoisonReached:
    """A backend wrapper that says when the poison change set has been read."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.reached = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_many(self, keys: list[tuple[str, Any]]) -> list[Any]:
        found = await self.inner.get_many(keys)
        if any(key == POISON and version != 0 for key, version in keys):
            self.reached.set()
        return found  # type: ignore[no-any-return]


async def poisoned_feed(make_store: StoreFactory) -> tuple[EventStore, PoisonReached, ChangeSet]:
    """HEALTHY change sets, the poison, one more healthy one, all in the one shard; the
    store that reads them (for which the poison does not decode), its backend wrapper
    and the last healthy change set before the poison."""
    writer = await make_store(types=(PriceSet,), feed_shards=1)
    batch = [
        Append(aggregate_id=f"a-{n}", events=[{"n": n}], expected_version=0) for n in range(HEALTHY)
    ]
    last: ChangeSet | None = None
    for start in range(0, HEALTHY, 25):
        last = (await writer.append_many(batch[start : start + 25]))[-1]
    await writer.append(POISON, [PriceSet(sku="x", cents=1)], expected_version=0)
    await writer.append("after", [{"n": -1}], expected_version=0)
    wrappers: list[PoisonReached] = []

    def wrap(backend: Any) -> Any:
        wrappers.append(PoisonReached(backend))
        return wrappers[0]

    reader = await make_store(types=(StrictPriceSet,), feed_shards=1, wrap=wrap)
    assert last is not None
    return reader, wrappers[0], last


@pytest.mark.parametrize("mode", ["exclusive", "shared"])
async def test_healthy_change_sets_before_a_poison_one_come_first(
    make_store: StoreFactory, mode: str
) -> None:
    store, spy, last_healthy = await poisoned_feed(make_store)
    name = f"poison-{uuid.uuid4().hex[:6]}"
    got: list[str] = []
    with anyio.fail_after(60):
        async with store.subscribe(name, mode=mode, on_undecodable="raise") as sub:  # type: ignore[arg-type]
            await spy.reached.wait()  # the read-ahead has met the poison: nothing consumed yet
            with pytest.raises(IntegrityError) as failed:
                async for change_set in sub:
                    got.append(change_set.aggregate_id)
                    await sub.project("seen", put={change_set.aggregate_id: {"n": len(got)}})
    assert POISON in str(failed.value)
    assert got == [f"a-{n}" for n in range(HEALTHY)]  # all of them, in feed order
    assert await store.get_view("seen", f"a-{HEALTHY - 1}") == {"n": HEALTHY}
    with anyio.fail_after(30):
        await store.wait_for(name, last_healthy, timeout=30)  # checkpointed up to it
        async with store.subscribe(name, mode=mode) as sub:  # type: ignore[arg-type]
            with pytest.raises(IntegrityError):  # at once: the poison is next
                await anext(aiter(sub))
