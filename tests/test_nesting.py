"""Deeply nested values are refused before anything is written, and what is accepted
loads back from any reasonable stack."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from eventstore_async import Append, EventStore, InvalidInputError
from eventstore_async._nesting import MAX_NESTING

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio

#: Frames a caller may already be deep in when it loads (a web framework, middleware,
#: the application's own calls: well past what any of them takes).
CALLER_FRAMES = 500


def nested(depth: int) -> Any:
    """A value ``depth`` containers deep (lists and maps in turn)."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"in": value}
    return value


def event_of_depth(depth: int) -> dict[str, Any]:
    """An event (a mapping: one level) nesting ``depth`` containers, itself included."""
    return {"deep": nested(depth - 1)}


class Deep(msgspec.Struct, tag="nesting.Deep"):
    body: Any


async def at_depth(frames: int, call: Any) -> Any:
    """Await ``call()`` from ``frames`` coroutine frames deeper than here."""
    if frames == 0:
        return await call()
    return await at_depth(frames - 1, call)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 978, 979, 1000, 5000])
async def test_events_nested_deeper_than_the_limit_are_refused(
    store: EventStore, depth: int
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        await store.append("deep-1", [{"n": 1}, event_of_depth(depth)], expected_version=0)

    assert refused.value.argument == "events[1]"
    assert str(MAX_NESTING) in refused.value.problem
    assert await store.head("deep-1") is None


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 1000])
async def test_metadata_nested_deeper_than_the_limit_is_refused(
    store: EventStore, depth: int
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        await store.append(
            "deep-2", [{"n": 1}], expected_version=0, metadata={"deep": nested(depth - 1)}
        )

    assert refused.value.argument == "metadata"
    assert await store.head("deep-2") is None


async def test_struct_fields_and_batches_are_checked_too(store: EventStore) -> None:
    with pytest.raises(InvalidInputError) as refused:
        await store.append_many(
            [
                Append(aggregate_id="deep-3", events=[{"n": 1}], expected_version=0),
                Append(
                    aggregate_id="deep-4",
                    events=[Deep(body=nested(MAX_NESTING))],
                    expected_version=0,
                ),
            ]
        )

    assert refused.value.argument == "appends[1].events[0]"
    assert await store.head("deep-3") is None


async def test_a_value_that_holds_itself_is_refused(store: EventStore) -> None:
    loop: list[Any] = []
    loop.extend([loop, loop])
    with pytest.raises(InvalidInputError):
        await store.append("deep-5", [{"loop": loop}], expected_version=0)


async def test_the_deepest_accepted_values_load_from_a_deep_caller(
    make_store: StoreFactory,
) -> None:
    store = await make_store(types=(Deep,), offload_threshold_bytes=1024)
    events = [event_of_depth(MAX_NESTING), Deep(body=nested(MAX_NESTING - 1))]
    metadata = {"deep": nested(MAX_NESTING - 1)}
    await at_depth(
        CALLER_FRAMES,
        lambda: store.append("deep-6", events, expected_version=0, metadata=metadata),
    )
    big = [event_of_depth(MAX_NESTING) | {"pad": "x" * 2000}]  # offloaded to S3
    await store.append("deep-6", big, expected_version=1)
    await store.save_snapshot("deep-6", 2, event_of_depth(MAX_NESTING), schema="s")

    history = await at_depth(CALLER_FRAMES, lambda: store.load("deep-6"))
    from_snapshot = await at_depth(CALLER_FRAMES, lambda: store.load("deep-6", snapshot_schema="s"))

    assert list(history.change_sets[0].events) == events
    assert history.change_sets[0].metadata == metadata
    assert list(history.change_sets[1].events) == big
    assert from_snapshot.snapshot is not None
    assert from_snapshot.snapshot.state == event_of_depth(MAX_NESTING)
