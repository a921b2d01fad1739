"""How many bytes a change set's item, and the items written with it, take in the table.

DynamoDB's rule (an item is its attribute names plus values, at most 400 KB; a
transaction at most 4 MB) is the store's rule on every backend: the in-memory one
counts with these same functions, so an append too large for DynamoDB is refused in
unit tests too. Pure arithmetic on records, no AWS import: the attribute names counted
here are the table layout's (``_backends/aws/items.py``), and a test there checks
that :func:`change_set_item_size` equals the size of the item it builds.
"""

from __future__ import annotations

from .._records import MAX_ENTRY_TYPE_BYTES, ChangeSetRecord

__all__ = ["change_set_item_size", "companion_items_size"]


def change_set_item_size(record: ChangeSetRecord) -> int:
    """The bytes of ``record``'s item (names and values, numbers counted one byte per
    digit plus one), counted without building the item (the size check of every append)."""
    total = 2 + 2 + 9 + 5 + 11  # pk, sk, commit_id, ts_us, event_count
    total += len(record.aggregate_id.encode()) + len(record.commit_id.encode())
    total += len(str(record.version)) + len(str(record.timestamp_us))
    total += len(str(record.event_count)) + 3  # + 1 for each number
    pointer = record.pointer
    if pointer is None:
        total += 7 + len(record.payload or b"")  # payload
    else:
        total += 6 + 7 + 9  # s3_key, s3_size, s3_sha256
        total += len(pointer.key.encode()) + len(str(pointer.size)) + 1
        total += len(pointer.sha256.encode())
        if pointer.compression is not None:
            total += 8 + len(pointer.compression.encode())  # s3_codec
    if record.metadata:
        total += 8 + len(record.metadata)  # metadata
    if record.digest is not None:
        total += 6 + len(record.digest)  # digest
    return total


def companion_items_size(record: ChangeSetRecord, aggregate_type: str | None, feed: bool) -> int:
    """At most what the items written with a change set take: the head, the commit
    marker and, with the feed on, its entry and a share of a shard counter. Each holds
    the aggregate and commit ids, and attribute names and numbers (under 256 bytes);
    the entry also the aggregate type and up to MAX_ENTRY_TYPE_BYTES of event type
    names (a list: a byte more per name, each of at least one byte)."""
    copies = 3 if feed else 2
    ids = len(record.aggregate_id.encode()) + len(record.commit_id.encode())
    kind = len(aggregate_type.encode()) if aggregate_type else 0
    entry = kind + 2 * MAX_ENTRY_TYPE_BYTES + 160 if feed else 0
    return copies * (ids + 256) + kind + entry
