"""The three client paths under test, each sending the same requests.

- ``aiobotocore``: stock aiobotocore, default config (the obvious implementation).
- ``boto3-threads``: boto3's sync client called in a thread pool (what the Python
  peers do); default config but ``max_pool_connections`` >= concurrency.
- ``eventstore_async``: ours, through the public :class:`EventStore` API.

The baselines do the same application-level work as the store: encode the events with
the store's codec, plan the append with the store's pure planner and item mapping
(head Update/Put + change-set Put, conditions, ``ALL_OLD``, request token), and decode
every loaded item back to a :class:`ChangeSet`. So the only difference is the client.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiobotocore.session
import anyio
import anyio.to_thread
import boto3.session
import botocore.config

from eventstore_async import (
    ANY,
    AggregateHistory,
    ChangeSet,
    EventStore,
    StoreConfig,
)
from eventstore_async._backends.aws.items import head_key, record_from_item, transact_items
from eventstore_async._codec import EventCodec
from eventstore_async._read.decode import to_head
from eventstore_async._records import ChangeSetRecord, HeadRecord
from eventstore_async._timeutil import from_us
from eventstore_async._write.plan import AppendRequest, plan_append

from .workloads import BenchEvent, accounts_decider, withdrawal

__all__ = ["COMMAND_REFERENCE", "VARIANTS", "Endpoint", "Variant", "open_variant"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the requests go; ``url=None`` is AWS itself, ``None`` keys the default chain."""

    url: str | None
    region: str
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "region_name": self.region,
            "endpoint_url": self.url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "aws_session_token": self.session_token,
        }


class Variant(Protocol):
    """One client path. ``expected=None`` appends with ``ANY`` (read the head first)."""

    name: str

    async def append(self, aggregate_id: str, event: BenchEvent, expected: int | None) -> None: ...

    async def load(self, aggregate_id: str) -> AggregateHistory: ...


class _Requests:
    """The application-level work of the baselines: build requests, decode answers."""

    def __init__(self, table: str) -> None:
        self.table = table
        self._codec = EventCodec(BenchEvent)

    def transact(self, aggregate_id: str, event: BenchEvent, expected: int, guarded: bool) -> Any:
        events = (event,)
        request = _append_request(
            aggregate_id=aggregate_id,
            events=events,
            event_count=len(events),
            payload=self._codec.encode_events(events),
            pointer=None,
            metadata={},
            metadata_bytes=None,
            aggregate_type=None,
            commit_id=uuid.uuid4().hex,
            guarded=guarded,
        )
        plan = plan_append(request, expected, time.time_ns() // 1000)
        return {"TransactItems": transact_items(plan, self.table), "ClientRequestToken": plan.token}

    def get_head(self, aggregate_id: str) -> dict[str, Any]:
        return {"TableName": self.table, "Key": head_key(aggregate_id), "ConsistentRead": True}

    def head_version(self, response: dict[str, Any]) -> int:
        item = response.get("Item")
        return int(item["version"]["N"]) if item else 0

    def query(self, aggregate_id: str) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND sk >= :low",
            "ExpressionAttributeValues": {":pk": {"S": aggregate_id}, ":low": {"N": "0"}},
            # As the store's history query: snapshot items sit between change sets.
            "FilterExpression": "attribute_not_exists(snap_schema)",
            "ConsistentRead": True,
        }

    def history(self, items: list[dict[str, Any]]) -> AggregateHistory:
        """Decode every item as the store does: records, then events with the codec."""
        records = [record_from_item(item) for item in items]
        head = next(r for r in records if isinstance(r, HeadRecord))
        change_sets = tuple(self._change_set(r) for r in records if isinstance(r, ChangeSetRecord))
        return AggregateHistory(head=to_head(head), change_sets=change_sets)

    def _change_set(self, record: ChangeSetRecord) -> ChangeSet:
        return ChangeSet(
            aggregate_id=record.aggregate_id,
            version=record.version,
            commit_id=record.commit_id,
            timestamp=from_us(record.timestamp_us),
            events=self._codec.decode_events(record.payload or b""),
            metadata=self._codec.decode_metadata(record.metadata),
        )


def _append_request(**values: Any) -> AppendRequest:
    """The planner's (private, evolving) request type, from the fields it has now."""
    names = {f.name for f in dataclasses.fields(AppendRequest)}
    return AppendRequest(**{name: v for name, v in values.items() if name in names})


class AiobotocoreVariant:
    """Stock aiobotocore with its default config (10 pooled connections, validation on)."""

    name = "aiobotocore"

    def __init__(self, client: Any, requests: _Requests) -> None:
        self._client = client
        self._requests = requests
        self._pages = client.get_paginator("query")

    async def append(self, aggregate_id: str, event: BenchEvent, expected: int | None) -> None:
        requests = self._requests
        if expected is None:
            head = await self._client.get_item(**requests.get_head(aggregate_id))
            version = requests.head_version(head)
        else:
            version = expected
        params = requests.transact(aggregate_id, event, version, guarded=expected is None)
        await self._client.transact_write_items(**params)

    async def load(self, aggregate_id: str) -> AggregateHistory:
        items: list[dict[str, Any]] = []
        async for page in self._pages.paginate(**self._requests.query(aggregate_id)):
            items.extend(page.get("Items", []))
        return self._requests.history(items)


