"""A commit id names one change set: a retry with other events is refused, not answered
with the stored change set as if the caller's events were stored."""

from __future__ import annotations

from typing import Any

import pytest

from eventstore_async import ANY, Append, EventStore, IdempotencyMismatchError

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio

THRESHOLD = 4096


def big(tag: str) -> list[dict[str, Any]]:
    return [{"tag": tag, "blob": tag.encode() * 3000}]


async def aiter_of(events: list[dict[str, Any]]) -> Any:
    for event in events:
        yield event


@pytest.mark.parametrize("expected", [0, ANY], ids=["explicit", "any"])
async def test_a_retry_with_other_events_names_the_commit_id(
    store: EventStore, expected: Any
) -> None:
    first = await store.append("order-1", [{"n": 1}], expected_version=expected, commit_id="c-1")

    with pytest.raises(IdempotencyMismatchError) as reused:
        await store.append("order-1", [{"n": 2}], expected_version=expected, commit_id="c-1")

    assert reused.value.commit_id == "c-1"
    assert reused.value.aggregate_id == "order-1"
    assert "c-1" in str(reused.value)
    history = await store.load("order-1")
    assert [cs.events for cs in history.change_sets] == [first.events]


async def test_a_retry_with_the_same_events_in_another_form_returns_the_change_set(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    small = await store.append("order-2", [{"n": 1}], expected_version=0, commit_id="c-2")
    again = await store.append("order-2", aiter_of([{"n": 1}]), expected_version=0, commit_id="c-2")
    offloaded = await store.append("order-2", big("a"), expected_version=1, commit_id="c-3")
    retried = await store.append("order-2", aiter_of(big("a")), expected_version=1, commit_id="c-3")

    assert (again.version, again.commit_id) == (small.version, "c-2")
    assert (retried.version, retried.commit_id) == (offloaded.version, "c-3")
    with pytest.raises(IdempotencyMismatchError):
        await store.append("order-2", big("b"), expected_version=1, commit_id="c-3")


async def test_a_batch_retry_with_other_events_is_refused(store: EventStore) -> None:
    def batch(n: int) -> list[Append]:
        return [
            Append(aggregate_id="a-1", events=[{"n": 1}], expected_version=0, commit_id="b-1"),
            Append(aggregate_id="a-2", events=[{"n": n}], expected_version=0, commit_id="b-2"),
        ]

    await store.append_many(batch(1))
    with pytest.raises(IdempotencyMismatchError) as reused:
        await store.append_many(batch(2))

    assert reused.value.commit_id == "b-2"
