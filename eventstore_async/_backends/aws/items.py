"""DynamoDB item mapping: records to wire-format items and back, plans to TransactItems.

Pure functions, no I/O. The table layout (README "Schema")::

    pk (S)         sk (N)      item
    aggregate id   0           head: version, agg_type, commit_id, event_count,
                                     created_us, updated_us
    aggregate id   1..n        change set: commit_id, ts_us, event_count, metadata (B), and
                               payload (B) or s3_key, s3_size, s3_sha256 (, s3_codec),
                               digest (S: the events' SHA-256, 32 hex characters)
    aggregate id   v.xxxxxxxxxx snapshot at version v (fraction from the schema): version,
                               snap_schema, ts_us, and payload (B) or the s3_* pointer
    aggregate id   < 0         commit marker of an ANY-version append: commit_id, version

System partitions (keys start with \x1f, which no aggregate id may hold) carry a
``kind`` attribute: ``feed_counter`` and ``feed_entry`` (``\x1ffeed/<shard>``, sk 0
and 1..n), ``checkpoint`` (``\x1fsub/<name>``), ``view`` (``\x1fview/<view>/<key>``),
``feed_shape`` (``\x1fschema``, sk 0: ``shards``, the table's feed shard count).

The head also lists retained snapshot versions per schema (``snap:<schema>``, a list of
numbers) and ``snap_seq``, bumped by every snapshot save.
"""

from __future__ import annotations

from typing import Any

from ..._errors import IntegrityError
from ..._records import (
    ChangeSetRecord,
    CheckpointRecord,
    CheckpointWrite,
    CommitPlan,
    DeleteMember,
    DeleteSnapshot,
    DeleteView,
    FeedAdvance,
    FeedCounterRecord,
    FeedEntryRecord,
    FeedShapeRecord,
    HeadRecord,
    HeadWrite,
    LeaseWrite,
    MarkerRecord,
    MemberRecord,
    ObjectPointer,
    PutChangeSet,
    PutFeedEntry,
    PutFeedShape,
    PutMarker,
    PutMember,
    PutSnapshot,
    PutView,
    Record,
    SnapshotIndexWrite,
    SnapshotRecord,
    SortKey,
    ViewRecord,
    Write,
    checkpoint_partition,
    feed_partition,
    group_partition,
    marker_sort_key,
    member_sort_key,
    schema_partition,
    snapshot_sort_key,
    view_partition,
)

__all__ = [
    "head_key",
    "item_size",
    "key",
    "record_from_item",
    "record_to_item",
    "snapshot_key",
    "transact_items",
]

Item = dict[str, dict[str, Any]]

_NEW_ITEM = "attribute_not_exists(pk)"


_SNAPSHOT_LIST = "snap:"


def key(aggregate_id: str, sort_key: SortKey) -> Item:
    return {"pk": {"S": aggregate_id}, "sk": {"N": str(sort_key)}}


def head_key(aggregate_id: str) -> Item:
    return key(aggregate_id, 0)


def snapshot_key(aggregate_id: str, version: int, schema: str) -> Item:
    return key(aggregate_id, snapshot_sort_key(version, schema))


# -- records -> items -------------------------------------------------------------------


def record_to_item(record: Record) -> Item:
    if isinstance(record, HeadRecord):
        return _head_item(record)
    if isinstance(record, ChangeSetRecord):
        return _change_set_item(record)
    if isinstance(record, SnapshotRecord):
        return _snapshot_item(record)
    if isinstance(record, MarkerRecord):
        return _marker_item(record)
    return _system_item(record)


