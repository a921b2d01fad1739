"""Snapshots: state at a version, loaded with only the change sets after it."""

from __future__ import annotations

import uuid

import msgspec
import pytest

import eventstore_async._write.snapshots as snapshots
from eventstore_async import AggregateNotFoundError, EventStore, InvalidInputError, StoreConfig
from eventstore_async._records import SnapshotRecord
from eventstore_async._write.snapshots import MAX_DELETIONS, request_token

from .chaos.proxy import FaultProxy
from .conftest import StoreFactory, backend_of, unique_names

pytestmark = pytest.mark.anyio


class Totals(msgspec.Struct, tag=True, frozen=True):
    count: int
    total: int


def new_id() -> str:
    return f"snap-{uuid.uuid4().hex[:10]}"


async def build(store: EventStore, aggregate: str, versions: int) -> None:
    for version in range(versions):
        await store.append(aggregate, [{"n": version + 1}], expected_version=version)


def fold(events: list[dict[str, int]], start: Totals | None = None) -> Totals:
    state = start or Totals(0, 0)
    for event in events:
        state = Totals(state.count + 1, state.total + event["n"])
    return state


async def test_snapshot_plus_tail_equals_full_replay(make_store: StoreFactory) -> None:
    store = await make_store(types=(Totals,))
    aggregate = new_id()
    await build(store, aggregate, 12)
    full = await store.load(aggregate)
    await store.save_snapshot(aggregate, 8, fold(full.events[:8]), schema="totals-1")

    history = await store.load(aggregate, snapshot_schema="totals-1")

    assert history.snapshot is not None and history.snapshot.version == 8
    assert [cs.version for cs in history.change_sets] == [9, 10, 11, 12]
    assert fold(history.events, history.snapshot.state) == fold(full.events)
    assert history.version == 12


async def test_other_schema_is_ignored_and_none_means_full_replay(store: EventStore) -> None:
    aggregate = new_id()
    await build(store, aggregate, 5)
    await store.save_snapshot(aggregate, 4, {"count": 4}, schema="old-shape")

    history = await store.load(aggregate, snapshot_schema="new-shape")
    plain = await store.load(aggregate)

    assert history.snapshot is None
    assert [cs.version for cs in history.change_sets] == [1, 2, 3, 4, 5]
    assert [cs.version for cs in plain.change_sets] == [1, 2, 3, 4, 5]  # snapshots stay out


async def test_retention_keeps_the_newest(store: EventStore) -> None:
    aggregate = new_id()
    await build(store, aggregate, 10)
    for version in (2, 4, 6, 8):
        await store.save_snapshot(aggregate, version, {"at": version}, keep=2)
    stale = await store.save_snapshot(aggregate, 3, {"at": 3}, keep=2)

    newest = await store.load(aggregate, snapshot_schema="default")
    older = await store.load(aggregate, snapshot_schema="default", to_version=7)
    oldest = await store.load(aggregate, snapshot_schema="default", to_version=5)

    assert stale is None
    assert newest.snapshot is not None and newest.snapshot.state == {"at": 8}
    assert older.snapshot is not None and older.snapshot.state == {"at": 6}
    assert [cs.version for cs in older.change_sets] == [7]
    assert oldest.snapshot is None  # 2 and 4 were dropped
    assert [cs.version for cs in oldest.change_sets] == [1, 2, 3, 4, 5]


