"""DynamoDB normalises numbers (it drops the trailing zeros of a fraction), so a sort key
comes back in another spelling than it was sent in: keys are matched by value.

The emulator returns numbers as they were sent; :class:`NormalisingBackend` answers
BatchGetItem as DynamoDB spells its numbers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import boto3
import pytest

from eventstore_async import EventStore
from eventstore_async._backends.aws.dynamodb import DynamoDBBackend
from eventstore_async._records import snapshot_sort_key

from .conftest import remote_config

pytestmark = pytest.mark.anyio

#: A schema whose snapshot sort key's fraction ends in a zero (5.6174855710).
SCHEMA = "b"


def normalised(number: str) -> str:
    """A number as DynamoDB returns it: no trailing zeros after the point."""
    return number.rstrip("0").rstrip(".") if "." in number else number


class NormalisingBackend(DynamoDBBackend):
    async def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items = await super()._batch_get(keys)
        return [item | {"sk": {"N": normalised(item["sk"]["N"])}} for item in items]


def test_the_schema_meets_the_normalisation() -> None:
    key = str(snapshot_sort_key(5, SCHEMA))
    assert normalised(key) != key and Decimal(normalised(key)) == Decimal(key)


async def test_a_replaced_snapshot_s_object_is_found_though_its_key_comes_back_shorter(
    request: pytest.FixtureRequest, emulator_url: str
) -> None:
    config = remote_config("emulator", request, offload_threshold_bytes=1024)
    async with EventStore(config, backend=NormalisingBackend(config)) as store:
        await store.create_schema()
        try:
            await store.append("order-1", [{"n": 1}], expected_version=0)
            state = {"pad": "x" * 4096}  # offloaded
            await store.save_snapshot("order-1", 1, state, schema=SCHEMA, keep=1)
            await store.save_snapshot("order-1", 1, state | {"again": True}, schema=SCHEMA)

            s3 = boto3.client(
                "s3",
                endpoint_url=emulator_url,
                region_name="us-east-1",
                aws_access_key_id="test",
                aws_secret_access_key="test",
            )
            listed = s3.list_objects_v2(Bucket=config.bucket_name).get("Contents", [])
            loaded = await store.load("order-1", snapshot_schema=SCHEMA)
        finally:
            await store.drop_schema()

    assert loaded.snapshot is not None and loaded.snapshot.state == state | {"again": True}
    assert len(listed) == 1  # the overwritten snapshot's object was deleted