class Boto3ThreadsVariant:
    """boto3's sync client; each whole operation runs in a worker thread."""

    name = "boto3-threads"

    def __init__(self, client: Any, requests: _Requests, concurrency: int) -> None:
        self._client = client
        self._requests = requests
        self._pages = client.get_paginator("query")
        self._limiter = anyio.CapacityLimiter(concurrency)

    async def append(self, aggregate_id: str, event: BenchEvent, expected: int | None) -> None:
        await self._in_thread(self._append, aggregate_id, event, expected)

    async def load(self, aggregate_id: str) -> AggregateHistory:
        history: AggregateHistory = await self._in_thread(self._load, aggregate_id)
        return history

    async def _in_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(function, *args, limiter=self._limiter)

    def _append(self, aggregate_id: str, event: BenchEvent, expected: int | None) -> None:
        requests = self._requests
        if expected is None:
            version = requests.head_version(
                self._client.get_item(**requests.get_head(aggregate_id))
            )
        else:
            version = expected
        self._client.transact_write_items(
            **requests.transact(aggregate_id, event, version, guarded=expected is None)
        )

    def _load(self, aggregate_id: str) -> AggregateHistory:
        items: list[dict[str, Any]] = []
        for page in self._pages.paginate(**self._requests.query(aggregate_id)):
            items.extend(page.get("Items", []))
        return self._requests.history(items)


class OursVariant:
    """eventstore_async through its public API, with its default configuration."""

    name = "eventstore_async"

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._accounts = store.repository(accounts_decider())

    async def command(self, aggregate_id: str, event: BenchEvent) -> None:
        """A withdrawal through the repository, with a command id (the marker is written)."""
        await self._accounts.execute(aggregate_id, withdrawal(event), command_id=uuid.uuid4().hex)

    async def append(self, aggregate_id: str, event: BenchEvent, expected: int | None) -> None:
        version = ANY if expected is None else expected
        await self._store.append(aggregate_id, [event], expected_version=version)

    async def load(self, aggregate_id: str) -> AggregateHistory:
        return await self._store.load(aggregate_id)


@asynccontextmanager
async def _open_aiobotocore(
    endpoint: Endpoint, table: str, concurrency: int
) -> AsyncIterator[Variant]:
    session = aiobotocore.session.get_session()
    async with session.create_client("dynamodb", **endpoint.client_kwargs()) as client:
        yield AiobotocoreVariant(client, _Requests(table))


@asynccontextmanager
async def _open_boto3(endpoint: Endpoint, table: str, concurrency: int) -> AsyncIterator[Variant]:
    # Below the concurrency urllib3 would discard and reopen connections ("pool is full").
    config = botocore.config.Config(max_pool_connections=max(10, concurrency))
    client = boto3.session.Session().client("dynamodb", config=config, **endpoint.client_kwargs())
    try:
        yield Boto3ThreadsVariant(client, _Requests(table), concurrency)
    finally:
        client.close()


_DEFAULT_POOL = StoreConfig(table_name="default").max_pool_connections


@asynccontextmanager
async def _open_ours(endpoint: Endpoint, table: str, concurrency: int) -> AsyncIterator[Variant]:
    config = StoreConfig(
        table_name=table,
        endpoint_url=endpoint.url,
        region_name=endpoint.region,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        aws_session_token=endpoint.session_token,
        max_pool_connections=max(_DEFAULT_POOL, concurrency),
    )
    async with EventStore(config, types=[BenchEvent]) as store:
        yield OursVariant(store)


class OursAppendVariant(OursVariant):
    """Ours doing a bare explicit-version append where the others run a command: the
    command workload's reference, measured in the same rounds."""

    name = "eventstore_async-append"
    command = None  # type: ignore[assignment]


@asynccontextmanager
async def _open_ours_append(
    endpoint: Endpoint, table: str, concurrency: int
) -> AsyncIterator[Variant]:
    async with _open_ours(endpoint, table, concurrency) as ours:
        assert isinstance(ours, OursVariant)
        yield OursAppendVariant(ours._store)


_Opener = Callable[[Endpoint, str, int], AbstractAsyncContextManager[Variant]]

#: Variant name -> opener, in report order (baselines first, ours last).
VARIANTS: dict[str, _Opener] = {
    "aiobotocore": _open_aiobotocore,
    "boto3-threads": _open_boto3,
    "eventstore_async": _open_ours,
}


#: The command workload's reference (run with it whenever ours is): our bare append.
COMMAND_REFERENCE = "eventstore_async-append"
_REFERENCES: dict[str, _Opener] = {COMMAND_REFERENCE: _open_ours_append}


def open_variant(
    name: str, endpoint: Endpoint, table: str, concurrency: int
) -> AbstractAsyncContextManager[Variant]:
    """Open one variant bound to ``table``; leaving the block closes its client."""
    opener = VARIANTS.get(name) or _REFERENCES[name]
    return opener(endpoint, table, concurrency)