def _system_item(
    record: FeedCounterRecord
    | FeedEntryRecord
    | FeedShapeRecord
    | CheckpointRecord
    | MemberRecord
    | ViewRecord,
) -> Item:
    if isinstance(record, FeedCounterRecord):
        item = key(feed_partition(record.shard), 0)
        item["position"] = {"N": str(record.position)}
    elif isinstance(record, FeedEntryRecord):
        item = key(feed_partition(record.shard), record.position)
        item["aggregate_id"] = {"S": record.aggregate_id}
        item["version"] = {"N": str(record.version)}
        item["commit_id"] = {"S": record.commit_id}
        item["ts_us"] = {"N": str(record.timestamp_us)}
        item["event_count"] = {"N": str(record.event_count)}
        if record.aggregate_type is not None:
            item["agg_type"] = {"S": record.aggregate_type}
        if record.event_types is not None:
            item["event_types"] = {"L": [{"S": name} for name in record.event_types]}
    elif isinstance(record, MemberRecord):
        item = key(group_partition(record.group), member_sort_key(record.owner))
        item["owner"] = {"S": record.owner}
        item["lease_until_us"] = {"N": str(record.lease_until_us)}
    elif isinstance(record, FeedShapeRecord):
        item = key(schema_partition(), 0)
        item["shards"] = {"N": str(record.shards)}
    elif isinstance(record, CheckpointRecord):
        item = key(checkpoint_partition(record.name), 0)
        item["positions"] = {"L": [{"N": str(p)} for p in record.positions]}
        item["owner"] = {"S": record.owner}
        item["lease_until_us"] = {"N": str(record.lease_until_us)}
        item["seq"] = {"N": str(record.seq)}
    else:
        item = key(view_partition(record.view, record.key), 0)
        item["document"] = {"B": record.document}
    item["kind"] = {"S": _KINDS[type(record)]}
    return item


_KINDS: dict[type, str] = {
    FeedCounterRecord: "feed_counter",
    FeedEntryRecord: "feed_entry",
    CheckpointRecord: "checkpoint",
    FeedShapeRecord: "feed_shape",
    MemberRecord: "member",
    ViewRecord: "view",
}


def _system_from(item: Item, kind: str) -> Record:
    partition = item["pk"]["S"]
    if kind == "feed_counter":
        return FeedCounterRecord(_suffix_int(partition), int(item["position"]["N"]))
    if kind == "feed_entry":
        return FeedEntryRecord(
            shard=_suffix_int(partition),
            position=int(item["sk"]["N"]),
            aggregate_id=item["aggregate_id"]["S"],
            version=int(item["version"]["N"]),
            commit_id=item["commit_id"]["S"],
            timestamp_us=int(item["ts_us"]["N"]),
            event_count=int(item["event_count"]["N"]),
            aggregate_type=item["agg_type"]["S"] if "agg_type" in item else None,
            event_types=_names(item["event_types"]) if "event_types" in item else None,
        )
    if kind == "checkpoint":
        return CheckpointRecord(
            name=partition.split("/", 1)[1],
            positions=tuple(int(p["N"]) for p in item["positions"]["L"]),
            owner=item["owner"]["S"],
            lease_until_us=int(item["lease_until_us"]["N"]),
            seq=int(item["seq"]["N"]),
        )
    if kind == "member":
        return MemberRecord(
            group=partition.split("/", 1)[1],
            owner=item["owner"]["S"],
            lease_until_us=int(item["lease_until_us"]["N"]),
        )
    if kind == "feed_shape":
        return FeedShapeRecord(shards=int(item["shards"]["N"]))
    if kind == "view":
        _, view, view_key = partition.split("/", 2)
        return ViewRecord(view=view, key=view_key, document=bytes(item["document"]["B"]))
    raise ValueError(f"kind {kind!r}")


def _names(value: dict[str, Any]) -> tuple[str, ...]:
    return tuple(name["S"] for name in value["L"])


def _suffix_int(partition: str) -> int:
    return int(partition.rsplit("/", 1)[1])


def _head_item(head: HeadRecord) -> Item:
    item = key(head.aggregate_id, 0)
    item["version"] = {"N": str(head.version)}
    item["commit_id"] = {"S": head.last_commit_id}
    item["event_count"] = {"N": str(head.event_count)}
    item["created_us"] = {"N": str(head.created_us)}
    item["updated_us"] = {"N": str(head.updated_us)}
    if head.aggregate_type is not None:
        item["agg_type"] = {"S": head.aggregate_type}
    return item


