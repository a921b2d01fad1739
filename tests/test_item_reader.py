"""The fast path's Query reader gives the records botocore's parse + record_from_item give."""

from __future__ import annotations

import base64
import copy
from typing import Any

import botocore.parsers
import botocore.session
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore_async import ANY, EventStore, IntegrityError, StoreConfig
from eventstore_async._backends.aws import dynamodb as _dynamodb
from eventstore_async._backends.aws.item_reader import QueryPage, query_page, read_query_page
from eventstore_async._backends.aws.items import record_to_item, transact_items
from eventstore_async._records import (
    ChangeSetRecord,
    CheckpointRecord,
    CommitPlan,
    FeedCounterRecord,
    FeedEntryRecord,
    HeadRecord,
    HeadWrite,
    MarkerRecord,
    ObjectPointer,
    SnapshotIndexWrite,
    SnapshotRecord,
    ViewRecord,
)

QUERY_OUTPUT = (
    botocore.session.get_session()
    .get_service_model("dynamodb")
    .operation_model("Query")
    .output_shape
)


def botocore_page(body: bytes) -> QueryPage:
    """The reference: botocore's parse of the answer, then record_from_item."""
    response = {"status_code": 200, "headers": {}, "body": body}
    return query_page(botocore.parsers.create_parser("json").parse(response, QUERY_OUTPUT))


def wire(item: dict[str, Any]) -> dict[str, Any]:
    """An item as DynamoDB's JSON carries it: blobs in base64."""

    def value(attribute: dict[str, Any] | None) -> dict[str, Any] | None:
        if attribute is None:
            return None
        ((kind, data),) = attribute.items()
        if kind == "B":
            return {"B": base64.b64encode(data).decode()}
        if kind == "L":
            return {"L": [value(element) for element in data]}
        return {kind: data}

    return {name: value(attribute) for name, attribute in item.items()}


def answer(items: list[dict[str, Any]], last_key: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"Items": [wire(item) for item in items], "Count": len(items)}
    if last_key is not None:
        body["LastEvaluatedKey"] = last_key
    body["ScannedCount"] = len(items)
    return msgspec.json.encode(body)


def with_snapshot_lists(item: dict[str, Any], lists: dict[str, list[int]], seq: int) -> Any:
    item = dict(item)
    for schema, versions in lists.items():
        item[f"snap:{schema}"] = {"L": [{"N": str(v)} for v in versions]}
    item["snap_seq"] = {"N": str(seq)}
    return item


# -- records of every kind -----------------------------------------------------------------

ids = st.text(min_size=1, max_size=30)
micros = st.integers(min_value=0, max_value=2**62)
blobs = st.binary(min_size=1, max_size=300)
pointers = st.builds(
    ObjectPointer,
    key=ids,
    size=st.integers(min_value=0, max_value=2**40),
    sha256=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    compression=st.none() | st.just("zlib"),
)


@st.composite
def change_sets(draw: st.DrawFn) -> ChangeSetRecord:
    pointer = draw(st.none() | pointers)
    return ChangeSetRecord(
        aggregate_id=draw(ids),
        version=draw(st.integers(min_value=1, max_value=2**53)),
        commit_id=draw(ids),
        timestamp_us=draw(micros),
        event_count=draw(st.integers(min_value=0, max_value=10_000)),
        payload=None if pointer else draw(blobs),
        metadata=draw(st.none() | blobs),
        pointer=pointer,
    )


@st.composite
def snapshots(draw: st.DrawFn) -> SnapshotRecord:
    pointer = draw(st.none() | pointers)
    return SnapshotRecord(
        aggregate_id=draw(ids),
        version=draw(st.integers(min_value=1, max_value=2**40)),
        schema=draw(st.text(alphabet="abcdefgh-_.0123456789", min_size=1, max_size=20)),
        timestamp_us=draw(micros),
        payload=None if pointer else draw(blobs),
        pointer=pointer,
    )


