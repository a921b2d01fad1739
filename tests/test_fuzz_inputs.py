"""Bad input, fuzzed: every wrong kind and size gets InvalidInputError and writes nothing.

Property tests on ``EventStore.in_memory()`` through the public API. Each example opens
a store holding one seeded aggregate (``seed-1`` at version 1); after a refused call the
seed is unchanged and the target aggregate does not exist. Valid random input
round-trips through append and load exactly.

The bugs this fuzzing found are fixed; their tests stay at the end.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore_async import (
    ANY,
    EventStore,
    InvalidInputError,
    RawEvent,
    StoreConfig,
)

pytestmark = pytest.mark.anyio

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written to .hypothesis/
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SEED = "seed-1"
TARGET = "target-1"
COMMIT_ALPHABET = "ABCXYZabcxyz0189._:@/+=-"
CONTROL = [chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))]
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]


class Placed(msgspec.Struct, tag=True, frozen=True):
    sku: str
    qty: int


class Shipped(msgspec.Struct, frozen=True):
    carrier: str
    parcels: list[int]


@asynccontextmanager
async def seeded_store() -> AsyncIterator[EventStore]:
    async with EventStore.in_memory(types=[Placed, Shipped]) as store:
        await store.append(SEED, [{"n": 1}], expected_version=0, commit_id="seed-commit")
        yield store


async def assert_nothing_written(store: EventStore) -> None:
    head = await store.head(SEED)
    assert head is not None and (head.version, head.last_commit_id) == (1, "seed-commit")
    assert list((await store.load(SEED)).events) == [{"n": 1}]
    assert await store.head(TARGET) is None


async def assert_refused(
    store: EventStore, argument: str, call: Callable[[], Any], *, prefix: bool = False
) -> None:
    """``call()`` raises InvalidInputError naming ``argument`` (or one of its parts)."""
    try:
        await call()
    except InvalidInputError as exc:
        named = exc.argument.startswith(argument) if prefix else exc.argument == argument
        assert named, f"InvalidInputError names {exc.argument!r}, expected {argument!r}"
    else:
        raise AssertionError(f"no InvalidInputError for a bad {argument}")
    await assert_nothing_written(store)


# -- strategies of wrong things -----------------------------------------------------------

scalars_not_str = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=8),
    st.decimals(allow_nan=False),
    st.complex_numbers(allow_nan=False),
    st.builds(object),
)
not_str = st.one_of(
    scalars_not_str,
    st.lists(st.text(max_size=3), max_size=3),
    st.tuples(st.text(max_size=3)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.frozensets(st.integers(), max_size=2),
)


def with_inserted(bad_chars: list[str], alphabet: st.SearchStrategy[str] | None = None) -> Any:
    """Text holding at least one of ``bad_chars`` somewhere."""
    text = st.text(max_size=20) if alphabet is None else alphabet
    return st.builds(lambda a, c, b: a + c + b, text, st.sampled_from(bad_chars), text)


too_long_id = st.one_of(
    st.text(alphabet="abc", min_size=513, max_size=600),
    st.text(alphabet="é", min_size=257, max_size=300),  # 2 bytes each in UTF-8
    st.text(alphabet="𝄞", min_size=129, max_size=150),  # 4 bytes each
)
bad_aggregate_ids = st.one_of(
    not_str,
    st.just(""),
    too_long_id,
    with_inserted(CONTROL),
    with_inserted(SURROGATES),
)
commit_text = st.text(alphabet=COMMIT_ALPHABET, max_size=10)
bad_commit_ids = st.one_of(
    not_str.filter(lambda v: v is not None),  # None means "generate one"
    st.just(""),
    st.text(alphabet=COMMIT_ALPHABET, min_size=129, max_size=200),
    with_inserted([" ", "\n", "\x00", "é", "#", "?", "\\", "*", "\ud800", "\t"], commit_text),
)
bad_versions = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),
    st.text(max_size=5),
    st.decimals(allow_nan=False),
    st.integers(max_value=-1),
    st.integers(min_value=2**53 + 1),
    st.builds(object),
    st.just([1]),
)
bad_aggregate_types = st.one_of(
    not_str.filter(lambda v: v is not None),
    st.just(""),
    st.text(alphabet="ab", min_size=257, max_size=300),
    with_inserted(CONTROL),
    with_inserted(SURROGATES),
)

unencodable = st.one_of(
    st.builds(object),
    st.integers(min_value=2**64),
    st.integers(max_value=-(2**63) - 1),
    st.complex_numbers(allow_nan=False),
    with_inserted(SURROGATES),
    st.just(...),
)
bad_metadata = st.one_of(
    scalars_not_str.filter(lambda v: v is not None),
    st.text(min_size=1, max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=5), unencodable, min_size=1, max_size=3),
    st.just({"big": "x" * (65 * 1024)}),  # over the 64 KiB metadata limit
)
bad_event = st.one_of(
    scalars_not_str.filter(lambda v: not isinstance(v, dict)),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=5), unencodable, min_size=1, max_size=3),
)
bad_event_lists = st.one_of(
    st.builds(
        lambda before, bad, after: [*before, bad, *after],
        st.lists(st.just({"ok": 1}), max_size=2),
        bad_event,
        st.lists(st.just({"ok": 1}), max_size=2),
    ),
    st.just([]),
    st.just(()),
)
bad_event_containers = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.builds(object),
    st.text(min_size=1, max_size=5),
    st.binary(min_size=1, max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


# -- append: each argument wrong, the rest valid --------------------------------------------


def append_call(store: EventStore, **overrides: Any) -> Callable[[], Any]:
    arguments: dict[str, Any] = {
        "aggregate_id": TARGET,
        "events": [{"ok": 1}],
        "expected_version": 0,
        "aggregate_type": "Order",
        "metadata": {"user": "ada"},
        "commit_id": "commit-1",
    }
    arguments.update(overrides)
    aggregate_id, events = arguments.pop("aggregate_id"), arguments.pop("events")
    return lambda: store.append(aggregate_id, events, **arguments)


@FUZZ
@given(value=bad_aggregate_ids)
async def test_bad_aggregate_id(value: Any) -> None:
    async with seeded_store() as store:
        await assert_refused(store, "aggregate_id", append_call(store, aggregate_id=value))
        await assert_refused(store, "aggregate_id", lambda: store.load(value))
        await assert_refused(store, "aggregate_id", lambda: store.head(value))


@FUZZ
@given(value=bad_commit_ids)
async def test_bad_commit_id(value: Any) -> None:
    async with seeded_store() as store:
        await assert_refused(store, "commit_id", append_call(store, commit_id=value))


@FUZZ
@given(value=bad_versions)
async def test_bad_expected_version(value: Any) -> None:
    async with seeded_store() as store:
        await assert_refused(store, "expected_version", append_call(store, expected_version=value))


@FUZZ
@given(low=st.one_of(bad_versions, st.just(0)), high=st.one_of(bad_versions, st.just(0)))
async def test_bad_version_range(low: Any, high: Any) -> None:
    async with seeded_store() as store:
        await assert_refused(store, "from_version", lambda: store.load(SEED, from_version=low))
        if high is not None:
            await assert_refused(store, "to_version", lambda: store.load(SEED, to_version=high))


@FUZZ
@given(value=bad_aggregate_types)
async def test_bad_aggregate_type(value: Any) -> None:
    async with seeded_store() as store:
        await assert_refused(store, "aggregate_type", append_call(store, aggregate_type=value))


@FUZZ
@given(value=bad_metadata)
async def test_bad_metadata(value: Any) -> None:
    async with seeded_store() as store:
        await assert_refused(store, "metadata", append_call(store, metadata=value))


@FUZZ
@given(events=bad_event_lists)
async def test_bad_events(events: Any) -> None:
    async with seeded_store() as store:
        await assert_refused(store, "events", append_call(store, events=events), prefix=True)
        # The same events appended to an existing aggregate change nothing either.
        call = append_call(store, aggregate_id=SEED, expected_version=1, events=events)
        await assert_refused(store, "events", call, prefix=True)
        # Nor do they as an iterator or an async iterator (the streaming encode path).
        call = append_call(store, events=iter(list(events)))
        await assert_refused(store, "events", call, prefix=True)
        call = append_call(store, events=as_async(list(events)))
        await assert_refused(store, "events", call, prefix=True)


async def as_async(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


@FUZZ
@given(events=bad_event_containers)
async def test_events_of_a_wrong_kind(events: Any) -> None:
    async with seeded_store() as store:
        await assert_refused(store, "events", append_call(store, events=events))


# -- valid input round-trips ----------------------------------------------------------------

valid_ids = st.text(min_size=1, max_size=60).filter(
    lambda s: not any(c in s for c in CONTROL) and len(s.encode()) <= 512
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
mapping_events = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
struct_events = st.one_of(
    st.builds(Placed, sku=st.text(max_size=10), qty=st.integers(-(2**63), 2**63 - 1)),
    st.builds(Shipped, carrier=st.text(max_size=10), parcels=st.lists(st.integers(0, 99))),
)
valid_events = st.lists(st.one_of(mapping_events, struct_events), min_size=1, max_size=5)


@FUZZ
@given(
    aggregate_id=valid_ids,
    first=valid_events,
    second=valid_events,
    metadata=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_values, max_size=4)),
    aggregate_type=st.one_of(st.none(), st.text(alphabet="OrderCustomer", min_size=1, max_size=20)),
    commit_id=st.text(alphabet=COMMIT_ALPHABET, min_size=1, max_size=128),
)
async def test_valid_input_round_trips(
    aggregate_id: str,
    first: list[Any],
    second: list[Any],
    metadata: dict[str, Any] | None,
    aggregate_type: str | None,
    commit_id: str,
) -> None:
    async with EventStore.in_memory(types=[Placed, Shipped]) as store:
        stored = await store.append(
            aggregate_id,
            first,
            expected_version=0,
            aggregate_type=aggregate_type,
            metadata=metadata,
            commit_id=commit_id,
        )
        again = await store.append(aggregate_id, second, expected_version=ANY)
        history = await store.load(aggregate_id)
    assert (stored.version, stored.commit_id, again.version) == (1, commit_id, 2)
    assert [cs.version for cs in history.change_sets] == [1, 2]
    assert list(history.change_sets[0].events) == first
    assert list(history.change_sets[1].events) == second
    assert history.change_sets[0].metadata == (metadata or {})
    assert history.change_sets[0].commit_id == commit_id
    assert history.head.aggregate_type == aggregate_type
    assert history.head.event_count == len(first) + len(second)


# -- StoreConfig --------------------------------------------------------------------------

CREDENTIAL_FIELDS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"}

not_int = st.one_of(
    st.none(), st.booleans(), st.floats(), st.text(max_size=4), st.binary(max_size=4),
    st.decimals(allow_nan=False), st.lists(st.integers(), max_size=2), st.builds(object),
)  # fmt: skip
not_number = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.decimals(allow_nan=False),
    st.complex_numbers(),
    st.lists(st.floats(), max_size=2),
    st.builds(object),
    st.sampled_from([math.inf, -math.inf, math.nan, 0.0, -1.0, 0, -5]),
    st.integers(max_value=0),
)
not_bool = st.one_of(
    st.none(), st.integers(), st.floats(), st.text(max_size=4), st.builds(object)
)  # fmt: skip

WRONG_KINDS: dict[str, st.SearchStrategy[Any]] = {
    "str": not_str,
    "str | None": not_str.filter(lambda v: v is not None),
    "int": not_int,
    "int | None": not_int.filter(lambda v: v is not None),
    "float": not_number,
    "bool": not_bool,
}
FUZZED_FIELDS = [
    f for f in dataclasses.fields(StoreConfig) if f.name not in CREDENTIAL_FIELDS
]  # fmt: skip


def test_every_config_field_has_a_wrong_kind_strategy() -> None:
    unknown = {f.name: f.type for f in FUZZED_FIELDS if f.type not in WRONG_KINDS}
    assert not unknown, f"add a wrong-kind strategy for these StoreConfig fields: {unknown}"


@FUZZ
@given(data=st.data(), field=st.sampled_from(FUZZED_FIELDS))
def test_config_field_of_a_wrong_kind(data: st.DataObject, field: dataclasses.Field[Any]) -> None:
    value = data.draw(WRONG_KINDS[str(field.type)], label=field.name)
    overrides = {"table_name": "fuzz-table", field.name: value}
    with pytest.raises(InvalidInputError) as raised:
        StoreConfig(**overrides)
    assert raised.value.argument == field.name
    with pytest.raises(InvalidInputError):
        StoreConfig(table_name="fuzz-table").replace(**{field.name: value})


@FUZZ
@given(
    name=st.one_of(
        st.text(max_size=2),
        st.text(min_size=256, max_size=300),
        with_inserted([" ", "/", "\n", "é", "\x00"]),
    )
)
def test_bad_table_names(name: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        StoreConfig(table_name=name)
    assert raised.value.argument == "table_name"


# -- bugs found by this fuzzing -------------------------------------------------------------


async def test_struct_event_with_wrong_field_types_is_refused() -> None:
    async with seeded_store() as store:
        bad = Placed(sku=123, qty="many")  # type: ignore[arg-type]
        await assert_refused(store, "events", append_call(store, events=[bad]), prefix=True)


async def test_raw_event_with_a_non_str_type_is_refused() -> None:
    async with seeded_store() as store:
        bad = RawEvent(type=5, data={})  # type: ignore[arg-type]
        await assert_refused(store, "events", append_call(store, events=[bad]), prefix=True)


async def test_raw_event_not_matching_its_registered_type_is_refused() -> None:
    async with seeded_store() as store:
        bad = RawEvent(type="Placed", data={"unexpected": True})
        await assert_refused(store, "events", append_call(store, events=[bad]), prefix=True)


@pytest.mark.parametrize("field", ["connect_timeout", "read_timeout", "backoff_base"])
def test_huge_int_duration_is_refused(field: str) -> None:
    with pytest.raises(InvalidInputError):
        StoreConfig(table_name="fuzz-table", **{field: 10**400})


@pytest.mark.parametrize("field", sorted(CREDENTIAL_FIELDS))
@pytest.mark.parametrize("value", [123, b"bytes", ["key"]])
def test_credentials_of_a_wrong_kind_are_refused(field: str, value: Any) -> None:
    with pytest.raises(InvalidInputError):
        StoreConfig(table_name="fuzz-table", **{field: value})


@pytest.mark.parametrize(
    "field_value",
    [
        ("endpoint_url", "http://"),
        ("endpoint_url", "https:// spaces"),
        ("region_name", "bad region"),
    ],
)
def test_malformed_endpoint_and_region_are_refused(field_value: tuple[str, str]) -> None:
    field, value = field_value
    with pytest.raises(InvalidInputError):
        StoreConfig(table_name="fuzz-table", **{field: value})
