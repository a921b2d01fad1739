"""The concurrent catch-up reader: every shard at once, in bounded memory, each shard in
position order."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

from eventstore_async import Append

from .conftest import StoreFactory, backend_of

pytestmark = pytest.mark.anyio

SHARDS = 4
BUFFER = 16
PAGE = 100


class FetchSpy:
    """Counts the change sets read (``get_many`` keys with a version)."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.fetched = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_many(self, keys: list[tuple[str, Any]]) -> list[Any]:
        self.fetched += sum(1 for _, version in keys if version != 0)
        return await self.inner.get_many(keys)  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend_name", ["memory"])  # a bound of the reader's, not the backend's
async def test_reads_ahead_at_most_the_buffer_and_a_page_per_shard(
    make_store: StoreFactory,
) -> None:
    store = await make_store(feed_shards=SHARDS, wrap=FetchSpy)
    for version in range(10):
        batch = [
            Append(aggregate_id=f"a-{n}", events=[{"n": version}], expected_version=version)
            for n in range(200)
        ]
        for start in range(0, 200, 25):
            await store.append_many(batch[start : start + 25])
    spy = backend_of(store)
    assert isinstance(spy, FetchSpy)
    spy.fetched = 0  # count only the subscription's reads
    seen: dict[str, int] = {}
    async with store.subscribe(f"ahead-{uuid.uuid4().hex[:6]}", buffer=BUFFER) as sub:
        consumed = 0
        async for change_set in sub:
            consumed += 1
            assert seen.get(change_set.aggregate_id, 0) == change_set.version - 1  # in order
            seen[change_set.aggregate_id] = change_set.version
            if consumed in (1, 500):  # a slow consumer: the reader runs ahead meanwhile
                with anyio.fail_after(30):
                    while spy.fetched - consumed <= BUFFER:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                await anyio.sleep(0.3)  # more time could only show a larger read-ahead
                assert BUFFER < spy.fetched - consumed <= BUFFER + PAGE * SHARDS
            if consumed == 2000:
                break
    assert seen == dict.fromkeys((f"a-{n}" for n in range(200)), 10)
