"""Bad input is refused before anything is written, through the public API.

Every refusal is an ``InvalidInputError`` whose ``argument`` names the parameter, and
the store is unchanged afterwards: the seeded aggregate keeps its version and events,
and the backend never saw a commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

import eventstore_async._backends.memory as memory
from eventstore_async import (
    ANY,
    AggregateNotFoundError,
    ConcurrencyError,
    EventStore,
    InvalidInputError,
    StoreClosedError,
)

SEED = "order-1"
SEED_EVENTS = [{"n": 1}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Anything(msgspec.Struct):
    value: Any


class Placed(msgspec.Struct, tag="placed"):
    sku: str


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every plan the in-memory backend is asked to commit."""
    seen: list[object] = []
    original = memory.MemoryBackend.commit

    async def spy(self: memory.MemoryBackend, plan: object) -> None:
        seen.append(plan)
        await original(self, plan)  # type: ignore[arg-type]

    monkeypatch.setattr(memory.MemoryBackend, "commit", spy)
    return seen


@pytest.fixture
async def store(commits: list[object]) -> AsyncIterator[EventStore]:
    """An open in-memory store holding SEED at version 1; ``commits`` starts empty."""
    async with EventStore.in_memory() as opened:
        await opened.append(SEED, SEED_EVENTS, expected_version=0)
        commits.clear()
        yield opened


async def _assert_untouched(store: EventStore, commits: list[object]) -> None:
    assert commits == [], "a commit was sent for a refused append"
    head = await store.head(SEED)
    assert head is not None
    assert head.version == 1
    assert head.event_count == 1
    history = await store.load(SEED)
    assert history.events == SEED_EVENTS


def _empty_generator() -> Iterator[Any]:
    yield from ()


