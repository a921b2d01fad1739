"""Stored data stays readable: the golden files of every storage format, read back.

``tests/golden/<format>/`` holds items (as DynamoDB's JSON carries them) and S3 objects
written by the release that introduced that format (``tests/golden/generate.py``). Each
is read with today's code and compared with the literal values of ``golden/cases.py``:
a change that would make stored data unreadable fails here.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import aioboto3
import anyio
import msgspec
import pytest

from eventstore_async import EventStore, StoreConfig
from eventstore_async._backends.aws.item_reader import read_query_page
from eventstore_async._backends.aws.items import record_from_item
from eventstore_async._backends.aws.wire import botocore_item
from eventstore_async._backends.memory import MemoryObjects
from eventstore_async._codec import EventCodec
from eventstore_async._offload.payload import PayloadReader
from eventstore_async._records import (
    ChangeSetRecord,
    CheckpointRecord,
    FeedCounterRecord,
    FeedEntryRecord,
    FeedShapeRecord,
    MemberRecord,
    ObjectPointer,
    SnapshotRecord,
    ViewRecord,
)

from .chaos.checker import count_events
from .conftest import remote_config
from .golden import cases

GOLDEN = Path(__file__).parent / "golden"
FORMATS = sorted(path.name for path in GOLDEN.iterdir() if (path / "items.json").exists())
SYSTEM = (
    FeedCounterRecord,
    FeedEntryRecord,
    FeedShapeRecord,
    CheckpointRecord,
    MemberRecord,
    ViewRecord,
)
#: The payload format bytes each directory holds (array, framed).
FIRST_BYTES = {"envelope-1": (0x01, 0x02), "envelope-2": (0x03, 0x04)}


def wire_items(fmt: str) -> dict[str, dict[str, Any]]:
    text = (GOLDEN / fmt / "items.json").read_text(encoding="utf-8")
    return {entry["name"]: entry["item"] for entry in json.loads(text)}


def objects(fmt: str) -> dict[str, bytes]:
    folder = GOLDEN / fmt / "objects"
    keys = (cases.PLAIN_KEY, cases.ZLIB_KEY, cases.SNAPSHOT_KEY)
    return {key: (folder / key.rsplit("/", 1)[1]).read_bytes() for key in keys}


def parsed(item: dict[str, Any]) -> Any:
    return record_from_item(botocore_item(copy.deepcopy(item)))


def blanked(record: Any) -> Any:
    """The record with its bytes left out (they are checked by decoding them)."""
    replace = msgspec.structs.replace
    if isinstance(record, ChangeSetRecord):
        record = replace(record, payload=None, metadata=None if record.metadata is None else b"")
    if isinstance(record, SnapshotRecord):
        record = replace(record, payload=None)
    if isinstance(record, ViewRecord):
        record = replace(record, document=b"")
    pointer = getattr(record, "pointer", None)
    if pointer is not None:
        record = replace(record, pointer=replace(pointer, size=-1, sha256=""))
    return record


def test_every_item_kind_and_format_is_present() -> None:
    assert {"envelope-1", "envelope-2"} <= set(FORMATS)
    for fmt in FORMATS:
        assert set(wire_items(fmt)) == set(cases.records(fmt))


ITEMS = [(fmt, name) for fmt in FORMATS for name in sorted(cases.records(fmt))]


@pytest.mark.parametrize(("fmt", "name"), ITEMS)
def test_items_read_to_their_records(fmt: str, name: str) -> None:
    item = wire_items(fmt)[name]
    record = parsed(item)
    assert blanked(record) == cases.records(fmt)[name]
    if isinstance(record, SYSTEM):
        return
    page = read_query_page(json.dumps({"Items": [item], "Count": 1}).encode())
    assert page is not None
    assert page.records == [record]  # the fast path reads it to the same record


async def payload_of(record: Any, fmt: str) -> bytes:
    if record.pointer is None:
        return bytes(record.payload)
    store = MemoryObjects()
    for key, body in objects(fmt).items():
        await store.put(key, body)
    return await PayloadReader(EventCodec(), store).fetch(record.pointer)


CHANGE_SETS = sorted(name for name in cases.records("envelope-1") if name.startswith("change"))


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", CHANGE_SETS)
async def test_change_set_payloads_decode(fmt: str, name: str) -> None:
    record = parsed(wire_items(fmt)[name])
    payload = await payload_of(record, fmt)
    assert payload[0] in FIRST_BYTES[fmt]
    assert EventCodec(*cases.TYPES).decode_events(payload) == cases.READ[fmt]
    assert EventCodec().decode_events(payload) == cases.READ_UNREGISTERED[fmt]
    if record.metadata is not None:
        assert EventCodec().decode_metadata(record.metadata) == cases.METADATA
    assert count_events(payload) == record.event_count  # the chaos checker's own reading


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["change-set-offloaded", "change-set-offloaded-zlib"])
async def test_offloaded_objects_stream_event_by_event(fmt: str, name: str) -> None:
    pointer: ObjectPointer = parsed(wire_items(fmt)[name]).pointer
    body = objects(fmt)[pointer.key]
    assert (len(body), hashlib.sha256(body).hexdigest()) == (pointer.size, pointer.sha256)
    store = MemoryObjects(chunk_size=7)  # frames cut anywhere
    await store.put(pointer.key, body)
    reader = PayloadReader(EventCodec(*cases.TYPES), store)
    assert tuple([event async for event in reader.iter_events(pointer)]) == cases.READ[fmt]


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", FORMATS)
async def test_snapshot_states_and_view_documents_decode(fmt: str) -> None:
    items = wire_items(fmt)
    codec = EventCodec(*cases.TYPES)
    for name in ("snapshot-inline", "snapshot-offloaded"):
        payload = await payload_of(parsed(items[name]), fmt)
        assert payload[0] in FIRST_BYTES[fmt]
        assert codec.decode_events(payload) == (cases.STATE,)
        assert EventCodec().decode_as(payload, cases.CartState) == cases.STATE
    document = parsed(items["view"]).document
    assert codec.decode_events(document) == (cases.DOCUMENT,)
    assert EventCodec().decode_as(document, cases.CartDoc) == cases.DOCUMENT


# -- end to end: the items put into the emulator, read through the public API -------------


async def seed(config: StoreConfig, fmt: str) -> None:
    session = aioboto3.Session()
    options = {
        "endpoint_url": config.endpoint_url,
        "region_name": config.region_name,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    async with session.client("dynamodb", **options) as ddb, session.client("s3", **options) as s3:
        for item in wire_items(fmt).values():
            await ddb.put_item(TableName=config.table_name, Item=botocore_item(copy.deepcopy(item)))
        for key, body in objects(fmt).items():
            await s3.put_object(Bucket=config.bucket_name, Key=key, Body=body)


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", FORMATS)
async def test_golden_items_load_through_the_store(
    fmt: str, request: pytest.FixtureRequest
) -> None:
    config = remote_config("emulator", request, feed_shards=4)
    async with EventStore(config, types=cases.TYPES) as store:
        await store.create_schema()
        try:
            await seed(config, fmt)
            await check_store_reads(store, cases.READ[fmt])
        finally:
            await store.drop_schema()


async def check_store_reads(store: EventStore, expected: tuple[Any, ...]) -> None:
    history = await store.load(cases.AGGREGATE)
    assert history.version == 4
    assert [cs.events for cs in history.change_sets] == [expected] * 4
    assert history.change_sets[0].metadata == cases.METADATA
    streamed = [cs.version async for cs in store.read(cases.AGGREGATE, from_version=2)]
    assert streamed == [2, 3, 4]
    events = [event async for event in store.iter_events(cases.AGGREGATE, 4)]
    assert tuple(events) == expected
    from_snapshot = await store.load(cases.AGGREGATE, snapshot_schema="cart-v1")
    assert from_snapshot.snapshot is not None
    assert (from_snapshot.snapshot.version, from_snapshot.snapshot.state) == (3, cases.STATE)
    assert await store.get_view("carts", cases.AGGREGATE) == cases.DOCUMENT
    with anyio.fail_after(10):
        async with store.subscribe("cart-view", wait=False) as subscription:
            delivered = await anext(aiter(subscription))
    assert (delivered.aggregate_id, delivered.version, delivered.events) == (
        cases.AGGREGATE,
        4,
        expected,
    )


def test_items_are_base64_in_the_files() -> None:
    """The files hold DynamoDB's JSON: a blob is base64 text, as the service sends it."""
    for fmt in FORMATS:
        payload = wire_items(fmt)["change-set-inline"]["payload"]["B"]
        assert base64.b64decode(payload)[0] == FIRST_BYTES[fmt][0]
