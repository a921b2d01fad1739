"""What the golden files hold: fixed event types, events and records.

``generate.py`` writes these through the library's own encoders; ``test_golden.py``
reads the files back and compares what comes out with the values here. The values are
literals (fixed ids, timestamps, keys), so a file written once stays comparable forever.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from eventstore_async import RawEvent
from eventstore_async._records import (
    ChangeSetRecord,
    CheckpointRecord,
    FeedCounterRecord,
    FeedEntryRecord,
    HeadRecord,
    MarkerRecord,
    ObjectPointer,
    SnapshotRecord,
    ViewRecord,
)


class ItemAdded(msgspec.Struct, tag="golden.ItemAdded", frozen=True):
    sku: str
    qty: int
    price: float
    at: datetime
    note: str | None = None


class Labelled(msgspec.Struct, frozen=True):
    """Untagged: stored under its class name."""

    name: str
    tags: list[str]
    blob: bytes


class CartState(msgspec.Struct, tag="golden.CartState", frozen=True):
    items: dict[str, int]
    total: int


class CartDoc(msgspec.Struct, tag="golden.CartDoc", frozen=True):
    owner: str
    lines: int


TYPES: tuple[type[msgspec.Struct], ...] = (ItemAdded, Labelled, CartState, CartDoc)

AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
T0 = 1_767_323_045_678_901  # AT in microseconds

#: One event of every kind a change set may hold.
EVENTS: tuple[Any, ...] = (
    ItemAdded(sku="sku-ü-1", qty=2**40, price=19.5, at=AT, note=None),
    Labelled(name="x", tags=["a", "b"], blob=b"\x00\xff"),
    {"plain": "mapping", "n": [1, 2.5, None, True], "nested": {"k": "ü"}},
    RawEvent(type="golden.Unknown", data={"x": 1, "y": [b"\x01"]}),
)

#: The same events read by a store that registered none of the types.
EVENTS_UNREGISTERED: tuple[Any, ...] = (
    RawEvent(
        type="golden.ItemAdded",
        data={
            "type": "golden.ItemAdded",
            "sku": "sku-ü-1",
            "qty": 2**40,
            "price": 19.5,
            "at": AT,
            "note": None,
        },
    ),
    RawEvent(type="Labelled", data={"name": "x", "tags": ["a", "b"], "blob": b"\x00\xff"}),
    EVENTS[2],
    EVENTS[3],
)

METADATA: dict[str, Any] = {"user": "ann", "trace": [1, 2], "when": AT}
STATE = CartState(items={"sku-ü-1": 2}, total=39)
DOCUMENT = CartDoc(owner="ann", lines=4)

AGGREGATE = "cart-ü-1"
PREFIX = "golden/"
#: Object keys as ``object_key`` makes them (base64url of the id, then a fixed hex).
PLAIN_KEY = PREFIX + "Y2FydC3DvC0x/00000000000000000000000000000003"
ZLIB_KEY = PREFIX + "Y2FydC3DvC0x/00000000000000000000000000000004"
SNAPSHOT_KEY = PREFIX + "Y2FydC3DvC0x/00000000000000000000000000000005"


def change_set(
    version: int, pointer: ObjectPointer | None = None, *, meta: bool
) -> ChangeSetRecord:
    """A change set record as the golden item must read; ``payload`` is compared apart."""
    return ChangeSetRecord(
        aggregate_id=AGGREGATE,
        version=version,
        commit_id=f"commit-{version}",
        timestamp_us=T0 + version,
        event_count=len(EVENTS),
        payload=None,
        metadata=None if not meta else b"",  # b"": "has metadata", compared apart
        pointer=pointer,
    )


#: Every record, by the name of its golden item; payloads, metadata and documents are
#: ``None`` / ``b""`` here and checked by decoding them.
RECORDS: dict[str, Any] = {
    "head": HeadRecord(
        aggregate_id=AGGREGATE,
        aggregate_type="Cart",
        version=4,
        last_commit_id="commit-4",
        event_count=16,
        created_us=T0,
        updated_us=T0 + 4,
        snapshots={"cart-v1": (2, 3)},
        snapshot_seq=2,
    ),
    "head-untyped": HeadRecord(
        aggregate_id="cart-2",
        aggregate_type=None,
        version=3,
        last_commit_id="commit-3",
        event_count=3,
        created_us=T0,
        updated_us=T0 + 3,
    ),
    "change-set-0x01-inline": change_set(1, meta=True),
    "change-set-0x02-inline": change_set(2, meta=False),
    "change-set-offloaded": change_set(
        3, ObjectPointer(PLAIN_KEY, size=-1, sha256="", compression=None), meta=True
    ),
    "change-set-offloaded-zlib": change_set(
        4, ObjectPointer(ZLIB_KEY, size=-1, sha256="", compression="zlib"), meta=False
    ),
    "snapshot-inline": SnapshotRecord(
        aggregate_id=AGGREGATE, version=2, schema="cart-v1", timestamp_us=T0 + 10, payload=None
    ),
    "snapshot-offloaded": SnapshotRecord(
        aggregate_id=AGGREGATE,
        version=3,
        schema="cart-v1",
        timestamp_us=T0 + 11,
        payload=None,
        pointer=ObjectPointer(SNAPSHOT_KEY, size=-1, sha256="", compression="zlib"),
    ),
    "commit-marker": MarkerRecord(aggregate_id=AGGREGATE, commit_id="commit-any-5", version=5),
    "feed-counter": FeedCounterRecord(shard=3, position=42),
    "feed-entry": FeedEntryRecord(
        shard=3,
        position=42,
        aggregate_id=AGGREGATE,
        version=4,
        commit_id="commit-4",
        timestamp_us=T0 + 4,
        event_count=len(EVENTS),
    ),
    "checkpoint": CheckpointRecord(
        name="cart-view", positions=(0, 7, 0, 41), owner="owner-1", lease_until_us=T0 + 20, seq=9
    ),
    "view": ViewRecord(view="carts", key=AGGREGATE, document=b""),
}
