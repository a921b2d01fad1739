"""The errors an operator meets first: a missing table or bucket is named with how to
create it, and ``ping()`` / ``verify_on_open=True`` make a wrong endpoint, table or
bucket fail when the store opens rather than at its first request."""

from __future__ import annotations

import uuid

import boto3
import pytest

from eventstore_async import (
    EventStore,
    SchemaMissingError,
    StorageError,
    StorageUnavailableError,
    StoreClosedError,
    StoreConfig,
)

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio


def _emulator_config(url: str, **overrides: object) -> StoreConfig:
    token = uuid.uuid4().hex[:12]
    settings: dict[str, object] = {
        "table_name": f"ping-{token}",
        "bucket_name": f"ping-{token}",
        "endpoint_url": url,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    settings.update(overrides)
    return StoreConfig(**settings)  # type: ignore[arg-type]


async def test_ping_passes_on_a_created_schema(store: EventStore) -> None:
    await store.ping()


async def test_ping_names_a_dropped_table(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.drop_schema()
    with pytest.raises(SchemaMissingError) as missing:
        await store.ping()
    assert (missing.value.resource, missing.value.name) == ("table", store.config.table_name)
    assert "create_schema()" in str(missing.value)
    assert "eventstore init" in str(missing.value)
    await store.create_schema()  # for the fixture's teardown


async def test_a_request_to_a_missing_table_names_it(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.drop_schema()
    with pytest.raises(SchemaMissingError) as missing:
        await store.load("order-1")
    assert missing.value.name == store.config.table_name
    assert repr(store.config.table_name) in str(missing.value)
    await store.create_schema()


async def test_verify_on_open_refuses_a_missing_table(emulator_url: str) -> None:
    config = _emulator_config(emulator_url)
    store = EventStore(config, verify_on_open=True)
    with pytest.raises(SchemaMissingError) as missing:
        await store.__aenter__()
    assert (missing.value.resource, missing.value.name) == ("table", config.table_name)
    assert missing.value.operation == "DescribeTable"
    with pytest.raises(StoreClosedError):  # the failed open closed the store
        await store.ping()


async def test_verify_on_open_refuses_a_missing_bucket(emulator_url: str) -> None:
    config = _emulator_config(emulator_url)
    async with EventStore(config.replace(bucket_name=None)) as admin:
        await admin.create_schema()  # the table only
    try:
        with pytest.raises(SchemaMissingError) as missing:
            async with EventStore(config, verify_on_open=True):
                pass
        assert (missing.value.resource, missing.value.name) == ("bucket", config.bucket_name)
        assert "create_schema()" in str(missing.value)
    finally:
        async with EventStore(config.replace(bucket_name=None)) as admin:
            await admin.drop_schema()


async def test_verify_on_open_passes_and_the_store_works(emulator_url: str) -> None:
    config = _emulator_config(emulator_url)
    async with EventStore(config) as admin:
        await admin.create_schema()
    try:
        async with EventStore(config, verify_on_open=True) as store:
            await store.append("order-1", [{"n": 1}], expected_version=0)
    finally:
        async with EventStore(config) as admin:
            await admin.drop_schema()


async def test_verify_on_open_refuses_an_unreachable_endpoint() -> None:
    config = _emulator_config(
        "http://127.0.0.1:9", connect_timeout=0.5, read_timeout=0.5, max_attempts=1
    )
    with pytest.raises(StorageUnavailableError):
        async with EventStore(config, verify_on_open=True):
            pass


async def test_ping_refuses_a_table_with_other_keys(emulator_url: str) -> None:
    config = _emulator_config(emulator_url, bucket_name=None)
    client = boto3.client(
        "dynamodb",
        endpoint_url=emulator_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_table(
        TableName=config.table_name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
    )
    try:
        async with EventStore(config) as store:
            with pytest.raises(StorageError) as mismatch:
                await store.ping()
        assert (mismatch.value.code, mismatch.value.reason) == (None, "SchemaMismatch")
        assert not isinstance(mismatch.value, SchemaMissingError)
    finally:
        client.delete_table(TableName=config.table_name)
