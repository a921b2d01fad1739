"""Oversized change sets go through S3: atomically, verified, bounded, never half-written."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import anyio
import boto3
import pytest

from eventstore_async import (
    ChangeSetTooLargeError,
    ConcurrencyError,
    EventStore,
    IntegrityError,
    InvalidInputError,
)
from eventstore_async._backends.memory import MemoryBackend, MemoryObjects

from .conftest import StoreFactory, backend_of
from .domain import OrderPlaced

pytestmark = pytest.mark.anyio

THRESHOLD = 4096
MIB = 1024 * 1024


class Storage:
    """Looks at what is really stored, beside the library: the table and the bucket."""

    def __init__(self, store: EventStore, emulator_url: str | None) -> None:
        self.store = store
        config = store.config
        self.bucket = config.bucket_name
        self.table = config.table_name
        self.memory: MemoryBackend | None = None
        if emulator_url is None:
            backend = backend_of(store)
            assert isinstance(backend, MemoryBackend)
            self.memory = backend
        else:
            options: dict[str, Any] = {
                "endpoint_url": emulator_url,
                "region_name": "us-east-1",
                "aws_access_key_id": "test",
                "aws_secret_access_key": "test",
            }
            self.dynamodb = boto3.client("dynamodb", **options)
            self.s3 = boto3.client("s3", **options)

    @property
    def _objects(self) -> MemoryObjects:
        assert self.memory is not None and isinstance(self.memory.objects, MemoryObjects)
        return self.memory.objects

    def item(self, aggregate_id: str, version: int) -> dict[str, Any]:
        if self.memory is not None:
            record = self.memory._table[aggregate_id][version]
            pointer = getattr(record, "pointer", None)
            return {"s3_key": pointer.key} if pointer else {"payload": record.payload}  # type: ignore[attr-defined]
        key = {"pk": {"S": aggregate_id}, "sk": {"N": str(version)}}
        found = self.dynamodb.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        return {name: next(iter(value.values())) for name, value in found["Item"].items()}

    def keys(self) -> list[str]:
        if self.memory is not None:
            return sorted(self._objects.objects)
        listed = self.s3.list_objects_v2(Bucket=self.bucket)
        return sorted(entry["Key"] for entry in listed.get("Contents", []))

    def read(self, key: str) -> bytes:
        if self.memory is not None:
            return self._objects.objects[key][0]
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def write(self, key: str, body: bytes) -> None:
        if self.memory is not None:
            self._objects.objects[key] = (body, self._objects.objects[key][1])
            return
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def plant(self, key: str, body: bytes) -> None:
        """An object as a crashed writer leaves it: uploaded, never committed."""
        if self.memory is not None:
            from eventstore_async._backends.memory import _now

            self._objects.objects[key] = (body, _now())
            return
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def uploads(self) -> int:
        if self.memory is not None:
            return len(self._objects.uploads)
        return len(self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))


@pytest.fixture
def inspect(backend_name: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    if backend_name == "endpoint":
        pytest.skip("raw inspection needs the emulator or the in-memory backend")
    url = request.getfixturevalue("emulator_url") if backend_name == "emulator" else None
    yield lambda store: Storage(store, url)


def new_id() -> str:
    return f"big-{uuid.uuid4().hex[:10]}"


def blob_events(count: int, size: int, seed: int = 0) -> list[dict[str, Any]]:
    return [
        {"n": n, "blob": hashlib.sha256(f"{seed}-{n}".encode()).digest() * (size // 32)}
        for n in range(count)
    ]


async def stream(count: int, size: int) -> AsyncIterator[dict[str, Any]]:
    for event in blob_events(count, size):
        yield event


async def test_just_below_the_threshold_stays_inline(
    make_store: StoreFactory, inspect: Any
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    events = [{"blob": "x" * (THRESHOLD - 64)}]
    await store.append(aggregate, events, expected_version=0)
    storage = inspect(store)
    assert "payload" in storage.item(aggregate, 1)
    assert storage.keys() == []
    assert (await store.load(aggregate)).events == events


async def test_just_above_the_threshold_goes_to_s3(make_store: StoreFactory, inspect: Any) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    events = [OrderPlaced("sku", 1), {"blob": "x" * THRESHOLD}]
    change_set = await store.append(aggregate, events, expected_version=0)

    storage = inspect(store)
    item = storage.item(aggregate, 1)
    assert "payload" not in item
    assert storage.keys() == [item["s3_key"]]
    assert item["s3_key"].startswith(store.config.key_prefix)
    history = await store.load(aggregate)
    assert history.events == events
    assert history.change_sets[0] == change_set


async def test_multipart_change_set_streams_and_loads_back_identical(
    make_store: StoreFactory, inspect: Any
) -> None:
    store = await make_store(part_size_bytes=5 * MIB, upload_concurrency=3)
    aggregate = new_id()
    count, size = 200, 100_000  # 20 MB: four 5 MiB parts
    change_set = await store.append(aggregate, stream(count, size), expected_version=0)

    assert change_set.events == () and change_set.event_count == count
    storage = inspect(store)
    assert storage.uploads() == 0
    (key,) = storage.keys()
    assert len(storage.read(key)) > 20 * 1000 * 1000
    history = await store.load(aggregate)
    assert history.events == blob_events(count, size)
    assert history.head.event_count == count
    streamed = [event async for event in store.iter_events(aggregate, 1)]
    assert streamed == blob_events(count, size)


async def test_compressed_offload_round_trips(make_store: StoreFactory, inspect: Any) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD, compression="zlib")
    aggregate = new_id()
    events = [{"n": n, "text": "the same words again " * 50} for n in range(100)]
    await store.append(aggregate, events, expected_version=0)

    (key,) = inspect(store).keys()
    assert len(inspect(store).read(key)) < 20_000  # ~110 KB of events, compressed
    assert (await store.load(aggregate)).events == events
    assert [e async for e in store.iter_events(aggregate, 1)] == events


async def test_tampered_object_raises_integrity_error(
    make_store: StoreFactory, inspect: Any
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await store.append(aggregate, blob_events(4, 2000), expected_version=0)
    storage = inspect(store)
    (key,) = storage.keys()
    body = bytearray(storage.read(key))
    body[-1] ^= 0xFF  # same size, different bytes
    storage.write(key, bytes(body))

    with pytest.raises(IntegrityError, match="does not match"):
        await store.load(aggregate)
    yielded: list[Any] = []
    with pytest.raises(IntegrityError):
        async for event in store.iter_events(aggregate, 1):
            yielded.append(event)  # noqa: PERF401 - the point is what arrives before the error
    assert yielded == []


async def test_failure_mid_upload_leaves_no_trace(make_store: StoreFactory, inspect: Any) -> None:
    store = await make_store(part_size_bytes=5 * MIB)
    aggregate = new_id()

    async def failing() -> AsyncIterator[dict[str, Any]]:
        for event in blob_events(120, 100_000):  # fails after ~11 MB: two parts sent
            if event["n"] == 110:
                raise RuntimeError("the source broke")
            yield event

    with pytest.raises(RuntimeError, match="the source broke"):
        await store.append(aggregate, failing(), expected_version=0)

    storage = inspect(store)
    assert await store.head(aggregate) is None
    assert storage.uploads() == 0
    assert storage.keys() == []


async def test_lost_race_deletes_the_losers_object(make_store: StoreFactory, inspect: Any) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    outcomes: list[str] = []

    async def writer(seed: int) -> None:
        try:
            await store.append(aggregate, blob_events(3, 3000, seed), expected_version=0)
            outcomes.append("won")
        except ConcurrencyError:
            outcomes.append("lost")

    async with anyio.create_task_group() as group:
        for seed in range(4):
            group.start_soon(writer, seed)

    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
    storage = inspect(store)
    assert storage.keys() == [storage.item(aggregate, 1)["s3_key"]]


async def test_idempotent_retry_keeps_one_object(make_store: StoreFactory, inspect: Any) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    events = blob_events(3, 3000)
    first = await store.append(aggregate, events, expected_version=0, commit_id="big-1")
    again = await store.append(aggregate, events, expected_version=0, commit_id="big-1")

    assert again == first
    storage = inspect(store)
    assert storage.keys() == [storage.item(aggregate, 1)["s3_key"]]


async def test_sweep_removes_orphans_only(make_store: StoreFactory, inspect: Any) -> None:
    fast = {  # a commit window of 3 s: short, yet no request of a busy machine times out
        "connect_timeout": 0.5,
        "read_timeout": 1.0,
        "max_attempts": 1,
        "conflict_retries": 0,
        "max_upload_seconds": 0.5,
        "append_deadline_seconds": 1.0,
        "offload_threshold_bytes": THRESHOLD,
    }
    store = await make_store(**fast)
    aggregate = new_id()
    await store.append(aggregate, blob_events(3, 3000), expected_version=0)
    storage = inspect(store)
    (kept,) = storage.keys()
    orphan = kept.rsplit("/", 1)[0] + "/" + uuid.uuid4().hex
    storage.plant(orphan, b"left by a crashed writer")
    window = timedelta(seconds=store.config.commit_window_seconds)

    with pytest.raises(InvalidInputError) as too_short:
        await store.sweep_orphans(older_than=window / 2)
    young = await store.sweep_orphans(older_than=timedelta(hours=1))
    # Time must pass for ages to: S3 times objects to the second, so past the window + 1 s.
    await anyio.sleep(window.total_seconds() + 1.5)
    swept = await store.sweep_orphans(older_than=window)

    assert too_short.value.argument == "older_than"
    assert young.objects_deleted == ()
    assert swept.objects_deleted == (orphan,)
    assert swept.objects_scanned == 2
    assert storage.keys() == [kept]
    assert len((await store.load(aggregate)).events) == 3


async def test_no_bucket_means_too_large(make_store: StoreFactory) -> None:
    store = await make_store(bucket_name=None)
    with pytest.raises(ChangeSetTooLargeError):
        await store.append(new_id(), stream(10, 60_000), expected_version=0)


async def test_small_stream_stays_inline_and_keeps_its_events(
    make_store: StoreFactory, inspect: Any
) -> None:
    store = await make_store()
    aggregate = new_id()
    events = [OrderPlaced("a", 1), {"k": "v"}]
    change_set = await store.append(aggregate, iter(events), expected_version=0)
    assert change_set.events == tuple(events)
    assert inspect(store).keys() == []
    assert (await store.load(aggregate)).events == events


async def test_empty_stream_is_refused(make_store: StoreFactory) -> None:
    store = await make_store()
    aggregate = new_id()
    with pytest.raises(InvalidInputError) as empty:
        await store.append(aggregate, iter([]), expected_version=0)
    assert empty.value.argument == "events"
    assert await store.head(aggregate) is None


async def test_aggregate_ids_cannot_steer_keys_outside_the_prefix(
    make_store: StoreFactory, inspect: Any
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = "../../../etc/passwd"
    await store.append(aggregate, blob_events(3, 3000), expected_version=0)
    (key,) = inspect(store).keys()
    config = store.config
    assert key.startswith(f"{config.key_prefix}{config.table_name}/")
    assert ".." not in key and key.count("/") == config.key_prefix.count("/") + 2
    assert (await store.load(aggregate)).version == 1
