"""The fault proxy itself: every fault kind, seen by a raw aiobotocore call, and replay.

Clients here make one attempt per call (no botocore retries), so each injected fault is
observed as is; the emulator is read directly (not through the proxy) to see whether a
faulted request reached it.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, HTTPClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from tests.chaos.proxy import (
    DYNAMODB_THROTTLE_CODES,
    FAULT_KINDS,
    FaultProxy,
    ProxyRequest,
    rates_for,
)

pytestmark = pytest.mark.anyio

TRANSPORT_ERRORS = (HTTPClientError, BotoConnectionError)


@asynccontextmanager
async def aws_client(service: str, url: str, *, read_timeout: float = 5.0) -> AsyncIterator[Any]:
    """An aiobotocore client making exactly one attempt per call."""
    config = AioConfig(
        retries={"mode": "standard", "total_max_attempts": 1},
        read_timeout=read_timeout,
        connect_timeout=2,
        s3={"addressing_style": "path"},
    )
    async with get_session().create_client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="proxy-test",
        aws_secret_access_key="proxy-test-secret",
        config=config,
    ) as client:
        yield client


@pytest.fixture
async def table(emulator_url: str) -> AsyncIterator[str]:
    name = f"proxy-{uuid.uuid4().hex[:12]}"
    async with aws_client("dynamodb", emulator_url) as dynamodb:
        await dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield name
        await dynamodb.delete_table(TableName=name)


@pytest.fixture
async def bucket(emulator_url: str) -> AsyncIterator[str]:
    name = f"proxy-{uuid.uuid4().hex[:12]}"
    async with aws_client("s3", emulator_url) as s3:
        await s3.create_bucket(Bucket=name)
        yield name
        listed = await s3.list_objects_v2(Bucket=name)
        for entry in listed.get("Contents", []):
            await s3.delete_object(Bucket=name, Key=entry["Key"])
        await s3.delete_bucket(Bucket=name)


async def stored(emulator_url: str, table: str, key: str) -> bool:
    """Whether the item is in the table (read directly, not through the proxy)."""
    async with aws_client("dynamodb", emulator_url) as dynamodb:
        response = await dynamodb.get_item(
            TableName=table, Key={"pk": {"S": key}}, ConsistentRead=True
        )
    return "Item" in response


async def put(client: Any, table: str, key: str) -> None:
    await client.put_item(TableName=table, Item={"pk": {"S": key}})


def error_of(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


# -- no faults ----------------------------------------------------------------------------


async def test_forwards_dynamodb_and_s3_unchanged(
    emulator_url: str, table: str, bucket: str
) -> None:
    async with FaultProxy(emulator_url, seed=1) as proxy:
        async with aws_client("dynamodb", proxy.url) as dynamodb:
            await put(dynamodb, table, "a")
            item = await dynamodb.get_item(TableName=table, Key={"pk": {"S": "a"}})
            assert item["Item"] == {"pk": {"S": "a"}}
        async with aws_client("s3", proxy.url) as s3:
            body = bytes(range(256)) * 300
            await s3.put_object(Bucket=bucket, Key="dir/obj ject+1", Body=body)
            got = await s3.get_object(Bucket=bucket, Key="dir/obj ject+1")
            async with got["Body"] as stream:
                assert await stream.read() == body
            head = await s3.head_object(Bucket=bucket, Key="dir/obj ject+1")
            assert head["ContentLength"] == len(body)
            listed = await s3.list_objects_v2(Bucket=bucket)
            assert [e["Key"] for e in listed["Contents"]] == ["dir/obj ject+1"]
            with pytest.raises(ClientError) as missing:
                await s3.head_object(Bucket=bucket, Key="nothing")
            assert error_of(missing.value)[1] == 404
    assert proxy.requests == 7
    assert proxy.faulted == 0
    assert proxy.operations["PutItem"] == 1
    assert proxy.operations["S3:HEAD"] == 2


# -- each fault kind ----------------------------------------------------------------------


async def test_reset_before_forwarding_never_reaches_the_emulator(
    emulator_url: str, table: str
) -> None:
    async with (
        FaultProxy(emulator_url, rates={"reset_before": 1.0}) as proxy,
        aws_client("dynamodb", proxy.url) as dynamodb,
    ):
        with pytest.raises(TRANSPORT_ERRORS):
            await put(dynamodb, table, "lost")
    assert not await stored(emulator_url, table, "lost")
    assert proxy.faults == {"reset_before": 1}


async def test_reset_after_forwarding_commits_but_loses_the_response(
    emulator_url: str, table: str
) -> None:
    async with (
        FaultProxy(emulator_url, rates={"reset_after": 1.0}) as proxy,
        aws_client("dynamodb", proxy.url) as dynamodb,
    ):
        with pytest.raises(TRANSPORT_ERRORS):
            await put(dynamodb, table, "landed")
    assert await stored(emulator_url, table, "landed")
    assert proxy.faults == {"reset_after": 1}


async def test_delay_then_forward_lands_after_the_client_gave_up(
    emulator_url: str, table: str
) -> None:
    async with FaultProxy(emulator_url, rates={"delay_forward": 1.0}, delay=2.0) as proxy:
        async with aws_client("dynamodb", proxy.url, read_timeout=0.3) as dynamodb:
            with pytest.raises(ReadTimeoutError):
                await put(dynamodb, table, "late")
        assert not await stored(emulator_url, table, "late")  # still held by the proxy
    # Closing the proxy let the held request finish: it landed after the timeout.
    assert await stored(emulator_url, table, "late")
    assert proxy.faults == {"delay_forward": 1}


async def test_delay_then_drop_never_forwards(emulator_url: str, table: str) -> None:
    async with (
        FaultProxy(emulator_url, rates={"delay_drop": 1.0}, delay=0.6) as proxy,
        aws_client("dynamodb", proxy.url, read_timeout=0.3) as dynamodb,
    ):
        with pytest.raises(ReadTimeoutError):
            await put(dynamodb, table, "dropped")
    assert not await stored(emulator_url, table, "dropped")
    assert proxy.faults == {"delay_drop": 1}


@pytest.mark.parametrize(
    ("kind", "dynamodb_error", "s3_error"),
    [
        ("http_500", ("InternalServerError", 500), ("InternalError", 500)),
        ("http_503", ("ServiceUnavailable", 503), ("ServiceUnavailable", 503)),
    ],
)
async def test_server_errors_are_aws_shaped_and_not_forwarded(
    emulator_url: str,
    table: str,
    bucket: str,
    kind: str,
    dynamodb_error: tuple[str, int],
    s3_error: tuple[str, int],
) -> None:
    async with FaultProxy(emulator_url, rates={kind: 1.0}) as proxy:
        async with aws_client("dynamodb", proxy.url) as dynamodb:
            with pytest.raises(ClientError) as raised:
                await put(dynamodb, table, "refused")
            assert error_of(raised.value) == dynamodb_error
        async with aws_client("s3", proxy.url) as s3:
            with pytest.raises(ClientError) as raised:
                await s3.put_object(Bucket=bucket, Key="refused", Body=b"x")
            assert error_of(raised.value) == s3_error
    assert not await stored(emulator_url, table, "refused")
    assert proxy.faults == {kind: 2}


async def test_throttling_uses_every_dynamodb_code_and_s3_slow_down(
    emulator_url: str, table: str, bucket: str
) -> None:
    codes: set[str] = set()
    async with FaultProxy(emulator_url, rates={"throttle": 1.0}, seed=5) as proxy:
        async with aws_client("dynamodb", proxy.url) as dynamodb:
            for n in range(30):
                with pytest.raises(ClientError) as raised:
                    await put(dynamodb, table, f"t{n}")
                code, status = error_of(raised.value)
                assert status == 400
                codes.add(code)
        async with aws_client("s3", proxy.url) as s3:
            with pytest.raises(ClientError) as raised:
                await s3.put_object(Bucket=bucket, Key="slow", Body=b"x")
            assert error_of(raised.value) == ("SlowDown", 503)
    assert codes == set(DYNAMODB_THROTTLE_CODES)
    assert proxy.faults == {"throttle": 31}


async def test_transaction_conflict_cancels_every_action(emulator_url: str, table: str) -> None:
    items = [{"Put": {"TableName": table, "Item": {"pk": {"S": f"tx{n}"}}}} for n in range(3)]
    async with (
        FaultProxy(emulator_url, rates={"transaction_conflict": 1.0}) as proxy,
        aws_client("dynamodb", proxy.url) as dynamodb,
    ):
        with pytest.raises(ClientError) as raised:
            await dynamodb.transact_write_items(TransactItems=items)
        assert error_of(raised.value) == ("TransactionCanceledException", 400)
        reasons = raised.value.response["CancellationReasons"]
        assert [reason["Code"] for reason in reasons] == ["TransactionConflict"] * 3
        # Only TransactWriteItems can get this fault: other calls pass.
        await put(dynamodb, table, "plain")
    assert not await stored(emulator_url, table, "tx0")
    assert await stored(emulator_url, table, "plain")
    assert proxy.faults == {"transaction_conflict": 1}


async def test_truncated_body_after_the_request_committed(emulator_url: str, table: str) -> None:
    async with (
        FaultProxy(emulator_url, rates={"truncate": 1.0}) as proxy,
        aws_client("dynamodb", proxy.url) as dynamodb,
    ):
        with pytest.raises(TRANSPORT_ERRORS):
            await put(dynamodb, table, "cut")
    assert await stored(emulator_url, table, "cut")
    assert proxy.faults == {"truncate": 1}


async def test_truncated_body_announces_the_full_length(emulator_url: str, bucket: str) -> None:
    """On the wire: the headers promise Content-Length bytes, fewer arrive, then EOF."""
    async with FaultProxy(emulator_url, rates={"truncate": 1.0}) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        async with await anyio.connect_tcp(host, int(port)) as stream:
            request = f"GET /{bucket} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
            await stream.send(request.encode())
            data = b"".join([chunk async for chunk in stream])
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    assert 0 < len(body) < length


# -- replay, counters, log ----------------------------------------------------------------


async def fault_sequence(
    emulator_url: str, table: str, seed: int
) -> tuple[list[tuple[int, str, str]], int]:
    async with (
        FaultProxy(emulator_url, rates=rates_for(0.6), seed=seed, delay=0.2) as proxy,
        aws_client("dynamodb", proxy.url, read_timeout=0.1) as dynamodb,
    ):
        for n in range(40):
            item = {"Put": {"TableName": table, "Item": {"pk": {"S": f"r{n}"}}}}
            with suppress(ClientError, *TRANSPORT_ERRORS):
                await dynamodb.transact_write_items(TransactItems=[item])
    return [(e.number, e.kind, e.detail) for e in proxy.events], proxy.requests


async def test_same_seed_same_fault_sequence(emulator_url: str, table: str) -> None:
    first, first_count = await fault_sequence(emulator_url, table, seed=11)
    again, again_count = await fault_sequence(emulator_url, table, seed=11)
    other, _ = await fault_sequence(emulator_url, table, seed=12)
    # The decision for request n depends on the seed and n only. How many requests a run
    # makes can differ by a client retry (timeouts race), so compare the common prefix.
    common = min(first_count, again_count)
    assert common >= 40
    assert [e for e in first if e[0] <= common] == [e for e in again if e[0] <= common]
    assert first != other
    assert len({kind for _, kind, _ in first}) >= 5, "the sequence mixes several fault kinds"


async def test_faults_are_counted_and_logged_with_the_request_number(
    emulator_url: str, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tests.chaos.proxy")
    # Faults on requests 2 and 3 only, whatever the draw says.
    script = {2: "http_500", 3: "throttle"}
    async with (
        FaultProxy(emulator_url, script=lambda r: script.get(r.number)) as proxy,
        aws_client("dynamodb", proxy.url) as dynamodb,
    ):
        for n in range(4):
            with suppress(ClientError):
                await put(dynamodb, table, f"c{n}")
    assert proxy.requests == 4
    assert proxy.faults == {"http_500": 1, "throttle": 1}
    summary = proxy.summary()
    assert summary["faulted"] == 2 and summary["operations"] == {"PutItem": 4}
    logged = [r.getMessage() for r in caplog.records if r.name == "tests.chaos.proxy"]
    assert logged[0].startswith("request 2 dynamodb PutItem: http_500")
    assert logged[1].startswith("request 3 dynamodb PutItem: throttle")


async def test_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultProxy("http://127.0.0.1:1", rates={"meteor_strike": 0.1})
    with pytest.raises(ValueError, match="sum to at most 1"):
        FaultProxy("http://127.0.0.1:1", rates={"reset_before": 0.6, "reset_after": 0.6})
    assert sum(rates_for(0.08).values()) == pytest.approx(0.08)
    assert set(rates_for(0.08)) == set(FAULT_KINDS)


async def test_request_token_emulation(emulator_url: str, table: str) -> None:
    """DynamoDB's ClientRequestToken: same token and parameters replay the success
    without writing; the same token with other parameters is refused."""

    def params(key: str) -> dict[str, Any]:
        item = {"pk": {"S": key}}
        put_new = {
            "TableName": table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        return {"TransactItems": [{"Put": put_new}], "ClientRequestToken": "token-1"}

    async with (
        FaultProxy(emulator_url, emulate_request_tokens=True) as proxy,
        aws_client("dynamodb", proxy.url) as dynamodb,
    ):
        await dynamodb.transact_write_items(**params("k1"))
        await dynamodb.transact_write_items(**params("k1"))  # replayed, not re-run
        with pytest.raises(ClientError) as raised:
            await dynamodb.transact_write_items(**params("k2"))
    assert error_of(raised.value) == ("IdempotentParameterMismatchException", 400)
    assert (proxy.token_replays, proxy.token_mismatches) == (1, 1)
    assert not await stored(emulator_url, table, "k2")


def test_request_describes_dynamodb_and_s3() -> None:
    dynamodb = ProxyRequest(1, "POST", "/", (("X-Amz-Target", "DynamoDB_20120810.Query"),), b"")
    s3 = ProxyRequest(2, "PUT", "/bucket/key", (("Host", "x"),), b"data")
    assert (dynamodb.service, dynamodb.operation) == ("dynamodb", "Query")
    assert (s3.service, s3.operation) == ("s3", "S3:PUT")
    assert s3.header("host") == "x"


async def test_command_line(emulator_url: str, table: str) -> None:
    command = [sys.executable, "-m", "tests.chaos.proxy", "--upstream", emulator_url]
    command += ["--seed", "3", "--rates", "http_500=1.0"]
    async with await anyio.open_process(command) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            line = b""
            with anyio.fail_after(20):
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive(1)
            url = line.decode().strip()
            async with aws_client("dynamodb", url) as dynamodb:
                with pytest.raises(ClientError) as raised:
                    await put(dynamodb, table, "cli")
            assert error_of(raised.value) == ("InternalServerError", 500)
        finally:
            process.terminate()
            with anyio.fail_after(20):
                await process.wait()
        errors = b"".join([chunk async for chunk in process.stderr]).decode()
    assert process.returncode == 0, errors
    assert "request 1 dynamodb PutItem: http_500" in errors
    summary = json.loads(errors[errors.index("{") :])
    assert summary["faults"] == {"http_500": 1}