heads = st.builds(
    HeadRecord,
    aggregate_id=ids,
    aggregate_type=st.none() | ids,
    version=st.integers(min_value=0, max_value=2**53),
    last_commit_id=ids,
    event_count=st.integers(min_value=0, max_value=2**40),
    created_us=micros,
    updated_us=micros,
)
system_records = st.one_of(
    st.builds(FeedCounterRecord, st.integers(0, 63), st.integers(0, 2**40)),
    st.builds(
        FeedEntryRecord,
        shard=st.integers(0, 63),
        position=st.integers(1, 2**40),
        aggregate_id=ids,
        version=st.integers(1, 2**40),
        commit_id=ids,
        timestamp_us=micros,
        event_count=st.integers(0, 1000),
    ),
    st.builds(
        CheckpointRecord,
        name=st.text(alphabet="abc-", min_size=1, max_size=10),
        positions=st.lists(st.integers(0, 2**40), max_size=4).map(tuple),
        owner=ids,
        lease_until_us=micros,
        seq=st.integers(0, 2**40),
    ),
    st.builds(
        ViewRecord,
        view=st.text(alphabet="abc", min_size=1, max_size=5),
        key=ids,
        document=blobs,
    ),
)
markers = st.builds(MarkerRecord, aggregate_id=ids, commit_id=ids, version=st.integers(1, 2**40))
snapshotted_heads = st.builds(
    with_snapshot_lists,
    heads.map(record_to_item),
    st.dictionaries(
        st.text(alphabet="abc", min_size=1, max_size=4),
        st.lists(st.integers(1, 2**30), max_size=3),
        max_size=3,
    ),
    st.integers(min_value=1, max_value=2**30),
)
items = st.one_of(
    st.one_of(change_sets(), snapshots(), heads, markers, system_records).map(record_to_item),
    snapshotted_heads,
)
last_keys = st.none() | st.builds(
    lambda pk, sk: {"pk": {"S": pk}, "sk": {"N": str(sk)}}, ids, st.integers(0, 2**53)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(items, max_size=12), last_keys)
def test_every_item_kind_reads_as_botocore_parses_it(
    page: list[dict[str, Any]], last_key: dict[str, Any] | None
) -> None:
    body = answer(page, last_key)
    read = read_query_page(body)
    assert read is not None
    assert read == botocore_page(body)


def test_a_history_page_is_read_typed() -> None:
    change_set = ChangeSetRecord("a", 1, "c", 5, 1, b"\x01payload", b"\x80", None)
    head = HeadRecord("a", "Order", 1, "c", 1, 4, 5)
    read = read_query_page(answer([record_to_item(head), record_to_item(change_set)]))
    assert read == QueryPage(records=[head, change_set], last_key=None)


def test_snapshot_lists_are_only_written_with_snap_seq() -> None:
    """What lets the reader type heads without snap_seq: they list no snapshots."""
    write = SnapshotIndexWrite(
        aggregate_id="a", schema="v1", versions=(3,), expected_seq=2, min_version=3
    )
    (action,) = transact_items(CommitPlan(writes=(write,), token="t"), "events")
    names = action["Update"]["ExpressionAttributeNames"]
    assert action["Update"]["UpdateExpression"] == "SET #s = :list, #q = :next"
    assert (names["#s"], names["#q"]) == ("snap:v1", "snap_seq")
    for expected in (0, 1):  # the head's other writes (create, move) leave both alone
        head = HeadWrite(HeadRecord("a", None, expected + 1, "c", 1, 4, 5), expected, 1)
        (action,) = transact_items(CommitPlan(writes=(head,), token="t"), "events")
        assert "snap" not in str(action)


def test_a_head_with_snapshot_lists_keeps_them() -> None:
    head = HeadRecord("a", None, 9, "c", 9, 4, 5)
    item = with_snapshot_lists(record_to_item(head), {"v1": [3, 6], "v2": []}, 4)
    read = read_query_page(answer([item]))
    assert read is not None
    assert read.records == [
        HeadRecord("a", None, 9, "c", 9, 4, 5, snapshots={"v1": (3, 6), "v2": ()}, snapshot_seq=4)
    ]