def _change_set_item(record: ChangeSetRecord) -> Item:
    item = key(record.aggregate_id, record.version)
    item["commit_id"] = {"S": record.commit_id}
    item["ts_us"] = {"N": str(record.timestamp_us)}
    item["event_count"] = {"N": str(record.event_count)}
    if record.pointer is not None:
        item.update(_pointer_attributes(record.pointer))
    else:
        item["payload"] = {"B": record.payload}
    if record.metadata:
        item["metadata"] = {"B": record.metadata}
    if record.digest is not None:
        item["digest"] = {"S": record.digest}
    return item


def _snapshot_item(record: SnapshotRecord) -> Item:
    item = key(record.aggregate_id, snapshot_sort_key(record.version, record.schema))
    item["version"] = {"N": str(record.version)}
    item["snap_schema"] = {"S": record.schema}
    item["ts_us"] = {"N": str(record.timestamp_us)}
    if record.pointer is not None:
        item.update(_pointer_attributes(record.pointer))
    else:
        item["payload"] = {"B": record.payload}
    return item


def _pointer_attributes(pointer: ObjectPointer) -> Item:
    attributes: Item = {
        "s3_key": {"S": pointer.key},
        "s3_size": {"N": str(pointer.size)},
        "s3_sha256": {"S": pointer.sha256},
    }
    if pointer.compression is not None:
        attributes["s3_codec"] = {"S": pointer.compression}
    return attributes


def _marker_item(marker: MarkerRecord) -> Item:
    item = key(marker.aggregate_id, marker_sort_key(marker.commit_id))
    item["commit_id"] = {"S": marker.commit_id}
    item["version"] = {"N": str(marker.version)}
    return item


# -- items -> records -------------------------------------------------------------------


def record_from_item(item: Item) -> Record:
    """Parse a wire-format item (as DynamoDB returns it) into its record.

    Raises:
        IntegrityError: the item lacks an attribute its kind must have.
    """
    try:
        kind = item.get("kind")
        if kind is not None:
            return _system_from(item, kind["S"])
        raw_key = item["sk"]["N"]
        if "." in raw_key:
            return _snapshot_from(item)
        sort_key = int(raw_key)
        if sort_key == 0:
            return _head_from(item)
        if sort_key > 0:
            return _change_set_from(item, sort_key)
        return MarkerRecord(
            aggregate_id=item["pk"]["S"],
            commit_id=item["commit_id"]["S"],
            version=int(item["version"]["N"]),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"malformed item {_describe(item)}: missing or bad {exc}") from None


def _head_from(item: Item) -> HeadRecord:
    agg_type = item.get("agg_type")
    seq = item.get("snap_seq")
    return HeadRecord(
        aggregate_id=item["pk"]["S"],
        aggregate_type=agg_type["S"] if agg_type else None,
        version=int(item["version"]["N"]),
        last_commit_id=item["commit_id"]["S"],
        event_count=int(item["event_count"]["N"]),
        created_us=int(item["created_us"]["N"]),
        updated_us=int(item["updated_us"]["N"]),
        snapshots={
            name[len(_SNAPSHOT_LIST) :]: tuple(int(v["N"]) for v in value["L"])
            for name, value in item.items()
            if name.startswith(_SNAPSHOT_LIST)
        },
        snapshot_seq=int(seq["N"]) if seq else 0,
    )


def _snapshot_from(item: Item) -> SnapshotRecord:
    pointer = _pointer_from(item) if "s3_key" in item else None
    return SnapshotRecord(
        aggregate_id=item["pk"]["S"],
        version=int(item["version"]["N"]),
        schema=item["snap_schema"]["S"],
        timestamp_us=int(item["ts_us"]["N"]),
        payload=None if pointer else bytes(item["payload"]["B"]),
        pointer=pointer,
    )