# (changes to a valid append of SEED at expected version 1, the argument named)
BAD_APPENDS: list[tuple[str, dict[str, Any], str]] = [
    # aggregate_id
    ("id-empty", {"aggregate_id": ""}, "aggregate_id"),
    ("id-int", {"aggregate_id": 1}, "aggregate_id"),
    ("id-none", {"aggregate_id": None}, "aggregate_id"),
    ("id-bytes", {"aggregate_id": b"order-1"}, "aggregate_id"),
    ("id-513-bytes", {"aggregate_id": "a" * 513}, "aggregate_id"),
    ("id-257-two-byte-chars", {"aggregate_id": "é" * 257}, "aggregate_id"),
    ("id-171-three-byte-chars", {"aggregate_id": "€" * 171}, "aggregate_id"),
    ("id-nul", {"aggregate_id": "order\x001"}, "aggregate_id"),
    ("id-newline", {"aggregate_id": "order\n1"}, "aggregate_id"),
    ("id-trailing-newline", {"aggregate_id": "order-1\n"}, "aggregate_id"),
    ("id-tab", {"aggregate_id": "order\t1"}, "aggregate_id"),
    ("id-del", {"aggregate_id": "order\x7f1"}, "aggregate_id"),
    ("id-nel", {"aggregate_id": "order\x851"}, "aggregate_id"),
    ("id-lone-high-surrogate", {"aggregate_id": "order\ud8001"}, "aggregate_id"),
    ("id-lone-low-surrogate", {"aggregate_id": "\udfff"}, "aggregate_id"),
    # events
    ("events-empty-list", {"events": []}, "events"),
    ("events-empty-tuple", {"events": ()}, "events"),
    ("events-str", {"events": "OrderPlaced"}, "events"),
    ("events-bytes", {"events": b"\x01"}, "events"),
    ("events-dict", {"events": {"n": 2}}, "events"),
    ("events-empty-generator", {"events": _empty_generator()}, "events"),
    ("events-none", {"events": None}, "events"),
    ("events-int", {"events": 3}, "events"),
    ("events-element-int", {"events": [1]}, "events[0]"),
    ("events-second-element-int", {"events": [{"n": 2}, 7]}, "events[1]"),
    ("events-element-str", {"events": [{"n": 2}, {"n": 3}, "x"]}, "events[2]"),
    ("events-element-list", {"events": [[("n", 2)]]}, "events[0]"),
    ("events-non-str-keys", {"events": [{1: "a"}]}, "events[0]"),
    ("events-tuple-key", {"events": [{"n": 2}, {("a",): 1}]}, "events[1]"),
    ("events-struct-object", {"events": [Anything(object())]}, "events[0]"),
    ("events-struct-huge-int", {"events": [{"n": 2}, Anything(2**64)]}, "events[1]"),
    ("events-struct-negative-int", {"events": [Anything(1), Anything(-(2**63) - 1)]}, "events[1]"),
    ("events-mapping-object", {"events": [{"n": 2}, {"n": 3}, {"x": object()}]}, "events[2]"),
    ("events-mapping-complex", {"events": [{"x": 1j}]}, "events[0]"),
    # expected_version
    ("expected-negative", {"expected_version": -1}, "expected_version"),
    ("expected-float", {"expected_version": 1.0}, "expected_version"),
    ("expected-str", {"expected_version": "1"}, "expected_version"),
    ("expected-true", {"expected_version": True}, "expected_version"),
    ("expected-false", {"expected_version": False}, "expected_version"),
    ("expected-none", {"expected_version": None}, "expected_version"),
    ("expected-2-60", {"expected_version": 2**60}, "expected_version"),
    ("expected-any-class", {"expected_version": type(ANY)}, "expected_version"),
    # aggregate_type
    ("type-empty", {"aggregate_type": ""}, "aggregate_type"),
    ("type-300-chars", {"aggregate_type": "T" * 300}, "aggregate_type"),
    ("type-control-char", {"aggregate_type": "Order\x00"}, "aggregate_type"),
    ("type-newline", {"aggregate_type": "Order\n"}, "aggregate_type"),
    ("type-int", {"aggregate_type": 5}, "aggregate_type"),
    ("type-class", {"aggregate_type": Placed}, "aggregate_type"),
    # metadata
    ("metadata-list", {"metadata": [("a", 1)]}, "metadata"),
    ("metadata-str", {"metadata": "user=1"}, "metadata"),
    ("metadata-int", {"metadata": 1}, "metadata"),
    ("metadata-int-key", {"metadata": {1: "a"}}, "metadata"),
    ("metadata-object-value", {"metadata": {"a": object()}}, "metadata"),
    ("metadata-huge-int", {"metadata": {"a": 2**70}}, "metadata"),
    # commit_id
    ("commit-empty", {"commit_id": ""}, "commit_id"),
    ("commit-200-chars", {"commit_id": "c" * 200}, "commit_id"),
    ("commit-space", {"commit_id": "commit 1"}, "commit_id"),
    ("commit-newline-inside", {"commit_id": "commit\n1"}, "commit_id"),
    ("commit-non-ascii", {"commit_id": "commité"}, "commit_id"),
    ("commit-int", {"commit_id": 1}, "commit_id"),
    ("commit-bytes", {"commit_id": b"abc"}, "commit_id"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("changes", "argument"),
    [(changes, argument) for _, changes, argument in BAD_APPENDS],
    ids=[name for name, _, _ in BAD_APPENDS],
)
async def test_bad_append_is_refused_and_writes_nothing(
    store: EventStore, commits: list[object], changes: dict[str, Any], argument: str
) -> None:
    call: dict[str, Any] = {"aggregate_id": SEED, "events": [{"n": 2}], "expected_version": 1}
    call.update(changes)
    with pytest.raises(InvalidInputError) as caught:
        await store.append(call.pop("aggregate_id"), call.pop("events"), **call)
    assert caught.value.argument == argument
    assert str(caught.value).startswith(f"{argument}: ")
    await _assert_untouched(store, commits)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"events": []}, "events"),
        ({"events": [1]}, "events[0]"),
        ({"aggregate_type": ""}, "aggregate_type"),
        ({"metadata": {1: 2}}, "metadata"),
        ({"commit_id": "a b"}, "commit_id"),
    ],
)
async def test_bad_append_of_a_new_aggregate_creates_nothing(
    store: EventStore, commits: list[object], changes: dict[str, Any], argument: str
) -> None:
    call: dict[str, Any] = {"events": [{"n": 1}], "expected_version": 0}
    call.update(changes)
    with pytest.raises(InvalidInputError) as caught:
        await store.append("order-2", call.pop("events"), **call)
    assert caught.value.argument == argument
    assert await store.head("order-2") is None
    assert [cs async for cs in store.read("order-2")] == []
    await _assert_untouched(store, commits)


@pytest.mark.anyio
async def test_bad_append_with_any_version_writes_nothing(
    store: EventStore, commits: list[object]
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await store.append(SEED, [{"n": 2}, Anything(object())], expected_version=ANY)
    assert caught.value.argument == "events[1]"
    await _assert_untouched(store, commits)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "aggregate_id",
    ["a" * 512, "é" * 256, "€" * 170 + "ab", "𝄞" * 128, "订单-1", "order 1/2:3", " "],
    ids=["512-ascii", "512-two-byte", "512-three-byte", "512-four-byte", "cjk", "punct", "space"],
)
async def test_acceptable_aggregate_ids(store: EventStore, aggregate_id: str) -> None:
    change_set = await store.append(aggregate_id, [{"n": 1}], expected_version=0)
    assert change_set.aggregate_id == aggregate_id
    head = await store.head(aggregate_id)
    assert head is not None
    assert head.version == 1
    assert (await store.load(aggregate_id)).events == [{"n": 1}]


