"""What the golden files hold: fixed event types, events and records.

``generate.py`` writes these through the library's own encoders; ``test_golden.py``
reads the files back and compares what comes out with the values here. The values are
literals (fixed ids, timestamps, keys), so a file written once stays comparable forever.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from eventstore_async import EventType, RawEvent
from eventstore_async._records import (
    ChangeSetRecord,
    CheckpointRecord,
    FeedCounterRecord,
    FeedEntryRecord,
    FeedShapeRecord,
    HeadRecord,
    MarkerRecord,
    MemberRecord,
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


class Priced(msgspec.Struct, tag="golden.Priced", frozen=True):
    """At version 2; version 1 was ``{"cents": int}``."""

    amount: int
    currency: str


def cents_to_amount(body: dict[str, Any]) -> dict[str, Any]:
    return {"amount": body["cents"], "currency": "EUR"}


PRICED = EventType(Priced, version=2, upcasters={1: cents_to_amount})
TYPES: tuple[type[msgspec.Struct] | EventType, ...] = (
    ItemAdded,
    Labelled,
    CartState,
    CartDoc,
    PRICED,
)

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

#: Versioned envelopes (0x03, 0x04) add events at other versions than 1.
EVENTS_VERSIONED: tuple[Any, ...] = (
    *EVENTS,
    Priced(amount=5, currency="EUR"),
    RawEvent(type="golden.Priced", data={"cents": 7}, version=1),  # upcast on reading
    RawEvent(type="golden.Later", data={"z": 2}, version=3),  # newer than anything known
)
EVENTS_VERSIONED_READ = (*EVENTS, Priced(5, "EUR"), Priced(7, "EUR"), EVENTS_VERSIONED[-1])
EVENTS_VERSIONED_UNREGISTERED = (
    *EVENTS_UNREGISTERED,
    RawEvent("golden.Priced", {"type": "golden.Priced", "amount": 5, "currency": "EUR"}, 2),
    EVENTS_VERSIONED[-2],
    EVENTS_VERSIONED[-1],
)

#: Per golden directory: the events written, read with ``TYPES``, read with no types.
WRITTEN = {"envelope-1": EVENTS, "envelope-2": EVENTS_VERSIONED}
READ = {"envelope-1": EVENTS, "envelope-2": EVENTS_VERSIONED_READ}
READ_UNREGISTERED = {"envelope-1": EVENTS_UNREGISTERED, "envelope-2": EVENTS_VERSIONED_UNREGISTERED}
#: The types registered by the release that wrote each directory.
WRITER_TYPES: dict[str, tuple[Any, ...]] = {"envelope-1": TYPES[:4], "envelope-2": TYPES}

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
    version: int, count: int, pointer: ObjectPointer | None = None, *, meta: bool
) -> ChangeSetRecord:
    """A change set record as the golden item must read; ``payload`` is compared apart."""
    return ChangeSetRecord(
        aggregate_id=AGGREGATE,
        version=version,
        commit_id=f"commit-{version}",
        timestamp_us=T0 + version,
        event_count=count,
        payload=None,
        metadata=None if not meta else b"",  # b"": "has metadata", compared apart
        pointer=pointer,
    )


def records(fmt: str) -> dict[str, Any]:
    """Every record of directory ``fmt``, by the name of its golden item; payloads,
    metadata and documents are ``None`` / ``b""`` here and checked by decoding them."""
    count = len(WRITTEN[fmt])
    later = fmt != "envelope-1"  # items and attributes added since envelope-1
    added: dict[str, Any] = {}
    if later:
        added["feed-shape"] = FeedShapeRecord(shards=4)
        added["group-member"] = MemberRecord(group="cart-group", owner="owner-2", lease_until_us=T0)
    types = ("Labelled", "golden.ItemAdded", "golden.Later", "golden.Priced", "golden.Unknown")
    entry_types: dict[str, Any] = {"aggregate_type": "Cart", "event_types": types} if later else {}
    return added | {
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
        "change-set-inline": change_set(1, count, meta=True),
        "change-set-inline-framed": change_set(2, count, meta=False),
        "change-set-offloaded": change_set(
            3, count, ObjectPointer(PLAIN_KEY, size=-1, sha256="", compression=None), meta=True
        ),
        "change-set-offloaded-zlib": change_set(
            4, count, ObjectPointer(ZLIB_KEY, size=-1, sha256="", compression="zlib"), meta=False
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
            event_count=count,
            **entry_types,
        ),
        "checkpoint": CheckpointRecord(
            name="cart-view",
            positions=(0, 7, 0, 41),
            owner="owner-1",
            lease_until_us=T0 + 20,
            seq=9,
        ),
        "view": ViewRecord(view="carts", key=AGGREGATE, document=b""),
    }
