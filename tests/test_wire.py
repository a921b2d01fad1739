"""The fast DynamoDB path (``_wire.py``) against botocore itself: golden requests and answers.

- **Requests**: every kind of call the backend makes (captured from a store run on the
  emulator, plus a hand-made ``ConditionCheck``) is sent by the stock client and by
  :class:`FastDynamoDB` to a recording server. Method, path, target, content type, host,
  user agent, signed header names and the JSON body agree, and botocore's ``SigV4Auth``,
  run for the same timestamp over the request as received, computes the fast path's
  ``Authorization`` byte for byte.
- **Answers**: canned answers (every attribute type, cancellation reasons with items,
  throttling, validation, 5xx, a body that is not JSON) give equal results from both
  clients, ``ResponseMetadata`` included, or the same exception class with an equal
  ``response``; successes also equal ``botocore.parsers.create_parser("json")``'s output.
- Retries, transport failures, credential refresh, the version fallback, closing.

The contract suite runs through the fast path too: it is on by default.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import json
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import botocore.parsers
import botocore.session
import pytest
from aiobotocore.credentials import AioRefreshableCredentials
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.retries.standard import ExponentialBackoff

from eventstore_async import ANY, EventStore, StorageUnavailableError, StoreConfig
from eventstore_async._backends.aws import dynamodb as _dynamodb
from eventstore_async._backends.aws import wire as _wire
from eventstore_async._backends.aws.dynamodb import DynamoDBBackend
from eventstore_async._backends.aws.session import open_clients
from eventstore_async._backends.aws.wire import FastDynamoDB, _Signer, fallback_reason

pytestmark = pytest.mark.anyio

KEY, SECRET = "AKIDWIRETEST", "wire/secret+key"
MODEL = botocore.session.get_session().get_service_model("dynamodb")


# -- a recording HTTP/1.1 server ----------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


def answer(status: int, body: bytes | str, **extra: str) -> bytes:
    """A raw HTTP answer; the same bytes go to both clients."""
    data = body.encode() if isinstance(body, str) else body
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {_wire._CONTENT_TYPE}"]
    lines += ["x-amzn-RequestId: REQ-1", f"Content-Length: {len(data)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


CLOSE = b""  # close the connection without answering
HANG = b"hang"  # never answer (until the client gives up and closes)


@dataclass
class Recorder:
    """Records every request; answers with ``replies`` in turn, then ``default``."""

    default: bytes = field(default_factory=lambda: answer(200, "{}"))
    replies: list[bytes] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                request_line, *lines = head.split("\r\n")[:-2]
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                method, path, _ = request_line.split(" ")
                self.requests.append(Recorded(method, path, headers, body))
                reply = self.replies.pop(0) if self.replies else self.default
                if reply == HANG:
                    await reader.read()
                if reply in (CLOSE, HANG):
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    recording = Recorder()
    server = await asyncio.start_server(recording.serve, "127.0.0.1", 0)
    recording.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield recording


@asynccontextmanager
async def client_pair(url: str, **overrides: Any) -> AsyncIterator[tuple[Any, FastDynamoDB]]:
    """The stock client and the fast one, with the same configuration."""
    settings: dict[str, Any] = {
        "table_name": "wire",
        "endpoint_url": url,
        "aws_access_key_id": KEY,
        "aws_secret_access_key": SECRET,
        "max_attempts": 2,
        **overrides,
    }
    config = StoreConfig(**settings)
    async with AsyncExitStack() as stack:
        stock = (await open_clients(config.replace(fast_path=False), stack)).dynamodb
        fast = (await open_clients(config, stack)).dynamodb
        assert isinstance(fast, FastDynamoDB)
        yield stock, fast


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard mode waits up to 1 s, 2 s... between attempts: not in tests."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


# -- requests -----------------------------------------------------------------------------


def botocore_authorization(request: Recorded, credentials: ReadOnlyCredentials) -> str:
    """What botocore's SigV4Auth signs for this request, at its own X-Amz-Date."""
    stamp = request.headers["x-amz-date"]
    when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
    aws = AWSRequest(
        method=request.method,
        url=f"http://{request.headers['host']}{request.path}",
        headers={
            "X-Amz-Target": request.headers["x-amz-target"],
            "Content-Type": request.headers["content-type"],
            "User-Agent": request.headers["user-agent"],
        },
        data=request.body,
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        SigV4Auth(credentials, "dynamodb", "us-east-1").add_auth(aws)
    assert aws.headers["X-Amz-Date"] == stamp
    return str(aws.headers["Authorization"])


def signed_names(request: Recorded) -> str:
    return request.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]


