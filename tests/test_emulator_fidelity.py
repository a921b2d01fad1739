"""DynamoDB behaviours the library relies on, pinned with plain boto3 calls.

Each test runs against the embedded emulator and, when ``EVENTSTORE_TEST_ENDPOINT_URL``
is set, against that endpoint too (real DynamoDB, LocalStack...), so the same assertions
show where an emulator differs from the real thing. Every test gets a fresh table.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from eventstore_async._backends.aws.dynamodb import TABLE_KEYS

from .conftest import ENDPOINT_VARIABLE, backend_names

ITEM_LIMIT = 400 * 1024
TRANSACTION_LIMIT = 4 * 1024 * 1024
# No client-side retries: an error must surface as the service sent it.
NO_RETRY = Config(retries={"total_max_attempts": 1}, read_timeout=60)


@pytest.fixture(params=[name for name in backend_names() if name != "memory"])
def dynamodb(request: pytest.FixtureRequest) -> Any:
    if request.param == "emulator":
        endpoint = request.getfixturevalue("emulator_url")
        region, credentials = "us-east-1", {"aws_access_key_id": "t", "aws_secret_access_key": "t"}
    else:
        endpoint = os.environ[ENDPOINT_VARIABLE]
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        credentials = {}
    return boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name=region, config=NO_RETRY, **credentials
    )


@pytest.fixture
def table(dynamodb: Any) -> Iterator[str]:
    name = f"es-fidelity-{uuid.uuid4().hex[:12]}"
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **TABLE_KEYS)
    dynamodb.get_waiter("table_exists").wait(TableName=name)
    yield name
    dynamodb.delete_table(TableName=name)


def key(pk: str, sk: int) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}}


def put(table: str, item: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"Put": {"TableName": table, "Item": item, **extra}}


def all_items(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page["Items"])
    return sorted(items, key=lambda item: (item["pk"]["S"], int(item["sk"]["N"])))


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return error["Code"], error.get("Message", "")


# -- transactions roll back what they touched, and only that ---------------------------


def test_a_cancelled_transaction_leaves_every_item_as_it_was(dynamodb: Any, table: str) -> None:
    dynamodb.put_item(TableName=table, Item={**key("a", 1), "v": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={**key("other", 1), "v": {"N": "7"}})
    before = all_items(dynamodb, table)
    actions = [
        {
            "Update": {
                "TableName": table,
                "Key": key("a", 1),
                "UpdateExpression": "SET v = :two",
                "ExpressionAttributeValues": {":two": {"N": "2"}},
            }
        },
        put(table, key("a", 2)),  # a new item in an existing partition
        put(table, key("new-partition", 1)),
        {
            "Delete": {"TableName": table, "Key": key("other", 1)},
        },
        {
            "ConditionCheck": {
                "TableName": table,
                "Key": key("missing", 1),
                "ConditionExpression": "attribute_exists(pk)",
            }
        },
    ]
    with pytest.raises(ClientError) as excinfo:
        dynamodb.transact_write_items(TransactItems=actions)
    assert error_of(excinfo)[0] == "TransactionCanceledException"
    reasons = [r["Code"] for r in excinfo.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "None", "ConditionalCheckFailed"]
    assert all_items(dynamodb, table) == before


def test_a_transaction_refused_as_invalid_writes_nothing(dynamodb: Any, table: str) -> None:
    actions = [put(table, key("x", 1)), put(table, key("y", 1)), put(table, key("x", 1))]
    with pytest.raises(ClientError) as excinfo:
        dynamodb.transact_write_items(TransactItems=actions)
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    assert "multiple operations on one item" in message
    assert all_items(dynamodb, table) == []


def test_a_committed_transaction_survives_a_later_cancelled_one(dynamodb: Any, table: str) -> None:
    dynamodb.transact_write_items(TransactItems=[put(table, key("a", 1)), put(table, key("b", 1))])
    condition = {"ConditionExpression": "attribute_not_exists(pk)"}
    with pytest.raises(ClientError):
        actions = [put(table, key("c", 1), **condition), put(table, key("a", 1), **condition)]
        dynamodb.transact_write_items(TransactItems=actions)
    assert [item["pk"]["S"] for item in all_items(dynamodb, table)] == ["a", "b"]


# -- Query reads one partition ----------------------------------------------------------


def _query_all(dynamodb: Any, table: str, pk: str, **params: Any) -> tuple[list[int], int]:
    """Every sort key of the partition in the order returned, and the pages it took."""
    found: list[int] = []
    pages = 0
    for page in dynamodb.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression=params.pop("condition", "pk = :pk"),
        ExpressionAttributeValues={":pk": {"S": pk}, **params.pop("values", {})},
        ConsistentRead=True,
        **params,
    ):
        pages += 1
        found.extend(int(item["sk"]["N"]) for item in page["Items"])
    return found, pages


def test_query_returns_its_partition_in_order_page_by_page(dynamodb: Any, table: str) -> None:
    requests = [
        {"PutRequest": {"Item": key(f"p{partition}", sk)}}
        for partition in range(12)
        for sk in range(1, 11)
    ]
    for first in range(0, len(requests), 25):
        dynamodb.batch_write_item(RequestItems={table: requests[first : first + 25]})
    assert _query_all(dynamodb, table, "p3") == (list(range(1, 11)), 1)
    assert _query_all(dynamodb, table, "p3", Limit=4)[0] == list(range(1, 11))
    assert _query_all(dynamodb, table, "p7", Limit=3, ScanIndexForward=False)[0] == list(
        range(10, 0, -1)
    )
    ranged = _query_all(
        dynamodb,
        table,
        "p5",
        condition="pk = :pk AND sk >= :from",
        values={":from": {"N": "8"}},
    )
    assert ranged[0] == [8, 9, 10]
    assert _query_all(dynamodb, table, "absent") == ([], 1)
    assert len(all_items(dynamodb, table)) == 120


# -- ClientRequestToken idempotency ----------------------------------------------------


def _increment(table: str) -> list[dict[str, Any]]:
    return [
        {
            "Update": {
                "TableName": table,
                "Key": key("counter", 0),
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }
    ]


def _counter(dynamodb: Any, table: str) -> int:
    item = dynamodb.get_item(TableName=table, Key=key("counter", 0), ConsistentRead=True)
    return int(item["Item"]["n"]["N"])


def test_a_repeated_token_succeeds_without_applying_again(dynamodb: Any, table: str) -> None:
    token = uuid.uuid4().hex
    dynamodb.transact_write_items(TransactItems=_increment(table), ClientRequestToken=token)
    dynamodb.transact_write_items(TransactItems=_increment(table), ClientRequestToken=token)
    assert _counter(dynamodb, table) == 1
    dynamodb.transact_write_items(
        TransactItems=_increment(table), ClientRequestToken=uuid.uuid4().hex
    )
    assert _counter(dynamodb, table) == 2


def test_a_token_reused_with_other_parameters_is_a_mismatch(dynamodb: Any, table: str) -> None:
    token = uuid.uuid4().hex
    dynamodb.transact_write_items(TransactItems=_increment(table), ClientRequestToken=token)
    with pytest.raises(ClientError) as excinfo:
        dynamodb.transact_write_items(
            TransactItems=[put(table, key("other", 1))], ClientRequestToken=token
        )
    assert error_of(excinfo)[0] == "IdempotentParameterMismatchException"
    assert _counter(dynamodb, table) == 1
    assert len(all_items(dynamodb, table)) == 1


def test_a_cancelled_transaction_does_not_keep_its_token(dynamodb: Any, table: str) -> None:
    token = uuid.uuid4().hex
    guarded = [
        put(table, key("a", 1), ConditionExpression="attribute_exists(pk)"),  # fails: absent
    ]
    with pytest.raises(ClientError) as excinfo:
        dynamodb.transact_write_items(TransactItems=guarded, ClientRequestToken=token)
    assert error_of(excinfo)[0] == "TransactionCanceledException"
    dynamodb.put_item(TableName=table, Item=key("a", 1))
    dynamodb.transact_write_items(TransactItems=guarded, ClientRequestToken=token)  # now applies


# -- the transaction's limits: 100 actions, 4 MB ----------------------------------------


def test_a_hundred_actions_are_allowed_and_a_hundred_and_one_refused(
    dynamodb: Any, table: str
) -> None:
    dynamodb.transact_write_items(TransactItems=[put(table, key("p", n)) for n in range(100)])
    with pytest.raises(ClientError) as excinfo:
        dynamodb.transact_write_items(TransactItems=[put(table, key("q", n)) for n in range(101)])
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    assert "Member must have length less than or equal to 100" in message
    assert len(all_items(dynamodb, table)) == 100


def _big_puts(table: str, count: int, payload: int) -> list[dict[str, Any]]:
    return [put(table, {**key("big", n), "p": {"B": b"\x00" * payload}}) for n in range(count)]


def test_a_transaction_over_4_mb_is_refused(dynamodb: Any, table: str) -> None:
    dynamodb.transact_write_items(TransactItems=_big_puts(table, 10, 400_000))  # 4.0 MB
    with pytest.raises(ClientError) as excinfo:
        dynamodb.transact_write_items(TransactItems=_big_puts(table, 11, 400_000))  # 4.4 MB
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    assert "4 MB" in message
    assert len(all_items(dynamodb, table)) == 10


# -- the item size limit: 400 KB, counted as DynamoDB counts ----------------------------


def test_an_item_of_exactly_400_kb_is_stored_and_one_byte_more_refused(
    dynamodb: Any, table: str
) -> None:
    # pk "x" (2 + 1), sk 1 (2 + 2), "p" (1): the payload takes the rest of 409,600 bytes
    payload = ITEM_LIMIT - 3 - 4 - 1
    dynamodb.put_item(TableName=table, Item={**key("x", 1), "p": {"B": b"\x00" * payload}})
    with pytest.raises(ClientError) as excinfo:
        dynamodb.put_item(
            TableName=table, Item={**key("x", 2), "p": {"B": b"\x00" * (payload + 1)}}
        )
    code, message = error_of(excinfo)
    assert code == "ValidationException"
    assert "Item size has exceeded the maximum allowed size" in message
    stored = all_items(dynamodb, table)
    assert [int(item["sk"]["N"]) for item in stored] == [1]
    assert len(stored[0]["p"]["B"]) == payload