@pytest.mark.anyio
async def test_events_may_be_a_non_empty_generator_or_tuple(store: EventStore) -> None:
    await store.append(SEED, (e for e in [{"n": 2}, {"n": 3}]), expected_version=1)
    await store.append(SEED, ({"n": 4},), expected_version=2)
    assert (await store.load(SEED)).events == [{"n": n} for n in range(1, 5)]


@pytest.mark.anyio
async def test_boundary_lengths_are_accepted(store: EventStore) -> None:
    change_set = await store.append(
        SEED, [{"n": 2}], expected_version=1, aggregate_type="T" * 256, commit_id="c" * 128
    )
    assert change_set.commit_id == "c" * 128
    head = await store.head(SEED)
    assert head is not None
    assert head.aggregate_type == "T" * 256
    assert head.last_commit_id == "c" * 128


@pytest.mark.anyio
async def test_commit_id_with_trailing_newline_is_refused(
    store: EventStore, commits: list[object]
) -> None:
    with pytest.raises(InvalidInputError):
        await store.append(SEED, [{"n": 2}], expected_version=1, commit_id="abc\n")
    await _assert_untouched(store, commits)


@pytest.mark.anyio
async def test_struct_whose_type_name_is_taken_names_the_event(store: EventStore) -> None:
    def make() -> type[msgspec.Struct]:
        class Renamed(msgspec.Struct):
            n: int

        return Renamed

    first, second = make(), make()
    store.register(first)  # appending does not register: the name is taken by registering
    await store.append("order-2", [first(n=1)], expected_version=0)
    with pytest.raises(InvalidInputError) as caught:
        await store.append("order-2", [{"n": 2}, second(n=2)], expected_version=1)
    assert caught.value.argument == "events[1]"


# -- reads ------------------------------------------------------------------------------