def _change_set_from(item: Item, version: int) -> ChangeSetRecord:
    metadata = item.get("metadata")
    digest = item.get("digest")
    pointer = _pointer_from(item) if "s3_key" in item else None
    return ChangeSetRecord(
        aggregate_id=item["pk"]["S"],
        version=version,
        commit_id=item["commit_id"]["S"],
        timestamp_us=int(item["ts_us"]["N"]),
        event_count=int(item["event_count"]["N"]),
        payload=None if pointer else bytes(item["payload"]["B"]),
        metadata=bytes(metadata["B"]) if metadata else None,
        pointer=pointer,
        digest=digest["S"] if digest else None,
    )


def _pointer_from(item: Item) -> ObjectPointer:
    codec = item.get("s3_codec")
    return ObjectPointer(
        key=item["s3_key"]["S"],
        size=int(item["s3_size"]["N"]),
        sha256=item["s3_sha256"]["S"],
        compression=codec["S"] if codec else None,
    )


def _describe(item: Item) -> str:
    return f"(pk={item.get('pk')!r}, sk={item.get('sk')!r})"


# -- plans -> TransactItems -------------------------------------------------------------


def transact_items(plan: CommitPlan, table: str) -> list[dict[str, Any]]:
    """The ``TransactItems`` of one ``TransactWriteItems`` call, in plan order.

    Every action returns the old item when its condition fails, so a conflict is
    explained (actual version, commit id found) without another read.
    """
    return [_action(write, table) for write in plan.writes]


def _action(write: Write, table: str) -> dict[str, Any]:
    if isinstance(write, HeadWrite):
        if write.expected_version == 0:
            return _put_new(_head_item(write.head), table)
        return _update_head(write, table)
    if isinstance(write, PutChangeSet):
        return _put_new(_change_set_item(write.record), table)
    if isinstance(write, PutMarker):
        return _put_new(_marker_item(write.record), table)
    if isinstance(write, PutSnapshot):
        return {"Put": {"TableName": table, "Item": _snapshot_item(write.record)}}
    if isinstance(write, DeleteSnapshot):
        sort_key = snapshot_sort_key(write.version, write.schema)
        return {"Delete": {"TableName": table, "Key": key(write.aggregate_id, sort_key)}}
    if isinstance(write, SnapshotIndexWrite):
        return _update_snapshot_index(write, table)
    if isinstance(write, FeedAdvance):
        return _advance_feed(write, table)
    if isinstance(write, PutFeedEntry | PutFeedShape):
        return _put_new(_system_item(write.record), table)
    if isinstance(write, LeaseWrite):
        return _take_lease(write, table)
    if isinstance(write, CheckpointWrite):
        return _save_checkpoint(write, table)
    if isinstance(write, PutView | PutMember):
        return {"Put": {"TableName": table, "Item": _system_item(write.record)}}
    if isinstance(write, DeleteMember):
        member_key = key(group_partition(write.group), member_sort_key(write.owner))
        return {"Delete": {"TableName": table, "Key": member_key}}
    if isinstance(write, DeleteView):
        view_key = key(view_partition(write.view, write.key), 0)
        return {"Delete": {"TableName": table, "Key": view_key}}
    raise TypeError(f"unknown write {write!r}")


def _advance_feed(write: FeedAdvance, table: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        ":next": {"N": str(write.expected + write.count)},
        ":kind": {"S": "feed_counter"},
    }
    if write.expected == 0:
        condition = "attribute_not_exists(pk)"
    else:
        condition = "#p = :expected"
        values[":expected"] = {"N": str(write.expected)}
    return _update(
        table,
        key(feed_partition(write.shard), 0),
        "SET #p = :next, #k = :kind",
        condition,
        {"#p": "position", "#k": "kind"},
        values,
    )


def _take_lease(write: LeaseWrite, table: str) -> dict[str, Any]:
    return _update(
        table,
        key(checkpoint_partition(write.name), 0),
        "SET #o = :owner, #u = :until, #k = :kind, "
        "#p = if_not_exists(#p, :positions), #q = if_not_exists(#q, :zero)",
        "attribute_not_exists(pk) OR #u < :now OR #o = :owner",
        {"#o": "owner", "#u": "lease_until_us", "#k": "kind", "#p": "positions", "#q": "seq"},
        {
            ":owner": {"S": write.owner},
            ":until": {"N": str(write.lease_until_us)},
            ":now": {"N": str(write.now_us)},
            ":kind": {"S": "checkpoint"},
            ":positions": {"L": [{"N": str(p)} for p in write.positions]},
            ":zero": {"N": "0"},
        },
    )


