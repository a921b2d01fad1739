"""A small table with every kind of item, and damage done to it directly with boto3
(beside the library), for the tests of ``verify`` and of the ``eventstore`` command."""

from __future__ import annotations

from typing import Any

import boto3

from eventstore_async import ANY, EventStore, StoreConfig

from .domain import OrderPlaced

#: Settings of the sample's store: the feed on, payloads over 2 KiB offloaded.
SAMPLE_SETTINGS: dict[str, Any] = {"feed_shards": 2, "offload_threshold_bytes": 2048}
BIG = "x" * 4096  # an event over the offload threshold

#: Aggregates of the sample, and what ``damage`` does to each.
GAP, HEAD, MISSING, TAMPERED, HEALTHY = "order-gap", "order-head", "order-lost", "order-bad", "ok"


async def write_sample(store: EventStore) -> None:
    """Three versions for most aggregates, offloaded ones, a snapshot, an ANY append."""
    for aggregate in (GAP, HEAD, HEALTHY):
        for version in range(3):
            await store.append(aggregate, [OrderPlaced("a", version)], expected_version=version)
    for aggregate in (MISSING, TAMPERED):
        await store.append(aggregate, [OrderPlaced(BIG, 1)], expected_version=0)
    await store.append(HEALTHY, [OrderPlaced(BIG, 2)], expected_version=ANY)
    await store.save_snapshot(HEALTHY, 3, {"qty": 3})


def clients(url: str) -> tuple[Any, Any]:
    options: dict[str, Any] = {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    return boto3.client("dynamodb", **options), boto3.client("s3", **options)


def damage(config: StoreConfig, url: str) -> None:
    """Delete GAP's change set 2, set HEAD's head to version 7, delete MISSING's object
    and overwrite TAMPERED's with other bytes of the same size."""
    dynamodb, s3 = clients(url)
    table, bucket = config.table_name, config.bucket_name
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": GAP}, "sk": {"N": "2"}})
    dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": HEAD}, "sk": {"N": "0"}},
        UpdateExpression="SET version = :v",
        ExpressionAttributeValues={":v": {"N": "7"}},
    )
    s3.delete_object(Bucket=bucket, Key=object_key(dynamodb, table, MISSING))
    tampered = object_key(dynamodb, table, TAMPERED)
    body = s3.get_object(Bucket=bucket, Key=tampered)["Body"].read()
    s3.put_object(Bucket=bucket, Key=tampered, Body=bytes(b ^ 0xFF for b in body))


def object_key(dynamodb: Any, table: str, aggregate: str, version: int = 1) -> str:
    item = dynamodb.get_item(
        TableName=table, Key={"pk": {"S": aggregate}, "sk": {"N": str(version)}}
    )["Item"]
    return str(item["s3_key"]["S"])


#: (kind, where) of each problem ``damage`` makes, as ``verify`` reports them.
EXPECTED_PROBLEMS = {
    ("gap", f"{GAP}@2"),
    ("feed-entry", f"{GAP}@2"),  # the feed still names the deleted change set
    ("head", f"{HEAD}@3"),
    ("object-missing", f"{MISSING}@1"),
    ("object-hash", f"{TAMPERED}@1"),
}
