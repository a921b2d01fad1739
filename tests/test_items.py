"""Item mapping and append planning: pure functions, no I/O."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore_async import IntegrityError, StoreConfig
from eventstore_async._backends.aws.dynamodb import DynamoDBBackend
from eventstore_async._backends.aws.items import (
    head_key,
    item_size,
    key,
    record_from_item,
    record_to_item,
    transact_items,
)
from eventstore_async._backends.item_sizes import change_set_item_size, companion_items_size
from eventstore_async._backends.memory import MemoryBackend
from eventstore_async._codec import EventCodec
from eventstore_async._records import (
    ChangeSetRecord,
    CommitPlan,
    CommitRejected,
    HeadRecord,
    HeadWrite,
    MarkerRecord,
    ObjectPointer,
    PutChangeSet,
    PutMarker,
    Rejection,
    marker_sort_key,
)
from eventstore_async._write.plan import (
    AppendRequest,
    Busy,
    Conflict,
    Landed,
    Refused,
    TypeMismatch,
    explain,
    plan_append,
    request_token,
)

TABLE = "events"
NOW = 1_700_000_000_123_456
CODEC = EventCodec()


def _head(**changes: Any) -> HeadRecord:
    fields: dict[str, Any] = {
        "aggregate_id": "order-1",
        "aggregate_type": "Order",
        "version": 3,
        "last_commit_id": "commit-3",
        "event_count": 7,
        "created_us": NOW - 5_000,
        "updated_us": NOW,
    }
    fields.update(changes)
    return HeadRecord(**fields)


def _change_set(**changes: Any) -> ChangeSetRecord:
    fields: dict[str, Any] = {
        "aggregate_id": "order-1",
        "version": 2,
        "commit_id": "commit-2",
        "timestamp_us": NOW,
        "event_count": 2,
        "payload": CODEC.encode_events([{"a": 1}, {"b": 2}]),
        "metadata": CODEC.encode_metadata({"user": "alice"}),
    }
    fields.update(changes)
    return ChangeSetRecord(**fields)


def _request(
    *, commit_id: str = "mine", aggregate_type: str | None = None, guarded: bool = False
) -> AppendRequest:
    events = ({"n": 1}, {"n": 2})
    return AppendRequest(
        aggregate_id="order-1",
        events=events,
        event_count=len(events),
        payload=CODEC.encode_events(events),
        pointer=None,
        metadata={},
        metadata_bytes=None,
        aggregate_type=aggregate_type,
        commit_id=commit_id,
        guarded=guarded,
    )


# -- records <-> items ------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        _head(),
        _head(aggregate_type=None),
        _head(version=1, event_count=1, created_us=NOW, aggregate_id="ünïcode-id"),
        _change_set(),
        _change_set(metadata=None),
        _change_set(version=2**53, payload=b"\x01\x90"),
        MarkerRecord(aggregate_id="order-1", commit_id="commit-9", version=9),
    ],
    ids=[
        "head",
        "head-untyped",
        "head-new",
        "change-set",
        "change-set-no-metadata",
        "change-set-max-version",
        "marker",
    ],
)
def test_record_round_trip(record: Any) -> None:
    assert record_from_item(record_to_item(record)) == record


def test_head_item_layout() -> None:
    item = record_to_item(_head())
    assert item == {
        "pk": {"S": "order-1"},
        "sk": {"N": "0"},
        "version": {"N": "3"},
        "commit_id": {"S": "commit-3"},
        "event_count": {"N": "7"},
        "created_us": {"N": str(NOW - 5_000)},
        "updated_us": {"N": str(NOW)},
        "agg_type": {"S": "Order"},
    }


def test_untyped_head_has_no_type_attribute() -> None:
    item = record_to_item(_head(aggregate_type=None))
    assert "agg_type" not in item
    assert record_from_item(item).aggregate_type is None  # type: ignore[union-attr]


def test_change_set_item_layout() -> None:
    record = _change_set()
    item = record_to_item(record)
    assert item["pk"] == {"S": "order-1"}
    assert item["sk"] == {"N": "2"}
    assert item["payload"] == {"B": record.payload}
    assert item["metadata"] == {"B": record.metadata}
    assert item["ts_us"] == {"N": str(NOW)}
    assert "metadata" not in record_to_item(_change_set(metadata=None))


def test_change_set_from_item_accepts_bytearray_payloads() -> None:
    item = record_to_item(_change_set())
    item["payload"] = {"B": bytearray(item["payload"]["B"])}
    record = record_from_item(item)
    assert isinstance(record, ChangeSetRecord)
    assert type(record.payload) is bytes


def test_marker_item_has_a_negative_sort_key() -> None:
    marker = MarkerRecord(aggregate_id="order-1", commit_id="commit-9", version=9)
    item = record_to_item(marker)
    assert int(item["sk"]["N"]) == marker_sort_key("commit-9") < 0
    assert item["version"] == {"N": "9"}
    assert item["commit_id"] == {"S": "commit-9"}


def test_key_helpers() -> None:
    assert key("a", 5) == {"pk": {"S": "a"}, "sk": {"N": "5"}}
    assert head_key("a") == {"pk": {"S": "a"}, "sk": {"N": "0"}}


# -- marker_sort_key --------------------------------------------------------------------


@settings(deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_marker_sort_key_is_negative_and_within_38_digits(commit_id: str) -> None:
    sort_key = marker_sort_key(commit_id)
    assert sort_key < 0
    assert len(str(-sort_key)) <= 38
    assert -sort_key <= 2**120


def test_marker_sort_key_is_deterministic_and_distinct() -> None:
    assert marker_sort_key("commit-1") == marker_sort_key("commit-1")
    assert marker_sort_key("commit-1") != marker_sort_key("commit-2")
    # a stable value: markers written by one release must be found by the next
    assert marker_sort_key("a") == -(int("ca978112ca1bbdcafac231b39a23dc", 16) + 1)


# -- malformed items --------------------------------------------------------------------


def _without(item: dict[str, Any], name: str) -> dict[str, Any]:
    broken = copy.deepcopy(item)
    del broken[name]
    return broken


MALFORMED = [
    ("no-sk", _without(record_to_item(_head()), "sk")),
    ("no-pk", _without(record_to_item(_head()), "pk")),
    ("head-no-version", _without(record_to_item(_head()), "version")),
    ("head-no-commit", _without(record_to_item(_head()), "commit_id")),
    ("head-no-created", _without(record_to_item(_head()), "created_us")),
    ("change-set-no-payload", _without(record_to_item(_change_set()), "payload")),
    ("change-set-no-ts", _without(record_to_item(_change_set()), "ts_us")),
    ("marker-no-commit", {"pk": {"S": "a"}, "sk": {"N": "-5"}, "version": {"N": "1"}}),
    ("sk-not-a-number", {**record_to_item(_head()), "sk": {"N": "zero"}}),
    ("sk-wrong-kind", {**record_to_item(_head()), "sk": {"S": "0"}}),
    ("version-wrong-kind", {**record_to_item(_head()), "version": {"S": "3"}}),
    ("type-wrong-kind", {**record_to_item(_head()), "agg_type": {"N": "1"}}),
]


@pytest.mark.parametrize("item", [item for _, item in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_item_is_an_integrity_error(item: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError, match="malformed item"):
        record_from_item(item)


# -- item_size --------------------------------------------------------------------------


def test_item_size_counts_names_and_values() -> None:
    assert item_size({}) == 0
    assert item_size({"pk": {"S": "abc"}}) == 2 + 3
    assert item_size({"pk": {"S": "é"}}) == 2 + 2  # UTF-8 bytes, not characters
    assert item_size({"nämé": {"S": ""}}) == 6
    assert item_size({"payload": {"B": b"\x00" * 10}}) == 7 + 10
    assert item_size({"sk": {"N": "12345"}}) == 2 + 5 + 1


def test_item_size_of_a_change_set_grows_with_its_payload() -> None:
    small = item_size(record_to_item(_change_set(payload=b"x")))
    large = item_size(record_to_item(_change_set(payload=b"x" * 1001)))
    assert large - small == 1000


def test_item_size_counts_every_attribute() -> None:
    item = record_to_item(_change_set())
    expected = sum(len(name.encode()) for name in item)
    expected += len(item["pk"]["S"].encode()) + len(item["commit_id"]["S"].encode())
    expected += len(item["payload"]["B"]) + len(item["metadata"]["B"])
    expected += sum(len(item[n]["N"]) + 1 for n in ("sk", "ts_us", "event_count"))
    assert item_size(item) == expected


# -- plan_append and transact_items -----------------------------------------------------


def test_plan_for_a_new_aggregate() -> None:
    request = _request(aggregate_type="Order")
    plan = plan_append(request, 0, NOW)
    assert [type(w) for w in plan.writes] == [HeadWrite, PutChangeSet]
    head_write = plan.writes[0]
    assert isinstance(head_write, HeadWrite)
    assert head_write.expected_version == 0
    assert head_write.added_events == 2
    assert head_write.head.version == 1
    assert head_write.head.last_commit_id == "mine"

    put_head, put_change_set = transact_items(plan, TABLE)
    assert set(put_head) == {"Put"}
    assert put_head["Put"]["TableName"] == TABLE
    assert put_head["Put"]["ConditionExpression"] == "attribute_not_exists(pk)"
    assert put_head["Put"]["Item"]["sk"] == {"N": "0"}
    assert put_head["Put"]["Item"]["version"] == {"N": "1"}
    assert put_head["Put"]["Item"]["agg_type"] == {"S": "Order"}
    assert set(put_change_set) == {"Put"}
    assert put_change_set["Put"]["ConditionExpression"] == "attribute_not_exists(pk)"
    assert put_change_set["Put"]["Item"]["sk"] == {"N": "1"}
    assert put_change_set["Put"]["Item"]["payload"] == {"B": request.payload}
    assert put_change_set["Put"]["Item"]["commit_id"] == {"S": "mine"}


def test_plan_for_an_existing_aggregate_updates_the_head_conditionally() -> None:
    plan = plan_append(_request(), 4, NOW)
    update, put_change_set = transact_items(plan, TABLE)
    assert set(update) == {"Update"}
    body = update["Update"]
    assert body["TableName"] == TABLE
    assert body["Key"] == head_key("order-1")
    assert body["ConditionExpression"] == "#v = :expected"
    assert body["ExpressionAttributeNames"]["#v"] == "version"
    values = body["ExpressionAttributeValues"]
    assert values[":expected"] == {"N": "4"}
    assert values[":v"] == {"N": "5"}
    assert values[":c"] == {"S": "mine"}
    assert values[":n"] == {"N": "2"}
    assert "created_us" not in str(body["UpdateExpression"])
    # every placeholder used is defined, and every one defined is used
    text = body["UpdateExpression"] + " " + body["ConditionExpression"]
    for placeholder in [*body["ExpressionAttributeNames"], *values]:
        assert placeholder in text
    assert put_change_set["Put"]["Item"]["sk"] == {"N": "5"}


def test_typed_update_also_checks_the_type() -> None:
    plan = plan_append(_request(aggregate_type="Order"), 4, NOW)
    body = transact_items(plan, TABLE)[0]["Update"]
    assert body["ConditionExpression"].startswith("#v = :expected AND ")
    assert body["ExpressionAttributeNames"]["#t"] == "agg_type"
    assert body["ExpressionAttributeValues"][":t"] == {"S": "Order"}


@pytest.mark.parametrize("expected", [0, 1, 41])
@pytest.mark.parametrize("guarded", [False, True])
def test_every_action_returns_the_old_item_on_failure(expected: int, guarded: bool) -> None:
    actions = transact_items(plan_append(_request(guarded=guarded), expected, NOW), TABLE)
    assert len(actions) == (3 if guarded else 2)
    for action in actions:
        ((_, body),) = action.items()
        assert body["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
        assert body["TableName"] == TABLE


def test_guarded_plan_adds_a_commit_marker() -> None:
    plan = plan_append(_request(guarded=True), 6, NOW)
    assert isinstance(plan.writes[2], PutMarker)
    marker = transact_items(plan, TABLE)[2]
    assert set(marker) == {"Put"}
    assert marker["Put"]["ConditionExpression"] == "attribute_not_exists(pk)"
    item = marker["Put"]["Item"]
    assert item["sk"] == {"N": str(marker_sort_key("mine"))}
    assert item["version"] == {"N": "7"}
    assert item["commit_id"] == {"S": "mine"}


def test_transact_items_rejects_unknown_writes() -> None:
    plan = CommitPlan(writes=("not a write",), token="t")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        transact_items(plan, TABLE)


# -- request_token ----------------------------------------------------------------------


@settings(deadline=None)
@given(
    aggregate_id=st.text(min_size=1, max_size=100),
    commit_id=st.text(min_size=1, max_size=128),
    version=st.integers(min_value=1, max_value=2**53),
)
def test_request_token_fits_client_request_token(
    aggregate_id: str, commit_id: str, version: int
) -> None:
    request = AppendRequest(
        aggregate_id=aggregate_id,
        events=({},),
        event_count=1,
        payload=b"\x01",
        pointer=None,
        metadata={},
        metadata_bytes=None,
        aggregate_type=None,
        commit_id=commit_id,
        guarded=False,
    )
    token = request_token(request, version, NOW)
    assert 1 <= len(token) <= 36
    assert token.isascii()
    assert token == request_token(request, version, NOW)


def test_request_token_differs_by_version_and_commit() -> None:
    request = _request()
    assert request_token(request, 1, NOW) != request_token(request, 2, NOW)
    assert request_token(request, 1, NOW) != request_token(_request(commit_id="other"), 1, NOW)
    assert request_token(request, 1, NOW) != request_token(request, 1, NOW + 1)
    assert plan_append(request, 0, NOW).token == request_token(request, 1, NOW)
    assert plan_append(request, 0, NOW).token != plan_append(request, 0, NOW + 1).token


# -- explain ----------------------------------------------------------------------------


def _rejected(*reasons: Rejection | None) -> CommitRejected:
    return CommitRejected(list(reasons))


def _refused(old: Any) -> Rejection:
    return Rejection(code="ConditionalCheckFailed", old=old)


def test_head_refused_with_another_commit_is_a_conflict() -> None:
    request = _request()
    plan = plan_append(request, 3, NOW)
    rejected = _rejected(_refused(_head(version=5, last_commit_id="theirs")), None)
    assert explain(rejected, plan, request) == Conflict(actual=5)


def test_new_aggregate_head_refused_is_a_conflict_at_its_version() -> None:
    request = _request()
    plan = plan_append(request, 0, NOW)
    old_change_set = _change_set(version=1, commit_id="theirs")
    rejected = _rejected(
        _refused(_head(version=1, last_commit_id="theirs")), _refused(old_change_set)
    )
    assert explain(rejected, plan, request) == Conflict(actual=1)


def test_head_refused_without_an_old_item_is_a_conflict_at_zero() -> None:
    request = _request()
    plan = plan_append(request, 3, NOW)
    assert explain(_rejected(_refused(None), None), plan, request) == Conflict(actual=0)


def test_head_refused_carrying_our_commit_has_landed() -> None:
    request = _request(commit_id="mine")
    plan = plan_append(request, 3, NOW)
    rejected = _rejected(_refused(_head(version=4, last_commit_id="mine")), None)
    assert explain(rejected, plan, request) == Landed(version=4, record=None)


def test_change_set_refused_carrying_our_commit_has_landed_with_its_record() -> None:
    request = _request(commit_id="mine")
    plan = plan_append(request, 3, NOW)
    ours = _change_set(version=4, commit_id="mine")
    rejected = _rejected(_refused(_head(version=6, last_commit_id="later")), _refused(ours))
    assert explain(rejected, plan, request) == Landed(version=4, record=ours)


def test_marker_refused_has_landed_at_the_marker_version() -> None:
    request = _request(commit_id="mine", guarded=True)
    plan = plan_append(request, 8, NOW)
    marker = MarkerRecord(aggregate_id="order-1", commit_id="mine", version=5)
    rejected = _rejected(None, None, _refused(marker))
    assert explain(rejected, plan, request) == Landed(version=5, record=None)


def test_marker_refused_wins_over_a_head_conflict() -> None:
    request = _request(commit_id="mine", guarded=True)
    plan = plan_append(request, 4, NOW)
    marker = MarkerRecord(aggregate_id="order-1", commit_id="mine", version=3)
    rejected = _rejected(_refused(_head(version=9, last_commit_id="x")), None, _refused(marker))
    assert explain(rejected, plan, request) == Landed(version=3, record=None)


@pytest.mark.parametrize(
    "reasons",
    [
        [Rejection("TransactionConflict", None), None],
        [None, Rejection("TransactionConflict", None)],
        [Rejection("TransactionConflict", None), Rejection("TransactionConflict", None)],
        [Rejection("None", None), Rejection("TransactionConflict", None)],
    ],
)
def test_only_transaction_conflicts_mean_busy(reasons: list[Rejection | None]) -> None:
    request = _request()
    plan = plan_append(request, 3, NOW)
    assert explain(CommitRejected(reasons), plan, request) == Busy()


@pytest.mark.parametrize(
    "reasons",
    [
        [Rejection("ThrottlingError", None), None],
        [None, Rejection("ProvisionedThroughputExceeded", None)],
        [Rejection("TransactionConflict", None), Rejection("ThrottlingError", None)],
    ],
)
def test_throttled_items_mean_busy(reasons: list[Rejection | None]) -> None:
    request = _request()
    plan = plan_append(request, 3, NOW)
    assert explain(CommitRejected(reasons), plan, request) == Busy()


def test_a_refusal_that_no_retry_mends_is_not_busy_even_with_a_conflict() -> None:
    request = _request()
    plan = plan_append(request, 3, NOW)
    reasons = [Rejection("TransactionConflict", None), Rejection("ValidationError", None)]
    assert explain(CommitRejected(reasons), plan, request) == Refused(
        ("TransactionConflict", "ValidationError")
    )


def test_a_taken_version_while_the_head_is_busy_is_asked_again() -> None:
    # The head's condition was not evaluated (another transaction held it), so the
    # change set found at the version says nothing about the head: retry, not corruption.
    request = _request()
    plan = plan_append(request, 3, NOW)
    theirs = _change_set(version=4, commit_id="theirs")
    rejected = _rejected(Rejection("TransactionConflict", None), _refused(theirs))
    assert explain(rejected, plan, request) == Busy()


def test_type_mismatch() -> None:
    request = _request(aggregate_type="Order")
    plan = plan_append(request, 3, NOW)
    stored = _head(version=3, aggregate_type="Customer", last_commit_id="theirs")
    assert explain(_rejected(_refused(stored), None), plan, request) == TypeMismatch(
        stored_type="Customer"
    )


def test_other_type_at_another_version_is_a_conflict() -> None:
    # The version check fails first: report the version, the caller reloads anyway.
    request = _request(aggregate_type="Order")
    plan = plan_append(request, 3, NOW)
    stored = _head(version=4, aggregate_type="Customer", last_commit_id="theirs")
    assert explain(_rejected(_refused(stored), None), plan, request) == Conflict(actual=4)


def test_untyped_request_never_reports_a_type_mismatch() -> None:
    request = _request(aggregate_type=None)
    plan = plan_append(request, 3, NOW)
    stored = _head(version=5, aggregate_type="Customer", last_commit_id="theirs")
    assert explain(_rejected(_refused(stored), None), plan, request) == Conflict(actual=5)


def test_change_set_refused_by_another_commit_with_head_accepted_is_an_integrity_error() -> None:
    request = _request()
    plan = plan_append(request, 3, NOW)
    theirs = _change_set(version=4, commit_id="theirs")
    with pytest.raises(IntegrityError, match="order-1"):
        explain(_rejected(None, _refused(theirs)), plan, request)


@pytest.mark.parametrize(
    "item",
    [
        {**record_to_item(_head()), "pk": "order-1"},
        {**record_to_item(_head()), "sk": "0"},
    ],
    ids=["untyped-pk", "untyped-sk"],
)
def test_untyped_key_attribute_is_an_integrity_error(item: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError):
        record_from_item(item)


@pytest.mark.parametrize("code", ["ValidationError", "ItemCollectionSizeLimitExceeded"])
def test_non_retryable_cancellation_codes_are_not_busy(code: str) -> None:
    request = _request()
    plan = plan_append(request, 3, NOW)
    try:
        outcome = explain(_rejected(None, Rejection(code=code, old=None)), plan, request)
    except Exception:
        return
    assert not isinstance(outcome, Busy)


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        ChangeSetRecord,
        aggregate_id=st.text(min_size=1, max_size=50),
        version=st.integers(min_value=1, max_value=2**53),
        commit_id=st.text(min_size=1, max_size=64),
        timestamp_us=st.integers(min_value=0, max_value=2**62),
        event_count=st.integers(min_value=0, max_value=10**6),
        payload=st.binary(max_size=100),
        metadata=st.none() | st.binary(max_size=50),
        pointer=st.none()
        | st.builds(
            ObjectPointer,
            key=st.text(min_size=1, max_size=80),
            size=st.integers(min_value=0, max_value=2**40),
            sha256=st.text(min_size=64, max_size=64),
            compression=st.none() | st.just("zlib"),
        ),
    )
)
def test_change_set_item_size_counts_what_the_item_holds(record: ChangeSetRecord) -> None:
    assert change_set_item_size(record) == item_size(record_to_item(record))


@settings(max_examples=200, deadline=None)
@given(
    aggregate_id=st.text(min_size=1, max_size=512),
    commit_id=st.text(min_size=1, max_size=128),
    aggregate_type=st.none() | st.text(min_size=1, max_size=200),
)
def test_companion_size_bounds_the_head_and_marker_items(
    aggregate_id: str, commit_id: str, aggregate_type: str | None
) -> None:
    big = 2**53
    record = _change_set(aggregate_id=aggregate_id, commit_id=commit_id)
    head = HeadRecord(aggregate_id, aggregate_type, big, commit_id, big, 2**62, 2**62)
    marker = MarkerRecord(aggregate_id, commit_id, big)
    written = item_size(record_to_item(head)) + item_size(record_to_item(marker))
    assert written <= companion_items_size(record, aggregate_type, feed=False)
    assert companion_items_size(record, aggregate_type, feed=True) > written


def test_memory_backend_counts_item_sizes_as_the_dynamodb_backend() -> None:
    """The size limits are the same in unit tests as against DynamoDB."""
    dynamodb = DynamoDBBackend(StoreConfig(table_name="events"))
    memory = MemoryBackend()
    record = _change_set(payload=b"x" * 1234, metadata=b"m" * 10)
    assert memory.change_set_size(record) == dynamodb.change_set_size(record)
    assert memory.change_set_size(record) == item_size(record_to_item(record))
    for feed in (False, True):
        assert memory.companion_size(record, "Order", feed) == dynamodb.companion_size(
            record, "Order", feed
        )