BAD_RANGES: list[tuple[dict[str, Any], str]] = [
    ({"from_version": 0}, "from_version"),
    ({"from_version": -1}, "from_version"),
    ({"from_version": "1"}, "from_version"),
    ({"from_version": 1.0}, "from_version"),
    ({"from_version": True}, "from_version"),
    ({"from_version": None}, "from_version"),
    ({"from_version": 2**60}, "from_version"),
    ({"to_version": 0}, "to_version"),
    ({"to_version": "2"}, "to_version"),
    ({"to_version": 2.0}, "to_version"),
    ({"from_version": 3, "to_version": 2}, "to_version"),
    ({"from_version": 2, "to_version": 1}, "to_version"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("kwargs", "argument"), BAD_RANGES)
async def test_load_refuses_bad_ranges(
    store: EventStore, kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await store.load(SEED, **kwargs)
    assert caught.value.argument == argument


@pytest.mark.anyio
@pytest.mark.parametrize(("kwargs", "argument"), BAD_RANGES)
async def test_read_refuses_bad_ranges(
    store: EventStore, kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        async for _ in store.read(SEED, **kwargs):
            pytest.fail("read yielded despite a bad range")
    assert caught.value.argument == argument


@pytest.mark.anyio
@pytest.mark.parametrize("aggregate_id", ["", 7, None, "a\x00", "x" * 513, "\ud800"], ids=repr)
async def test_reads_refuse_bad_ids(store: EventStore, aggregate_id: Any) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await store.load(aggregate_id)
    assert caught.value.argument == "aggregate_id"
    with pytest.raises(InvalidInputError) as caught:
        await store.head(aggregate_id)
    assert caught.value.argument == "aggregate_id"
    with pytest.raises(InvalidInputError) as caught:
        async for _ in store.read(aggregate_id):
            pytest.fail("read yielded for a bad id")
    assert caught.value.argument == "aggregate_id"


@pytest.mark.anyio
async def test_equal_from_and_to_version_is_a_valid_range(store: EventStore) -> None:
    await store.append(SEED, [{"n": 2}], expected_version=1)
    history = await store.load(SEED, from_version=2, to_version=2)
    assert [cs.version for cs in history.change_sets] == [2]
    assert [cs.version async for cs in store.read(SEED, from_version=1, to_version=1)] == [1]


# -- concurrency and missing aggregates -------------------------------------------------


@pytest.mark.anyio
async def test_expected_zero_on_existing_aggregate(
    store: EventStore, commits: list[object]
) -> None:
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(SEED, [{"n": 2}], expected_version=0)
    error = caught.value
    assert (error.aggregate_id, error.expected, error.actual) == (SEED, 0, 1)
    assert len(commits) == 1  # refused by the backend, not retried
    commits.clear()
    await _assert_untouched(store, commits)


@pytest.mark.anyio
async def test_expected_ahead_of_the_aggregate(store: EventStore) -> None:
    await store.append(SEED, [{"n": 2}], expected_version=1)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(SEED, [{"n": 3}], expected_version=5)
    error = caught.value
    assert (error.aggregate_id, error.expected, error.actual) == (SEED, 5, 2)
    assert (await store.load(SEED)).version == 2


@pytest.mark.anyio
async def test_expected_behind_the_aggregate(store: EventStore) -> None:
    await store.append(SEED, [{"n": 2}], expected_version=1)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(SEED, [{"n": 3}], expected_version=1)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert (await store.load(SEED)).events == [{"n": 1}, {"n": 2}]


@pytest.mark.anyio
async def test_expected_version_on_missing_aggregate(store: EventStore) -> None:
    with pytest.raises(ConcurrencyError) as caught:
        await store.append("order-2", [{"n": 1}], expected_version=3)
    assert (caught.value.aggregate_id, caught.value.expected, caught.value.actual) == (
        "order-2",
        3,
        0,
    )
    assert await store.head("order-2") is None


@pytest.mark.anyio
@pytest.mark.parametrize("from_version", [1, 2])
async def test_load_of_missing_aggregate(store: EventStore, from_version: int) -> None:
    with pytest.raises(AggregateNotFoundError) as caught:
        await store.load("order-404", from_version=from_version)
    assert caught.value.aggregate_id == "order-404"
    assert isinstance(caught.value, LookupError)


@pytest.mark.anyio
async def test_read_of_missing_aggregate_yields_nothing(store: EventStore) -> None:
    assert [cs async for cs in store.read("order-404")] == []
    assert [cs async for cs in store.read("order-404", from_version=3, to_version=9)] == []


@pytest.mark.anyio
async def test_head_of_missing_aggregate_is_none(store: EventStore) -> None:
    assert await store.head("order-404") is None


# -- lifecycle --------------------------------------------------------------------------


async def _use(store: EventStore, operation: str) -> None:
    if operation == "append":
        await store.append(SEED, [{"n": 1}], expected_version=0)
    elif operation == "load":
        await store.load(SEED)
    elif operation == "head":
        await store.head(SEED)
    elif operation == "read":
        async for _ in store.read(SEED):
            pass
    elif operation == "create_schema":
        await store.create_schema()
    else:
        assert operation == "drop_schema"
        await store.drop_schema()


OPERATIONS = ["append", "load", "head", "read", "create_schema", "drop_schema"]


@pytest.mark.anyio
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_use_before_open_raises(operation: str) -> None:
    store = EventStore.in_memory()
    with pytest.raises(StoreClosedError):
        await _use(store, operation)
    await store.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_use_after_aclose_raises(operation: str) -> None:
    store = EventStore.in_memory()
    async with store:
        await store.append(SEED, [{"n": 1}], expected_version=0)
    with pytest.raises(StoreClosedError):
        await _use(store, operation)


@pytest.mark.anyio
async def test_use_after_explicit_aclose_raises() -> None:
    store = EventStore.in_memory()
    await store.__aenter__()
    await store.aclose()
    with pytest.raises(StoreClosedError):
        await store.head(SEED)


@pytest.mark.anyio
async def test_closed_store_cannot_be_reentered() -> None:
    store = EventStore.in_memory()
    async with store:
        pass
    with pytest.raises(StoreClosedError):
        await store.__aenter__()
    with pytest.raises(StoreClosedError):
        await store.head(SEED)


@pytest.mark.anyio
async def test_open_store_cannot_be_entered_twice() -> None:
    async with EventStore.in_memory() as store:
        with pytest.raises(StoreClosedError):
            await store.__aenter__()
        assert await store.head(SEED) is None  # still usable


@pytest.mark.anyio
async def test_aclose_twice_is_fine() -> None:
    store = EventStore.in_memory()
    async with store:
        await store.append(SEED, [{"n": 1}], expected_version=0)
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreClosedError):
        await store.load(SEED)


@pytest.mark.anyio
async def test_store_closed_error_is_a_runtime_error() -> None:
    store = EventStore.in_memory()
    with pytest.raises(RuntimeError):
        await store.head(SEED)
