"""The orphan sweep deletes only what is surely its own and surely unreferenced."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import boto3
import msgspec
import pytest

from eventstore_async import EventStore, StoreConfig
from eventstore_async._backends.memory import MemoryBackend, MemoryObjects
from eventstore_async._offload.keys import object_key
from eventstore_async._offload.sweep import is_older
from eventstore_async._records import ChangeSetRecord
from eventstore_async.testing import DynamoDBBackend, memory_backend

from .conftest import StoreFactory, backend_of, remote_config, store_on
from .test_offload import blob_events, new_id

pytestmark = pytest.mark.anyio

THRESHOLD = 4096
#: A commit window of 2 s, so objects age past it within a test.
FAST = {  # a commit window of 3.5 s: short, yet no request of a busy machine times out
    "connect_timeout": 0.5,
    "read_timeout": 1.0,
    "max_attempts": 1,
    "conflict_retries": 0,
    "max_upload_seconds": 1.0,
    "append_deadline_seconds": 1.0,
    "offload_threshold_bytes": THRESHOLD,
}
#: Past the window plus the second S3 rounds LastModified down by, with room to spare.
AGED = 5.0


def window(store: EventStore) -> timedelta:
    return timedelta(seconds=store.config.commit_window_seconds)


def s3_client(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


async def test_a_sweep_keeps_the_objects_of_another_table_in_the_same_bucket(
    request: pytest.FixtureRequest, emulator_url: str
) -> None:
    config_a = remote_config("emulator", request, **FAST)
    config_b = config_a.replace(table_name=f"{config_a.table_name}-b")
    assert config_a.key_prefix == config_b.key_prefix  # the default, shared
    try:
        for config in (config_a, config_b):  # with the default timeouts
            async with EventStore(config.replace(connect_timeout=2, read_timeout=10)) as admin:
                await admin.create_schema()
        a = store_on(config_a, DynamoDBBackend(config_a))
        b = store_on(config_b, DynamoDBBackend(config_b))
        async with a, b:
            aggregate = new_id()
            await a.append(aggregate, blob_events(3, 3000), expected_version=0)
            await b.append(aggregate, blob_events(3, 3000, seed=1), expected_version=0)
            (a_key,) = await backend_of(a).referenced_objects(aggregate)
            (b_key,) = await backend_of(b).referenced_objects(aggregate)
            orphan = b_key.rsplit("/", 1)[0] + "/" + uuid.uuid4().hex
            s3 = s3_client(emulator_url)
            s3.put_object(Bucket=config_b.bucket_name, Key=orphan, Body=b"x")
            a_upload = a_key.rsplit("/", 1)[0] + "/" + uuid.uuid4().hex  # A's, in flight
            s3.create_multipart_upload(Bucket=config_a.bucket_name, Key=a_upload)
            await anyio.sleep(AGED)

            report = await b.sweep_orphans(older_than=window(b))

            assert report.objects_deleted == (orphan,)
            assert report.uploads_aborted == 0
            assert len((await a.load(aggregate)).events) == 3
            assert len((await b.load(aggregate)).events) == 3
    finally:
        for config in (config_b, config_a):
            async with EventStore(config.replace(connect_timeout=2, read_timeout=10)) as admin:
                await admin.drop_schema()


def legacy_key(prefix: str, aggregate_id: str) -> str:
    """An object key as written before keys named the table."""
    encoded = base64.urlsafe_b64encode(aggregate_id.encode()).rstrip(b"=").decode()
    return f"{prefix}{encoded}/{uuid.uuid4().hex}"


def move_to_legacy_key(backend: MemoryBackend, aggregate_id: str, version: int) -> str:
    """Rewrite a stored change set as an earlier release stored it: its object under the
    key layout without the table's name."""
    objects = backend.objects
    assert isinstance(objects, MemoryObjects)
    record = backend._table[aggregate_id][version]
    assert isinstance(record, ChangeSetRecord) and record.pointer is not None
    key = legacy_key("changesets/", aggregate_id)
    objects.objects[key] = objects.objects.pop(record.pointer.key)
    pointer = msgspec.structs.replace(record.pointer, key=key)
    backend._table[aggregate_id][version] = msgspec.structs.replace(record, pointer=pointer)
    return key


