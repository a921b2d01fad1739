"""Query answers read straight from DynamoDB's JSON into records: the fast path's reads.

botocore's way to a record is JSON to dicts, every blob base64-decoded in Python, then
:func:`~._items.record_from_item` reading the dicts. Here msgspec decodes the items into
typed Structs (blobs included, in C) and each record is built from its fields.

Heads are read from their typed fields too, unless they list snapshots (attributes named
per schema, which no type can list). A head lists snapshots only if it has ``snap_seq``:
the one write of the lists sets it with them, and nothing removes it
(``tests/test_item_reader.py`` checks that write; scanning the answer for ``"snap:``
instead costs ~100 us per 150 KB). Those heads and system items are read botocore's way,
from their own JSON. A page that does not fit the types (a
``null`` attribute, a blob botocore would decode leniently, a key other than pk/sk), or
that holds a malformed item, makes :func:`read_query_page` return ``None``: the caller
then parses botocore's way, which also raises the right :class:`IntegrityError`.

Both ways give equal records for every item the store reads
(``tests/test_item_reader.py``). Attributes the store does not read are not looked at,
nor are the answer's other fields (``ConsumedCapacity``...): botocore's parser would
refuse a malformed one, which DynamoDB does not send.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from ..._capacity import units_of
from ..._records import (
    ChangeSetRecord,
    HeadRecord,
    MarkerRecord,
    ObjectPointer,
    Record,
    SnapshotRecord,
)
from .items import record_from_item
from .wire import botocore_item

__all__ = ["QueryPage", "query_page", "read_query_page"]


class QueryPage(msgspec.Struct, frozen=True, gc=False):
    """One Query answer: its items as records, and where the next page starts."""

    records: list[Record]
    last_key: dict[str, Any] | None
    #: The answer's ``ConsumedCapacity`` units (0 when it had none).
    capacity: float = 0.0


def query_page(response: dict[str, Any]) -> QueryPage:
    """A Query answer as botocore parses it, to records."""
    records = [record_from_item(item) for item in response.get("Items", [])]
    last_key = response.get("LastEvaluatedKey") or None
    return QueryPage(records, last_key, units_of(response.get("ConsumedCapacity")))


def read_query_page(body: bytes) -> QueryPage | None:
    """A Query answer's JSON body to records, or ``None``: read it botocore's way.

    Never raises.
    """
    try:
        answer = _ANSWER.decode(body)
        items = answer.Items
        records = [_typed_record(item) for item in items]
        untyped = [index for index, record in enumerate(records) if record is None]
        if untyped:
            _read_untyped(body, items, records, untyped)
    except Exception:  # anything unexpected: botocore's way decides, and raises
        return None
    key = answer.LastEvaluatedKey
    last_key = None if key is UNSET else {"pk": {"S": key.pk.S}, "sk": {"N": key.sk.N}}
    consumed = answer.ConsumedCapacity
    units = 0.0 if consumed is UNSET else consumed.CapacityUnits
    return QueryPage(records=records, last_key=last_key, capacity=units)  # type: ignore[arg-type]


def _read_untyped(
    body: bytes, items: list[_Item], records: list[Record | None], untyped: list[int]
) -> None:
    """Heads and system items, in place. A head without ``snap_seq`` (so without
    snapshot lists) is read from its typed fields; the others botocore's way, from
    their own JSON."""
    raw_items: list[msgspec.Raw] | None = None
    for index in untyped:
        item = items[index]
        if item.kind is UNSET and item.snap_seq is UNSET:
            records[index] = _head(item)
            continue
        if raw_items is None:
            raw_items = _RAW_ANSWER.decode(body).Items
        records[index] = record_from_item(botocore_item(_JSON.decode(raw_items[index])))


# -- the typed shapes: one Struct per attribute value kind this store writes -------------


class _S(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    S: str


class _N(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    N: str


class _B(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    B: bytes


class _Item(msgspec.Struct, frozen=True, gc=False):
    """Every attribute this store writes to an aggregate's items; others are ignored.

    Absent attributes are ``UNSET``; a ``null`` one fails the decode (botocore's way
    then decides).
    """

    pk: _S
    sk: _N
    kind: _S | UnsetType = UNSET
    commit_id: _S | UnsetType = UNSET
    ts_us: _N | UnsetType = UNSET
    event_count: _N | UnsetType = UNSET
    version: _N | UnsetType = UNSET
    agg_type: _S | UnsetType = UNSET
    created_us: _N | UnsetType = UNSET
    updated_us: _N | UnsetType = UNSET
    snap_seq: _N | UnsetType = UNSET
    snap_schema: _S | UnsetType = UNSET
    payload: _B | UnsetType = UNSET
    metadata: _B | UnsetType = UNSET
    s3_key: _S | UnsetType = UNSET
    s3_size: _N | UnsetType = UNSET
    s3_sha256: _S | UnsetType = UNSET
    s3_codec: _S | UnsetType = UNSET
    digest: _S | UnsetType = UNSET


class _Key(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    pk: _S
    sk: _N


class _Consumed(msgspec.Struct, frozen=True, gc=False):
    CapacityUnits: float = 0.0


class _Answer(msgspec.Struct, frozen=True, gc=False):
    Items: list[_Item] = []
    LastEvaluatedKey: _Key | UnsetType = UNSET
    ConsumedCapacity: _Consumed | UnsetType = UNSET


class _RawAnswer(msgspec.Struct, frozen=True, gc=False):
    Items: list[msgspec.Raw] = []


_ANSWER = msgspec.json.Decoder(_Answer)
_RAW_ANSWER = msgspec.json.Decoder(_RawAnswer)
_JSON = msgspec.json.Decoder()


def _typed_record(item: _Item) -> Record | None:
    """The item's record, as ``record_from_item`` makes it; ``None``: a head or a
    system item (see :func:`_read_untyped`).

    Raises:
        AttributeError: an attribute its kind must have is missing.
    """
    sort_key = item.sk.N
    if item.kind is not UNSET:
        return None
    if "." in sort_key:
        return _snapshot(item)
    version = int(sort_key)
    if version > 0:
        return _change_set(item, version)
    if version == 0:
        return None
    return MarkerRecord(
        aggregate_id=item.pk.S,
        commit_id=item.commit_id.S,  # type: ignore[union-attr]
        version=int(item.version.N),  # type: ignore[union-attr]
    )


def _head(item: _Item) -> HeadRecord:
    agg_type = item.agg_type
    return HeadRecord(
        aggregate_id=item.pk.S,
        aggregate_type=agg_type.S if agg_type else None,
        version=int(item.version.N),  # type: ignore[union-attr]
        last_commit_id=item.commit_id.S,  # type: ignore[union-attr]
        event_count=int(item.event_count.N),  # type: ignore[union-attr]
        created_us=int(item.created_us.N),  # type: ignore[union-attr]
        updated_us=int(item.updated_us.N),  # type: ignore[union-attr]
    )


def _change_set(item: _Item, version: int) -> ChangeSetRecord:
    pointer = _pointer(item)
    metadata = item.metadata
    return ChangeSetRecord(
        aggregate_id=item.pk.S,
        version=version,
        commit_id=item.commit_id.S,  # type: ignore[union-attr]
        timestamp_us=int(item.ts_us.N),  # type: ignore[union-attr]
        event_count=int(item.event_count.N),  # type: ignore[union-attr]
        payload=None if pointer else item.payload.B,  # type: ignore[union-attr]
        metadata=metadata.B if metadata else None,
        pointer=pointer,
        digest=item.digest.S if item.digest else None,
    )


def _snapshot(item: _Item) -> SnapshotRecord:
    pointer = _pointer(item)
    return SnapshotRecord(
        aggregate_id=item.pk.S,
        version=int(item.version.N),  # type: ignore[union-attr]
        schema=item.snap_schema.S,  # type: ignore[union-attr]
        timestamp_us=int(item.ts_us.N),  # type: ignore[union-attr]
        payload=None if pointer else item.payload.B,  # type: ignore[union-attr]
        pointer=pointer,
    )


def _pointer(item: _Item) -> ObjectPointer | None:
    if item.s3_key is UNSET:
        return None
    codec = item.s3_codec
    return ObjectPointer(
        key=item.s3_key.S,
        size=int(item.s3_size.N),  # type: ignore[union-attr]
        sha256=item.s3_sha256.S,  # type: ignore[union-attr]
        compression=codec.S if codec else None,
    )