SAME_HEADERS = ("x-amz-target", "content-type", "host", "user-agent", "amz-sdk-request")


def assert_same_request(
    stock: Recorded, fast: Recorded, credentials: ReadOnlyCredentials | None = None
) -> None:
    keys = credentials or ReadOnlyCredentials(KEY, SECRET, None)
    assert (fast.method, fast.path) == (stock.method, stock.path) == ("POST", "/")
    for name in SAME_HEADERS:
        assert fast.headers[name] == stock.headers[name], name
    assert json.loads(fast.body) == json.loads(stock.body)
    assert signed_names(fast) == signed_names(stock)
    assert fast.headers["authorization"] == botocore_authorization(fast, keys)
    assert stock.headers["authorization"] == botocore_authorization(stock, keys)  # the check


#: A TransactWriteItems the backend never builds: a ConditionCheck.
CONDITION_CHECK = (
    "TransactWriteItems",
    {
        "TransactItems": [
            {
                "ConditionCheck": {
                    "TableName": "wire",
                    "Key": {"pk": {"S": "a"}, "sk": {"N": "0"}},
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {":v": {"N": "3"}},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            {"Put": {"TableName": "wire", "Item": {"pk": {"S": "é"}, "b": {"B": b"\x00\xff"}}}},
        ],
        "ClientRequestToken": "token-1",
    },
)


async def store_calls(emulator_url: str) -> list[tuple[str, dict[str, Any]]]:
    """(operation, params) of every fast-path call a store makes in a busy scenario."""
    calls: list[tuple[str, dict[str, Any]]] = []
    original = FastDynamoDB._call

    async def recording(
        self: FastDynamoDB, name: str, params: dict[str, Any], reader: Any = None
    ) -> Any:
        calls.append((name, copy.deepcopy(params)))
        return await original(self, name, params, reader)

    name = "wire-calls"
    config = StoreConfig(
        table_name=name,
        bucket_name=name,
        endpoint_url=emulator_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        feed_shards=2,
        page_size=2,
    )
    with mock.patch.object(FastDynamoDB, "_call", recording):
        backend = DynamoDBBackend(config)
        async with EventStore(config, backend=backend) as store:
            await store.create_schema()
            try:
                await busy_scenario(store, backend)
            finally:
                await store.drop_schema()
    return calls


async def busy_scenario(store: EventStore, backend: DynamoDBBackend) -> None:
    await store.append(
        "order-1", [{"n": 1}], expected_version=0, aggregate_type="Order", metadata={"u": "a"}
    )
    await store.append("order-1", [{"n": 2}, {"n": 3}], expected_version=1)
    await store.append("order-1", [{"n": 4}], expected_version=ANY)
    await store.save_snapshot("order-1", 2, {"total": 2}, keep=1)
    await store.save_snapshot("order-1", 3, {"total": 3}, keep=1)
    await store.load("order-1")
    await store.load("order-1", snapshot_schema="default")
    assert len([cs async for cs in store.read("order-1", from_version=2)]) == 2
    await store.head("order-1")
    async with store.subscribe("wire-view", poll_interval=0.01) as sub:
        async for change_set in sub:
            await sub.project("views", put={change_set.commit_id: {"v": change_set.version}})
            if change_set.version == 3:
                break
    await backend.referenced_objects("order-1")  # the sweep's


def kinds(calls: list[tuple[str, dict[str, Any]]]) -> set[str]:
    seen = set()
    for name, params in calls:
        seen.add(name)
        for action in params.get("TransactItems", []):
            seen.update(f"{name}.{kind}" for kind in action)
        seen.update(f"{name}.{key}" for key in params if name == "Query")
    return seen


async def test_requests_are_the_ones_botocore_sends(emulator_url: str, recorder: Recorder) -> None:
    calls = [*await store_calls(emulator_url), CONDITION_CHECK]
    expected = {
        "GetItem",
        "BatchGetItem",
        *(f"TransactWriteItems.{k}" for k in ("Put", "Update", "Delete", "ConditionCheck")),
        *(f"Query.{k}" for k in ("ExclusiveStartKey", "FilterExpression", "Limit")),
        "Query.ProjectionExpression",
    }
    assert expected <= kinds(calls), expected - kinds(calls)
    async with client_pair(recorder.url) as (stock, fast):
        for name, params in calls:
            method = _wire.FAST_OPERATIONS[name]
            await getattr(stock, method)(**copy.deepcopy(params))
            await getattr(fast, method)(**copy.deepcopy(params))
    for index in range(0, len(recorder.requests), 2):
        assert_same_request(*recorder.requests[index : index + 2])


async def test_session_tokens_are_signed(recorder: Recorder) -> None:
    token = "FwoGZXIvYXdzE//token+with/slashes=="
    async with client_pair(recorder.url, aws_session_token=token) as (stock, fast):
        for client in (stock, fast):
            await client.get_item(TableName="wire", Key={"pk": {"S": "a"}, "sk": {"N": "0"}})
    stock_request, fast_request = recorder.requests
    assert fast_request.headers["x-amz-security-token"] == token
    assert "x-amz-security-token" in signed_names(fast_request)
    assert_same_request(stock_request, fast_request, ReadOnlyCredentials(KEY, SECRET, token))


async def test_lambda_trace_ids_are_passed_on(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fn")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    async with client_pair(recorder.url) as (stock, fast):
        for client in (stock, fast):
            await client.get_item(**GET_PARAMS)
    stock_request, fast_request = recorder.requests
    assert fast_request.headers["x-amzn-trace-id"] == stock_request.headers["x-amzn-trace-id"]
    assert_same_request(stock_request, fast_request)


async def test_a_missing_request_token_is_made_as_botocore_does(recorder: Recorder) -> None:
    params = {"TransactItems": CONDITION_CHECK[1]["TransactItems"]}
    async with client_pair(recorder.url) as (stock, fast):
        await stock.transact_write_items(**copy.deepcopy(params))
        await fast.transact_write_items(**copy.deepcopy(params))
    tokens = [json.loads(r.body)["ClientRequestToken"] for r in recorder.requests]
    assert all(len(token) == 36 for token in tokens) and tokens[0] != tokens[1]


@pytest.mark.parametrize("token", [None, "session token"])
@pytest.mark.parametrize("host", ["dynamodb.us-east-1.amazonaws.com", "127.0.0.1:8000"])
def test_signer_matches_sigv4auth(token: str | None, host: str) -> None:
    credentials = ReadOnlyCredentials(KEY, SECRET, token)
    for body, stamp in [(b"{}", "20260101T000000Z"), ('{"é": 1}'.encode(), "20261231T235959Z")]:
        headers = {"Content-Type": _wire._CONTENT_TYPE, "X-Amz-Target": "DynamoDB_20120810.Query"}
        fast_headers = dict(headers)
        _Signer(host, "/", "us-east-1", "dynamodb").sign(
            fast_headers, "DynamoDB_20120810.Query", body, credentials, stamp
        )
        recorded = {k.lower(): v for k, v in fast_headers.items()} | {"host": host}
        recorded["user-agent"] = "ua"
        expected = botocore_authorization(Recorded("POST", "/", recorded, body), credentials)
        assert fast_headers["Authorization"] == expected


def test_signing_key_follows_the_secret_and_the_day() -> None:
    signer = _Signer("h", "/", "us-east-1", "dynamodb")
    one = signer._signing_key("secret-1", "20260101")
    assert signer._signing_key("secret-1", "20260101") is one
    assert signer._signing_key("secret-2", "20260101") != one
    assert signer._signing_key("secret-1", "20260102") != one
    assert signer.timestamp(0.0) == "19700101T000000Z"


# -- answers ------------------------------------------------------------------------------

B = base64.b64encode
ITEM = {
    "pk": {"S": "agg-é日本"},
    "sk": {"N": "7"},
    "b": {"B": B(b"\x00\x01\xff").decode()},
    "empty_b": {"B": ""},
    "ss": {"SS": ["x", "y"]},
    "ns": {"NS": ["1", "2.50"]},
    "bs": {"BS": [B(b"\x00").decode(), B(b"\xff\xfe").decode()]},
    "m": {
        "M": {
            "inner": {"B": B(b"hi").decode()},
            "n": {"NULL": True},
            "l": {"L": [{"B": "AA=="}, {"S": "s"}, {"M": {"deep": {"BS": ["AQ=="]}}}]},
        }
    },
    "yes": {"BOOL": True},
    "no": {"BOOL": False},
    "nothing": {"NULL": True},
    "empty_l": {"L": []},
    "empty_m": {"M": {}},
    # never sent by DynamoDB; botocore keeps modeled, non-null members only
    "odd": {"S": "x", "B": "AA==", "XX": 1, "N": None},
}
KEY_ATTRS = {"pk": {"S": "agg"}, "sk": {"N": "1"}}
CAPACITY = {"TableName": "wire", "CapacityUnits": 1.5, "Table": {"CapacityUnits": 1.0}}
QUERY_PARAMS = {"TableName": "wire", "KeyConditionExpression": "pk = :p"}
GET_PARAMS = {"TableName": "wire", "Key": KEY_ATTRS}
BATCH_PARAMS = {"RequestItems": {"wire": {"Keys": [KEY_ATTRS]}}}
WRITE_PARAMS = {"TransactItems": CONDITION_CHECK[1]["TransactItems"], "ClientRequestToken": "t"}


def error(code: str, message: str, prefix: str = "com.amazonaws.dynamodb.v20120810#") -> str:
    return json.dumps({"__type": prefix + code, "message": message})


CANCELLED = json.dumps(
    {
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": "Transaction cancelled [ConditionalCheckFailed, None]",
        "CancellationReasons": [
            {
                "Code": "ConditionalCheckFailed",
                "Message": "The conditional request failed",
                "Item": {**KEY_ATTRS, "version": {"N": "3"}, "payload": {"B": "AAE="}},
            },
            {"Code": "None"},
        ],
    }
)

ANSWERS: dict[str, tuple[str, dict[str, Any], bytes]] = {
    "query-every-type": (
        "Query",
        QUERY_PARAMS,
        answer(
            200,
            json.dumps(
                {
                    "Items": [ITEM, KEY_ATTRS],
                    "Count": 2,
                    "ScannedCount": 5,
                    "LastEvaluatedKey": KEY_ATTRS,
                    "ConsumedCapacity": {**CAPACITY, "GlobalSecondaryIndexes": {"g": {}}},
                    "NotInTheModel": {"x": 1},
                }
            ),
        ),
    ),
    "query-empty": ("Query", QUERY_PARAMS, answer(200, '{"Items": [], "Count": 0}')),
    "get-item": ("GetItem", GET_PARAMS, answer(200, json.dumps({"Item": ITEM}))),
    "get-no-item": ("GetItem", GET_PARAMS, answer(200, "{}")),
    "get-empty-body": ("GetItem", GET_PARAMS, answer(200, "")),
    "get-not-json": ("GetItem", GET_PARAMS, answer(200, "<html>oops</html>")),
    "get-wrong-type": ("GetItem", GET_PARAMS, answer(200, '{"Item": {"a": {"N": 5}}}')),
    "get-lenient-base64": ("GetItem", GET_PARAMS, answer(200, '{"Item": {"a": {"B": "A A=="}}}')),
    "get-bad-base64": ("GetItem", GET_PARAMS, answer(200, '{"Item": {"a": {"B": "A"}}}')),
    "batch-get": (
        "BatchGetItem",
        BATCH_PARAMS,
        answer(
            200,
            json.dumps(
                {
                    "Responses": {"wire": [ITEM]},
                    "UnprocessedKeys": {
                        "wire": {"Keys": [{"pk": {"B": "AA=="}}], "ConsistentRead": True}
                    },
                    "ConsumedCapacity": [CAPACITY],
                }
            ),
        ),
    ),
    "transact-ok": ("TransactWriteItems", WRITE_PARAMS, answer(200, "{}")),
    "transact-metrics": (
        "TransactWriteItems",
        WRITE_PARAMS,
        answer(
            200,
            json.dumps(
                {
                    "ConsumedCapacity": [CAPACITY],
                    "ItemCollectionMetrics": {
                        "wire": [
                            {
                                "ItemCollectionKey": {"pk": {"B": "AA=="}},
                                "SizeEstimateRangeGB": [0, 1.5],
                            }
                        ]
                    },
                }
            ),
        ),
    ),
    "crc32-right": (
        "GetItem",
        GET_PARAMS,
        answer(200, '{"Item": {}}', x_amz_crc32=str(zlib.crc32(b'{"Item": {}}'))),
    ),
    "crc32-wrong": ("GetItem", GET_PARAMS, answer(200, '{"Item": {}}', x_amz_crc32="1")),
    "cancelled": ("TransactWriteItems", WRITE_PARAMS, answer(400, CANCELLED)),
    "conditional": (
        "TransactWriteItems",
        WRITE_PARAMS,
        answer(400, error("ConditionalCheckFailedException", "The conditional request failed")),
    ),
    "throughput": (
        "Query",
        QUERY_PARAMS,
        answer(400, error("ProvisionedThroughputExceededException", "Rate exceeded")),
    ),
    "throttling": ("GetItem", GET_PARAMS, answer(400, error("ThrottlingException", "slow down"))),
    "validation": (
        "Query",
        QUERY_PARAMS,
        answer(400, error("ValidationException", "bad", "com.amazon.coral.validate#")),
    ),
    "missing-table": (
        "GetItem",
        GET_PARAMS,
        answer(400, error("ResourceNotFoundException", "Requested resource not found")),
    ),
    "internal-500": (
        "TransactWriteItems",
        WRITE_PARAMS,
        answer(500, error("InternalServerError", "Internal server error")),
    ),
    "empty-500": ("Query", QUERY_PARAMS, answer(500, "")),
    "html-503": ("GetItem", GET_PARAMS, answer(503, "<html><body>Service Unavailable</body>")),
}


async def outcome(call: Awaitable[Any]) -> tuple[Any, ...]:
    try:
        return ("returned", await call)
    except ClientError as exc:  # each client makes its own modeled classes: compare names
        return ("raised", type(exc).__name__, exc.response, exc.operation_name)
    except Exception as exc:  # e.g. botocore's parser failing on a body
        return ("failed", type(exc), str(exc))


@pytest.mark.parametrize("case", sorted(ANSWERS))
async def test_answers_are_the_ones_botocore_parses(case: str, recorder: Recorder) -> None:
    name, params, reply = ANSWERS[case]
    recorder.default = reply
    method = _wire.FAST_OPERATIONS[name]
    async with client_pair(recorder.url) as (stock, fast):
        expected = await outcome(getattr(stock, method)(**copy.deepcopy(params)))
        stock_requests = len(recorder.requests)
        got = await outcome(getattr(fast, method)(**copy.deepcopy(params)))
    assert got == expected
    assert len(recorder.requests) == 2 * stock_requests  # the same retries
    if expected[0] == "returned" and stock_requests == 1:
        assert got[1] == parsed_by_botocore(name, reply)


def parsed_by_botocore(name: str, reply: bytes) -> dict[str, Any]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    response = {"status_code": int(lines[0].split()[1]), "headers": headers, "body": body}
    parsed: dict[str, Any] = botocore.parsers.create_parser("json").parse(
        response, MODEL.operation_model(name).output_shape
    )
    parsed["ResponseMetadata"]["RetryAttempts"] = 0
    return parsed


async def test_attribute_values_come_back_typed(recorder: Recorder) -> None:
    recorder.default = ANSWERS["get-item"][2]
    async with client_pair(recorder.url) as (_, fast):
        item = (await fast.get_item(**GET_PARAMS))["Item"]
    assert item["b"] == {"B": b"\x00\x01\xff"} and item["empty_b"] == {"B": b""}
    assert item["bs"] == {"BS": [b"\x00", b"\xff\xfe"]}
    assert item["m"]["M"]["l"]["L"][2] == {"M": {"deep": {"BS": [b"\x01"]}}}
    assert item["ns"] == {"NS": ["1", "2.50"]} and item["yes"] == {"BOOL": True}


# -- retries and transport failures -------------------------------------------------------


async def test_a_retry_sends_the_same_body_signed_again(recorder: Recorder) -> None:
    recorder.replies = [answer(500, error("InternalServerError", "x")), answer(200, "{}")] * 2
    async with client_pair(recorder.url, max_attempts=3) as (stock, fast):
        for client in (stock, fast):
            result = await client.transact_write_items(**copy.deepcopy(WRITE_PARAMS))
            assert result["ResponseMetadata"]["RetryAttempts"] == 1
    stock_first, stock_retry, fast_first, fast_retry = recorder.requests
    assert fast_retry.body == fast_first.body
    assert json.loads(fast_retry.body)["ClientRequestToken"] == "t"
    assert fast_first.headers["amz-sdk-request"] == "attempt=1"
    assert fast_retry.headers["amz-sdk-request"] == "attempt=2; max=3"
    invocation = fast_first.headers["amz-sdk-invocation-id"]
    assert fast_retry.headers["amz-sdk-invocation-id"] == invocation
    assert_same_request(stock_first, fast_first)
    assert_same_request(stock_retry, fast_retry)


async def test_a_reader_reads_the_success_answer_after_any_retry(recorder: Recorder) -> None:
    body = json.dumps({"Items": [KEY_ATTRS], "Count": 1})
    recorder.replies = [answer(500, error("InternalServerError", "x")), answer(200, body)]
    seen: list[bytes] = []

    def reader(data: bytes) -> Any:
        seen.append(data)
        return ("read", data)

    async with client_pair(recorder.url, max_attempts=3) as (_, fast):
        result = await fast.read("Query", dict(QUERY_PARAMS), reader)
    assert result == ("read", body.encode())
    assert seen == [body.encode()]  # the error answer went to botocore's parser, not here
    assert len(recorder.requests) == 2


async def test_a_reader_that_declines_gets_botocore_s_dict(recorder: Recorder) -> None:
    name, params, reply = ANSWERS["query-every-type"]
    recorder.default = reply
    async with client_pair(recorder.url) as (_, fast):
        result = await fast.read(name, copy.deepcopy(params), lambda data: None)
    assert result == parsed_by_botocore(name, reply)


async def test_a_reader_does_not_see_error_answers(recorder: Recorder) -> None:
    recorder.default = answer(400, error("ResourceNotFoundException", "no table"))
    async with client_pair(recorder.url) as (_, fast):
        with pytest.raises(ClientError) as caught:
            await fast.read("Query", dict(QUERY_PARAMS), lambda data: pytest.fail("read"))
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"


async def transport_outcome(client: Any) -> tuple[type[BaseException], str]:
    with pytest.raises(Exception) as raised:
        await client.get_item(**GET_PARAMS)
    return type(raised.value), str(raised.value.kwargs.get("endpoint_url"))


@pytest.mark.parametrize(
    ("reply", "error_class"),
    [
        (CLOSE, ConnectionClosedError),
        (HANG, ReadTimeoutError),
        (b"garbage\r\n\r\n", HTTPClientError),
    ],
)
async def test_transport_failures_raise_botocore_s_exceptions(
    recorder: Recorder, reply: bytes, error_class: type[Exception]
) -> None:
    recorder.default = reply
    async with client_pair(recorder.url, read_timeout=0.3) as (stock, fast):
        expected = await transport_outcome(stock)
        attempts = len(recorder.requests)
        assert await transport_outcome(fast) == expected
    assert expected[0] is error_class
    assert len(recorder.requests) == 2 * attempts == 4


async def test_an_unreachable_endpoint_raises_endpoint_connection_error() -> None:
    async with client_pair("http://127.0.0.1:9", connect_timeout=0.5) as (stock, fast):
        assert await transport_outcome(fast) == await transport_outcome(stock)
        assert (await transport_outcome(fast))[0] is EndpointConnectionError


# -- credentials, fallback, closing -------------------------------------------------------


async def test_expired_credentials_are_refreshed(recorder: Recorder) -> None:
    issued: list[str] = []

    async def refresh() -> dict[str, str]:
        issued.append(f"AKIDROTATED{len(issued)}")
        # Inside botocore's advisory window (15 min), outside the mandatory one (10 min).
        soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=12)
        return {
            "access_key": issued[-1],
            "secret_key": SECRET,
            "token": "t",
            "expiry_time": soon.isoformat(),
        }

    async with client_pair(recorder.url) as (_, fast):
        credentials = AioRefreshableCredentials.create_from_metadata(
            await refresh(), refresh, "test"
        )
        fast._credentials = credentials
        await fast.get_item(**GET_PARAMS)
        await fast.get_item(**GET_PARAMS)
    assert len(issued) >= 3  # created, then refreshed before each request
    first, second = (r.headers["authorization"] for r in recorder.requests)
    assert f"Credential={issued[1]}/" in first or f"Credential={issued[2]}/" in first
    assert f"Credential={issued[-1]}/" in second


async def test_untested_versions_use_the_stock_client(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_wire, "TESTED_AIOBOTOCORE", ((9, 0, 0), (9, 0, 0)))
    monkeypatch.setattr(_wire, "_logged_reasons", set())
    caplog.set_level(logging.INFO, logger="eventstore_async._backends.aws.wire")
    config = StoreConfig(table_name="wire", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    for _ in range(2):
        async with AsyncExitStack() as stack:
            client = (await open_clients(config, stack)).dynamodb
            assert not isinstance(client, FastDynamoDB)
    logged = [
        r.getMessage() for r in caplog.records if r.name == "eventstore_async._backends.aws.wire"
    ]
    assert logged == [
        "DynamoDB calls use the stock aiobotocore client: aiobotocore "
        f"{_wire.aiobotocore.__version__} is untested (tested: 9.0.0)"
    ]


async def test_fast_path_can_be_turned_off() -> None:
    config = StoreConfig(table_name="wire", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    async with AsyncExitStack() as stack:
        assert isinstance((await open_clients(config, stack)).dynamodb, FastDynamoDB)
        stock = (await open_clients(config.replace(fast_path=False), stack)).dynamodb
        assert not isinstance(stock, FastDynamoDB)
        assert fallback_reason(stock) is None
        monkeypatch = pytest.MonkeyPatch()
        with monkeypatch.context() as patch:
            patch.setitem(stock.meta.config.retries, "mode", "legacy")
            assert "retry mode 'legacy'" in str(fallback_reason(stock))
    assert (
        StoreConfig.from_env({"EVENTSTORE_TABLE": "wire", "EVENTSTORE_FAST_PATH": "0"}).fast_path
        is False
    )


async def test_a_proxy_keeps_the_stock_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    config = StoreConfig(
        table_name="wire", endpoint_url="http://dynamodb.invalid", aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )  # fmt: skip
    async with AsyncExitStack() as stack:
        assert not isinstance((await open_clients(config, stack)).dynamodb, FastDynamoDB)


def test_versions_outside_the_tested_range_are_refused() -> None:
    client = mock.Mock()
    assert "aiobotocore 2.24.0 is untested" in str(
        fallback_reason(client, aiobotocore_version="2.24.0")
    )
    assert "botocore 1.41.0 is untested" in str(fallback_reason(client, botocore_version="1.41.0"))
    assert "untested" in str(fallback_reason(client, aiobotocore_version="2.25.1.dev0"))


async def test_closing_the_store_closes_the_fast_path_s_session() -> None:
    config = StoreConfig(table_name="wire", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    backend = DynamoDBBackend(config)
    async with EventStore(config, backend=backend):
        assert backend._clients is not None
        fast = backend._clients.dynamodb
        assert isinstance(fast, FastDynamoDB)
        assert not fast._session.closed
    assert fast._session.closed


@pytest.mark.parametrize("verify", [True, False])
async def test_pool_timeouts_and_tls_are_the_client_s(verify: bool) -> None:
    config = StoreConfig(
        table_name="wire", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
        verify_tls=verify, max_pool_connections=7, connect_timeout=1.5, read_timeout=3.0,
    )  # fmt: skip
    async with AsyncExitStack() as stack:
        fast = (await open_clients(config, stack)).dynamodb
        session = fast._session
        assert session is not fast._client._endpoint.http_session._sessions.get(None)
        connector = session.connector
        assert connector.limit == 7
        assert connector._keepalive_timeout == 12
        assert (session.timeout.sock_connect, session.timeout.sock_read) == (1.5, 3.0)
        assert (connector._ssl is False) is not verify


async def test_keys_left_unprocessed_after_the_retries_are_the_library_s_reason(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every BatchGetItem answer leaves a key unprocessed: AWS sent no error code, the
    library gave up (``reason``), after its attempts."""
    left = {"wire": {"Keys": [KEY_ATTRS], "ConsistentRead": True}}
    recorder.default = answer(200, json.dumps({"Responses": {"wire": []}, "UnprocessedKeys": left}))

    async def no_wait(seconds: float) -> None:  # the backoff between attempts: not in tests
        await asyncio.sleep(0)

    monkeypatch.setattr(_dynamodb.anyio, "sleep", no_wait)
    config = StoreConfig(
        table_name="wire",
        endpoint_url=recorder.url,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    backend = DynamoDBBackend(config)
    await backend.open()
    try:
        with pytest.raises(StorageUnavailableError) as raised:
            await backend.get_many([("agg", 1)])
    finally:
        await backend.aclose()
    assert (raised.value.code, raised.value.reason) == (None, "UnprocessedKeys")
    assert len(recorder.requests) == _dynamodb._UNPROCESSED_ATTEMPTS
