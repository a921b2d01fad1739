"""What an append and a load cost in DynamoDB capacity units, from DynamoDB's documented
rules applied to the items this store really writes and reads.

The emulator reports no write capacity (and its read figures are its own), so the
units are computed: every request an operation sends is captured on its way to the
emulator (``TransactWriteItems`` items, reads), each item's size is measured as
DynamoDB counts it (``items.item_size``: names plus values), and the rules are applied:

- a transactional write costs 2 write request units per 1 KB of each item (rounded up
  per item); an update is charged on the larger of the item before and after;
- a strongly consistent read costs 1 read request unit per 4 KB: a ``GetItem`` per item
  (rounded up), a ``Query`` on the total size of the items it reads (rounded up once
  per page); a ``BatchGetItem`` per item.

``python -m benchmarks.capacity`` prints one line per case (run it with the emulator
extra installed).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from eventstore_async import ANY, EventStore, StoreConfig
from eventstore_async._backends.aws.dynamodb import DynamoDBBackend
from eventstore_async._backends.aws.items import item_size
from eventstore_async.emulator import run_emulator

KB = 1024


class Captured:
    """Write and read units of the requests sent while ``active``."""

    def __init__(self) -> None:
        self.write = 0.0
        self.read = 0.0
        self.requests: list[str] = []

    def transaction(self, actions: list[dict[str, Any]], olds: list[int]) -> None:
        self.requests.append("TransactWriteItems")
        for action, old in zip(actions, olds, strict=True):
            size = max(_action_size(action), old)
            self.write += 2 * math.ceil(max(size, 1) / KB)

    def reads(self, operation: str, sizes: list[int]) -> None:
        self.requests.append(operation)
        if operation == "Query":
            self.read += max(1, math.ceil(sum(sizes) / (4 * KB)))
        else:
            self.read += sum(max(1, math.ceil(s / (4 * KB))) for s in sizes) or 1


def _action_size(action: dict[str, Any]) -> int:
    (_kind, body), *_ = action.items()
    if "Item" in body:
        return item_size(body["Item"])
    # an update: the key plus the values it sets (the old item's size is added by the caller)
    values = body.get("ExpressionAttributeValues", {})
    return item_size(body["Key"]) + sum(item_size({"v": v}) for v in values.values())


def instrument(backend: DynamoDBBackend, captured: Captured, raw: Any) -> None:
    """Capture every DynamoDB request a store's (opened) backend sends."""
    client = backend._dynamodb
    original_twi = client.transact_write_items
    original_get, original_query = client.get_item, client.query
    original_batch = client.batch_get_item

    async def transact_write_items(**params: Any) -> Any:
        actions = params["TransactItems"]
        olds = [_old_size(raw, action) for action in actions]
        captured.transaction(actions, olds)
        return await original_twi(**params)

    async def get_item(**params: Any) -> Any:
        answer = await original_get(**params)
        captured.reads("GetItem", [item_size(answer["Item"])] if "Item" in answer else [0])
        return answer

    async def query(**params: Any) -> Any:
        answer = await original_query(**params)
        captured.reads("Query", [item_size(i) for i in answer.get("Items", [])])
        return answer

    async def batch_get_item(**params: Any) -> Any:
        answer = await original_batch(**params)
        items = [i for table in answer.get("Responses", {}).values() for i in table]
        captured.reads("BatchGetItem", [item_size(i) for i in items])
        return answer

    client.transact_write_items = transact_write_items
    client.get_item, client.query = get_item, query
    client.batch_get_item = batch_get_item
    client.read = None  # the fast path's Query reader: send Query through query() above


def _old_size(raw: Any, action: dict[str, Any]) -> int:
    (kind, body), *_ = action.items()
    if kind != "Update":
        return 0
    found = raw.get_item(TableName=body["TableName"], Key=body["Key"], ConsistentRead=True)
    return item_size(found["Item"]) if "Item" in found else 0


def on_own_backend(config: StoreConfig) -> tuple[EventStore, DynamoDBBackend]:
    """A store and the DynamoDB backend it runs on (handed to it, so the benchmark can
    watch the backend's requests)."""
    backend = DynamoDBBackend(config)
    return EventStore(config, backend=backend), backend


async def measure(
    config: StoreConfig, raw: Any, work: Callable[[EventStore], Awaitable[Any]]
) -> Captured:
    store, backend = on_own_backend(config.replace(fast_path=False))
    async with store:
        await store.create_schema()
        await store.append("warm-up", [{"n": 0}], expected_version=0)  # first-append reads
        captured = Captured()
        instrument(backend, captured, raw)
        await work(store)
        await store.drop_schema()
    return captured


def cases() -> dict[str, Callable[[EventStore], Awaitable[Any]]]:
    small = [{"type": "OrderPlaced", "sku": "sku-123", "qty": 2}]  # ~60 bytes encoded
    three_kb = [{"type": "Note", "text": "x" * 3000}]
    big = [{"type": "Blob", "text": "x" * 70_000}]  # over the 64 KiB threshold: to S3

    async def first(store: EventStore) -> None:
        await store.append("a", small, expected_version=0)

    return {
        "new aggregate, 1 small event": first,
        "inline, 3 KB of events": lambda s: s.append("a", three_kb, expected_version=0),
        "offloaded (70 KB to S3)": lambda s: s.append("a", big, expected_version=0),
        "ANY, 1 small event": lambda s: s.append("a", small, expected_version=ANY),
    }


def main() -> None:
    import boto3

    with run_emulator() as url:
        keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        raw = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", **keys)
        base = StoreConfig(table_name="capacity", bucket_name="capacity", endpoint_url=url, **keys)
        for feed in (0, 4):
            for name, work in cases().items():
                config = base.replace(feed_shards=feed)
                captured = anyio.run(measure, config, raw, work)
                print(
                    f"{name + (', feed on' if feed else ''):40} write {captured.write:5.1f} WRU"
                    f"  read {captured.read:4.1f} RRU  {' '.join(captured.requests)}"
                )
        for count, size in ((10, 200), (100, 1000)):
            events = [{"type": "Note", "text": "x" * size}]

            async def run_load(store: EventStore, n: int = count, e: Any = events) -> None:
                for version in range(n):
                    await store.append("b", e, expected_version=version)

            captured = anyio.run(measure_load, base, raw, run_load)
            print(f"load of {count} change sets of ~{size} B{'':16} read {captured:4.1f} RRU")


async def measure_load(
    config: StoreConfig, raw: Any, fill: Callable[[EventStore], Awaitable[Any]]
) -> float:
    store, backend = on_own_backend(config.replace(fast_path=False))
    async with store:
        await store.create_schema()
        await fill(store)
        captured = Captured()
        instrument(backend, captured, raw)
        await store.load("b")
        await store.drop_schema()
    return captured.read


if __name__ == "__main__":
    main()