def age_objects(objects: MemoryObjects, seconds: float) -> None:
    for key, (body, modified) in list(objects.objects.items()):
        objects.objects[key] = (body, modified - timedelta(seconds=seconds))


async def test_objects_under_the_earlier_key_layout_are_swept_when_asked() -> None:
    config = StoreConfig(
        table_name="in-memory", bucket_name="in-memory", offload_threshold_bytes=THRESHOLD
    )
    backend = memory_backend(config)
    async with EventStore(config, backend=backend) as store:
        assert isinstance(backend.objects, MemoryObjects)
        aggregate = new_id()
        await store.append(aggregate, blob_events(3, 3000), expected_version=0)
        referenced = move_to_legacy_key(backend, aggregate, 1)
        orphan = legacy_key("changesets/", aggregate)
        backend.objects.objects[orphan] = (
            b"left by a crashed writer",
            backend.objects.objects[referenced][1],
        )
        age_objects(backend.objects, 2 * store.config.commit_window_seconds)

        kept = await store.sweep_orphans(older_than=window(store))
        swept = await store.sweep_orphans(older_than=window(store), legacy_keys=True)

        assert kept.objects_deleted == ()
        assert kept.legacy_objects_kept == 2
        assert swept.objects_deleted == (orphan,)
        assert sorted(backend.objects.objects) == [referenced]
        assert len((await store.load(aggregate)).events) == 3


async def test_new_object_keys_name_the_table(make_store: StoreFactory) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await store.append(aggregate, blob_events(3, 3000), expected_version=0)
    (key,) = await backend_of(store).referenced_objects(aggregate)
    config = store.config
    assert key.startswith(f"{config.key_prefix}{config.table_name}/")


async def wait_for_fraction(low: float) -> None:
    """Until the wall clock's fraction of a second is at least ``low`` (S3 rounds the
    object's LastModified down to the second: this makes the rounding as large as it is
    in the worst case an append can meet)."""
    fraction = time.time() % 1
    if fraction < low:
        await anyio.sleep(low - fraction + 0.01)


async def test_an_object_younger_than_older_than_is_kept_though_s3_rounds_its_time_down(
    request: pytest.FixtureRequest, emulator_url: str
) -> None:
    config = remote_config("emulator", request, **FAST)
    async with EventStore(config.replace(connect_timeout=2, read_timeout=10)) as admin:
        await admin.create_schema()
        async with EventStore(config) as store:
            older_than = window(store)
            key = object_key(config.key_prefix, config.table_name, new_id())
            s3 = s3_client(emulator_url)
            for _ in range(20):  # the put must land in the second it started in
                await wait_for_fraction(0.7)
                started = time.time()
                s3.put_object(Bucket=config.bucket_name, Key=key, Body=b"in flight")
                if int(time.time()) == int(started):
                    break
            assert int(time.time()) == int(started), "no put landed within its second"
            # 0.5 s younger than older_than by the client's clock; S3's stamp says at least
            # 0.7 s older than that, so a sweep trusting the stamp deletes it. The sweep may
            # start up to 0.5 s late on a busy machine and still must keep it.
            await anyio.sleep(started + older_than.total_seconds() - 0.5 - time.time())
            young = await store.sweep_orphans(older_than=older_than)
            await anyio.sleep(int(started) + 1 + older_than.total_seconds() + 0.1 - time.time())
            old = await store.sweep_orphans(older_than=older_than)
        await admin.drop_schema()

    assert young.objects_deleted == ()
    assert old.objects_deleted == (key,)


def test_a_stamp_is_old_only_a_whole_second_before_the_cutoff() -> None:
    cutoff = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    assert is_older(cutoff - timedelta(seconds=1), cutoff)
    assert not is_older(cutoff - timedelta(seconds=1) + timedelta(microseconds=1), cutoff)
    assert not is_older(cutoff, cutoff)
