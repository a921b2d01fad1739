"""Query answers read straight from DynamoDB's JSON into records: the fast path's reads.

botocore's way to a record is JSON to dicts, every blob base64-decoded in Python, then
:func:`~._items.record_from_item` reading the dicts. Here msgspec decodes the items into
typed Structs (blobs included, in C) and each record is built from its fields.

A head that lists snapshots (attributes named per schema, which no type can list) and
system items are read botocore's way, from a second, untyped decode of the answer. A
page that does not fit the types at all, or holds a malformed item, makes
:func:`read_query_page` return ``None``: the caller then parses botocore's way, which
also raises the right :class:`IntegrityError`. Both ways give equal records
(``tests/test_item_reader.py``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._items import record_from_item
from ._records import (
    ChangeSetRecord,
    HeadRecord,
    MarkerRecord,
    ObjectPointer,
    Record,
    SnapshotRecord,
)
from ._wire import botocore_item

__all__ = ["QueryPage", "query_page", "read_query_page"]


class QueryPage(msgspec.Struct, frozen=True, gc=False):
    """One Query answer: its items as records, and where the next page starts."""

    records: list[Record]
    last_key: dict[str, Any] | None


def query_page(response: dict[str, Any]) -> QueryPage:
    """A Query answer as botocore parses it, to records."""
    records = [record_from_item(item) for item in response.get("Items", [])]
    return QueryPage(records=records, last_key=response.get("LastEvaluatedKey") or None)


def read_query_page(body: bytes) -> QueryPage | None:
    """A Query answer's JSON body to records, or ``None``: read it botocore's way."""
    try:
        answer = _ANSWER.decode(body)
        records = [_typed_record(item) for item in answer.Items]
        untyped = [index for index, record in enumerate(records) if record is None]
        if untyped:
            items = msgspec.json.decode(body)["Items"]
            for index in untyped:
                records[index] = record_from_item(botocore_item(items[index]))
    except Exception:  # anything unexpected: botocore's way decides, and raises
        return None
    key = answer.LastEvaluatedKey
    last_key = None if key is None else {"pk": {"S": key.pk.S}, "sk": {"N": key.sk.N}}
    return QueryPage(records=records, last_key=last_key)  # type: ignore[arg-type]


# -- the typed shapes: one Struct per attribute value kind this store writes -------------


class _S(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    S: str


class _N(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    N: str


class _B(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    B: bytes


class _Item(msgspec.Struct, frozen=True, gc=False):
    """Every attribute this store writes to an aggregate's items; others are ignored."""

    pk: _S
    sk: _N
    kind: _S | None = None
    commit_id: _S | None = None
    ts_us: _N | None = None
    event_count: _N | None = None
    version: _N | None = None
    agg_type: _S | None = None
    created_us: _N | None = None
    updated_us: _N | None = None
    snap_seq: _N | None = None
    snap_schema: _S | None = None
    payload: _B | None = None
    metadata: _B | None = None
    s3_key: _S | None = None
    s3_size: _N | None = None
    s3_sha256: _S | None = None
    s3_codec: _S | None = None


class _Key(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    pk: _S
    sk: _N


class _Answer(msgspec.Struct, frozen=True, gc=False):
    Items: list[_Item] = []
    LastEvaluatedKey: _Key | None = None


_ANSWER = msgspec.json.Decoder(_Answer)


def _typed_record(item: _Item) -> Record | None:
    """The item's record, as ``record_from_item`` makes it; ``None``: not typed here
    (a system item, or a head that lists snapshots).

    Raises:
        AttributeError: an attribute its kind must have is missing.
    """
    sort_key = item.sk.N
    if item.kind is not None:
        return None
    if "." in sort_key:
        return _snapshot(item)
    version = int(sort_key)
    if version > 0:
        return _change_set(item, version)
    if version == 0:
        # Snapshot lists are only ever written with snap_seq: without it, there are none.
        return None if item.snap_seq is not None else _head(item)
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
    if item.s3_key is None:
        return None
    codec = item.s3_codec
    return ObjectPointer(
        key=item.s3_key.S,
        size=int(item.s3_size.N),  # type: ignore[union-attr]
        sha256=item.s3_sha256.S,  # type: ignore[union-attr]
        compression=codec.S if codec else None,
    )