async def test_snapshot_at_the_current_version_has_an_empty_tail(store: EventStore) -> None:
    aggregate = new_id()
    await build(store, aggregate, 3)
    await store.save_snapshot(aggregate, 3, {"at": 3})
    history = await store.load(aggregate, snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.version == 3
    assert history.change_sets == ()


async def test_resaving_a_version_replaces_it(store: EventStore) -> None:
    aggregate = new_id()
    await build(store, aggregate, 3)
    await store.save_snapshot(aggregate, 2, {"v": "first"})
    await store.save_snapshot(aggregate, 2, {"v": "second"})
    history = await store.load(aggregate, snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.state == {"v": "second"}


async def test_large_snapshot_is_offloaded(make_store: StoreFactory) -> None:
    store = await make_store(offload_threshold_bytes=4096)
    aggregate = new_id()
    await build(store, aggregate, 2)
    state = {"blob": "s" * 50_000}
    await store.save_snapshot(aggregate, 2, state)
    history = await store.load(aggregate, snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.state == state


async def test_appends_keep_working_around_snapshots(store: EventStore) -> None:
    aggregate = new_id()
    await build(store, aggregate, 3)
    await store.save_snapshot(aggregate, 3, {"at": 3})
    await store.append(aggregate, [{"n": 4}], expected_version=3)
    history = await store.load(aggregate, snapshot_schema="default")
    assert [cs.version for cs in history.change_sets] == [4]
    assert [cs.version async for cs in store.read(aggregate)] == [1, 2, 3, 4]


async def test_bad_snapshot_arguments(store: EventStore) -> None:
    aggregate = new_id()
    with pytest.raises(AggregateNotFoundError):
        await store.save_snapshot(aggregate, 1, {"x": 1})
    await build(store, aggregate, 2)
    with pytest.raises(InvalidInputError) as future:
        await store.save_snapshot(aggregate, 3, {"x": 1})
    with pytest.raises(InvalidInputError) as schema:
        await store.save_snapshot(aggregate, 1, {"x": 1}, schema="has space")
    with pytest.raises(InvalidInputError) as keep:
        await store.save_snapshot(aggregate, 1, {"x": 1}, keep=0)
    with pytest.raises(InvalidInputError) as ranged:
        await store.load(aggregate, snapshot_schema="default", from_version=2)
    assert [e.value.argument for e in (future, schema, keep, ranged)] == [
        "version",
        "schema",
        "keep",
        "from_version",
    ]


async def test_a_save_deletes_at_most_what_fits_in_one_transaction(store: EventStore) -> None:
    aggregate = new_id()
    await build(store, aggregate, 102)
    for version in range(1, 101):
        await store.save_snapshot(aggregate, version, {"at": version}, keep=100)

    await store.save_snapshot(aggregate, 101, {"at": 101}, keep=1)  # 100 to drop, 98 fit
    after_one = await backend_of(store).get_head(aggregate)
    still_listed = await store.load(aggregate, snapshot_schema="default", to_version=100)
    deleted = await store.load(aggregate, snapshot_schema="default", to_version=98)
    await store.save_snapshot(aggregate, 102, {"at": 102}, keep=1)  # the rest go now
    after_two = await backend_of(store).get_head(aggregate)

    assert MAX_DELETIONS == 98
    assert after_one is not None and after_one.snapshots == {"default": (99, 100, 101)}
    assert still_listed.snapshot is not None and still_listed.snapshot.state == {"at": 100}
    assert deleted.snapshot is None and len(deleted.change_sets) == 98
    assert after_two is not None and after_two.snapshots == {"default": (102,)}
    newest = await store.load(aggregate, snapshot_schema="default")
    assert newest.snapshot is not None and newest.snapshot.state == {"at": 102}


def test_snapshot_request_tokens_tell_aggregates_and_schemas_apart() -> None:
    def record(aggregate: str, schema: str = "default") -> SnapshotRecord:
        return SnapshotRecord(aggregate, 1, schema, 1_764_000_000_000_000, b"x", None)

    tokens = {
        request_token(record("order-1"), 0),
        request_token(record("order-2"), 0),
        request_token(record("order-1", "other"), 0),
        request_token(record("order-1"), 1),
    }

    assert len(tokens) == 4
    assert all(len(token) <= 36 for token in tokens)  # DynamoDB's limit
    assert request_token(record("order-1"), 0) in tokens  # a re-send keeps its token


async def test_first_snapshots_of_two_aggregates_in_one_microsecond(
    emulator_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "now_us", lambda: 1_764_000_000_000_000)
    async with FaultProxy(emulator_url, emulate_request_tokens=True) as proxy:
        config = StoreConfig(
            endpoint_url=proxy.url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            **unique_names(),
        )
        async with EventStore(config) as store:
            await store.create_schema()
            try:
                for aggregate in ("order-1", "order-2"):
                    await store.append(aggregate, [{"n": 1}], expected_version=0)
                saved = [await store.save_snapshot(a, 1, {"s": a}) for a in ("order-1", "order-2")]
            finally:
                await store.drop_schema()

    assert [snapshot.aggregate_id for snapshot in saved if snapshot] == ["order-1", "order-2"]
    assert proxy.token_mismatches == 0