def _save_checkpoint(write: CheckpointWrite, table: str) -> dict[str, Any]:
    update = "SET #p = :positions, #q = :next"
    values: dict[str, Any] = {
        ":positions": {"L": [{"N": str(p)} for p in write.positions]},
        ":next": {"N": str(write.expected_seq + 1)},
        ":seq": {"N": str(write.expected_seq)},
        ":owner": {"S": write.owner},
        ":now": {"N": str(write.now_us)},
    }
    if write.lease_until_us is not None:
        update += ", #u = :until"
        values[":until"] = {"N": str(write.lease_until_us)}
    return _update(
        table,
        key(checkpoint_partition(write.name), 0),
        update,
        "#o = :owner AND #u >= :now AND #q = :seq",
        {"#o": "owner", "#u": "lease_until_us", "#p": "positions", "#q": "seq"},
        values,
    )


def _update(
    table: str,
    item_key: Item,
    update: str,
    condition: str,
    names: dict[str, str],
    values: dict[str, Any],
) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
            "Key": item_key,
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def _update_snapshot_index(write: SnapshotIndexWrite, table: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        ":list": {"L": [{"N": str(v)} for v in write.versions]},
        ":next": {"N": str(write.expected_seq + 1)},
        ":min": {"N": str(write.min_version)},
    }
    if write.expected_seq == 0:
        unchanged = "attribute_not_exists(#q)"
    else:
        unchanged = "#q = :seq"
        values[":seq"] = {"N": str(write.expected_seq)}
    return {
        "Update": {
            "TableName": table,
            "Key": head_key(write.aggregate_id),
            "UpdateExpression": "SET #s = :list, #q = :next",
            "ConditionExpression": f"#v >= :min AND {unchanged}",
            "ExpressionAttributeNames": {
                "#s": _SNAPSHOT_LIST + write.schema,
                "#q": "snap_seq",
                "#v": "version",
            },
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def _put_new(item: Item, table: str) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": table,
            "Item": item,
            "ConditionExpression": _NEW_ITEM,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def _update_head(write: HeadWrite, table: str) -> dict[str, Any]:
    head = write.head
    names = {
        "#v": "version",
        "#c": "commit_id",
        "#n": "event_count",
        "#u": "updated_us",
    }
    values: dict[str, Any] = {
        ":expected": {"N": str(write.expected_version)},
        ":v": {"N": str(head.version)},
        ":c": {"S": head.last_commit_id},
        ":n": {"N": str(write.added_events)},
        ":u": {"N": str(head.updated_us)},
    }
    update = "SET #v = :v, #c = :c, #u = :u ADD #n :n"
    condition = "#v = :expected"
    if head.aggregate_type is not None:
        names["#t"] = "agg_type"
        values[":t"] = {"S": head.aggregate_type}
        update = "SET #v = :v, #c = :c, #u = :u, #t = if_not_exists(#t, :t) ADD #n :n"
        condition = "#v = :expected AND (attribute_not_exists(#t) OR #t = :t)"
    return {
        "Update": {
            "TableName": table,
            "Key": head_key(head.aggregate_id),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


# -- sizes --------------------------------------------------------------------------------


def item_size(item: Item) -> int:
    """DynamoDB's size of an item: attribute names plus values (numbers counted generously)."""
    total = 0
    for name, value in item.items():
        total += len(name.encode())
        ((kind, data),) = value.items()
        if kind == "S":
            total += len(data.encode())
        elif kind == "B":
            total += len(data)
        else:  # N: at most 21 bytes for 38 digits; one byte per digit is an upper bound
            total += len(data) + 1
    return total