# -- answers the reader leaves to botocore --------------------------------------------------


def _without(item: dict[str, Any], name: str) -> dict[str, Any]:
    broken = copy.deepcopy(item)
    del broken[name]
    return broken


CHANGE_SET = record_to_item(ChangeSetRecord("a", 2, "c", 5, 1, b"\x01p", None, None))
HEAD = record_to_item(HeadRecord("a", None, 2, "c", 2, 4, 5))
MALFORMED = {
    "change-set-without-payload": _without(CHANGE_SET, "payload"),
    "change-set-without-commit": _without(CHANGE_SET, "commit_id"),
    "head-without-version": _without(HEAD, "version"),
    "payload-of-the-wrong-kind": {**CHANGE_SET, "payload": {"S": "x"}},
    "sort-key-not-a-number": {**CHANGE_SET, "sk": {"N": "two"}},
    "no-partition-key": _without(CHANGE_SET, "pk"),
    "pointer-key-null": {**CHANGE_SET, "s3_key": None},
    "snapshot-pointer-key-null": {
        **record_to_item(SnapshotRecord("a", 3, "v1", 5, b"\x01s", None)),
        "s3_key": None,
    },
    "head-version-null": {**HEAD, "version": None},
}


@pytest.mark.parametrize("item", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_item_is_left_to_botocore_s_way_which_raises(item: dict[str, Any]) -> None:
    body = answer([HEAD, item])
    assert read_query_page(body) is None
    with pytest.raises(IntegrityError, match="malformed item"):
        botocore_page(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"Items": {}}',
        b'{"Items": [], "LastEvaluatedKey": {"pk": {"B": "AA=="}, "sk": {"N": "1"}}}',
        b'{"Items": [], "LastEvaluatedKey": {"pk": {"S": "a"}, "sk": {"N": "1"}, "g": {"S": "x"}}}',
    ],
    ids=["empty", "not-json", "not-an-object", "items-not-a-list", "blob-key", "index-key"],
)
def test_answers_outside_the_types_are_left_to_botocore(body: bytes) -> None:
    assert read_query_page(body) is None


def test_blobs_botocore_decodes_leniently_go_its_way() -> None:
    body = msgspec.json.encode(
        {"Items": [{**wire(CHANGE_SET), "payload": {"B": "AX A="}}]}  # a space: botocore skips it
    )
    assert read_query_page(body) is None
    assert botocore_page(body).records[0].payload == b"\x01p"  # type: ignore[union-attr]


# -- a store on the fast path ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_store_on_the_fast_path_reads_every_page_typed(
    emulator_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages: list[QueryPage | None] = []

    def spy(body: bytes) -> QueryPage | None:
        pages.append(read_query_page(body))
        return pages[-1]

    monkeypatch.setattr(_dynamodb, "read_query_page", spy)
    config = StoreConfig(
        table_name="item-reader",
        endpoint_url=emulator_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        page_size=2,
    )
    async with EventStore(config) as store:
        await store.create_schema()
        try:
            await store.append("o", [{"n": 1}], expected_version=0, metadata={"user": "u"})
            await store.append("o", [{"n": 2}, {"n": 3}], expected_version=1, aggregate_type="T")
            await store.append("o", [{"n": 4}], expected_version=ANY)
            await store.save_snapshot("o", 2, {"total": 3})
            loads = [await store.load("o"), await store.load("o", snapshot_schema="default")]
            async with EventStore(config.replace(fast_path=False)) as stock:
                expected = [await stock.load("o"), await stock.load("o", snapshot_schema="default")]
        finally:
            await store.drop_schema()
    assert loads == expected
    assert loads[0].version == 3 and loads[1].snapshot is not None
    assert len(pages) >= 4  # both loads, two items a page
    assert all(isinstance(page, QueryPage) for page in pages)
