"""Write the golden files of the current storage format: ``python -m tests.golden.generate``.

Writes ``tests/golden/<CURRENT>/`` (or the directory named as the argument):
``items.json`` (every item kind, as DynamoDB's JSON sends it, blobs in base64) and
``objects/`` (the S3 objects the offloaded items point to). Deterministic: fixed ids,
timestamps and object keys (``cases.py``), so running it again on unchanged code
rewrites the same bytes. Directories of earlier formats are
not to be rewritten: they are what older releases stored, and must stay readable
forever. (This release still writes ``envelope-1`` byte for byte while no type is
registered above version 1: ``python -m tests.golden.generate envelope-1`` leaves the
objects unchanged.)

- ``envelope-1``: formats 0x01 and 0x02, ``[type_name, body]`` envelopes;
- ``envelope-2``: formats 0x03 and 0x04, ``[type_name, version, body]`` envelopes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from eventstore_async._backends.aws.items import record_to_item
from eventstore_async._codec import FORMAT_FRAMED_VERSIONED, EventCodec
from eventstore_async._offload.payload import _compressed
from eventstore_async._records import ChangeSetRecord, ObjectPointer, SnapshotRecord, ViewRecord

from . import cases

#: The directory this release writes (one per envelope layout).
CURRENT = "envelope-2"
ROOT = Path(__file__).parent


def framed(codec: EventCodec, events: tuple[Any, ...]) -> bytes:
    buffer = bytearray(codec.framed_header(events))
    versioned = buffer[0] == FORMAT_FRAMED_VERSIONED
    for index, event in enumerate(events):
        codec.append_frame(buffer, index, event, versioned=versioned)
    return bytes(buffer)


def zlib_object(payload: bytes) -> bytes:
    async def chunks() -> Any:
        yield payload

    async def collect() -> bytes:
        return b"".join([part async for part in _compressed(chunks())])

    return asyncio.run(collect())


def pointer_to(key: str, body: bytes, compression: str | None) -> ObjectPointer:
    return ObjectPointer(key, len(body), hashlib.sha256(body).hexdigest(), compression)


def build(codec: EventCodec, fmt: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The records with their bytes filled in, and the objects by key."""
    records = cases.records(fmt)
    events = cases.WRITTEN[fmt]
    metadata = codec.encode_metadata(cases.METADATA)
    plain = framed(codec, events)
    packed = zlib_object(plain)
    state = zlib_object(framed(codec, (cases.STATE,)))
    objects = {cases.PLAIN_KEY: plain, cases.ZLIB_KEY: packed, cases.SNAPSHOT_KEY: state}
    fill = msgspec.structs.replace
    records["change-set-inline"] = fill(
        records["change-set-inline"], payload=codec.encode_events(events), metadata=metadata
    )
    records["change-set-inline-framed"] = fill(records["change-set-inline-framed"], payload=plain)
    for name, key, body in (
        ("change-set-offloaded", cases.PLAIN_KEY, plain),
        ("change-set-offloaded-zlib", cases.ZLIB_KEY, packed),
        ("snapshot-offloaded", cases.SNAPSHOT_KEY, state),
    ):
        record = records[name]
        assert record.pointer is not None
        pointer = pointer_to(key, body, record.pointer.compression)
        extra = (
            {"metadata": metadata}
            if isinstance(record, ChangeSetRecord) and record.metadata is not None
            else {}
        )
        records[name] = fill(record, pointer=pointer, **extra)
    snapshot: SnapshotRecord = records["snapshot-inline"]
    records["snapshot-inline"] = fill(snapshot, payload=codec.encode_events([cases.STATE]))
    view: ViewRecord = records["view"]
    records["view"] = fill(view, document=codec.encode_events([cases.DOCUMENT]))
    return records, objects


def wire_item(record: Any) -> dict[str, Any]:
    """The item as DynamoDB's JSON carries it (blobs base64)."""
    item = record_to_item(record)
    if getattr(record, "snapshot_seq", 0):
        # Written by the snapshot index update (SET "snap:<schema>" = list, snap_seq).
        for schema, versions in record.snapshots.items():
            item[f"snap:{schema}"] = {"L": [{"N": str(v)} for v in versions]}
        item["snap_seq"] = {"N": str(record.snapshot_seq)}
    return {
        attribute: {"B": base64.b64encode(value["B"]).decode()} if "B" in value else value
        for attribute, value in item.items()
    }


def main() -> None:
    fmt = sys.argv[1] if len(sys.argv) > 1 else CURRENT
    codec = EventCodec(*cases.WRITER_TYPES[fmt])
    records, objects = build(codec, fmt)
    target = ROOT / fmt
    (target / "objects").mkdir(parents=True, exist_ok=True)
    items = [{"name": name, "item": wire_item(record)} for name, record in records.items()]
    text = json.dumps(items, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    (target / "items.json").write_text(text, encoding="utf-8")
    for key, body in objects.items():
        (target / "objects" / key.rsplit("/", 1)[1]).write_bytes(body)
    print(f"wrote {len(items)} items and {len(objects)} objects to {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
