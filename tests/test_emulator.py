"""The embedded emulator: CLI contract, the Emulator context manager, and atomicity."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aioboto3
import anyio
import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from eventstore_async._backends.aws.dynamodb import TABLE_KEYS
from eventstore_async.emulator import Emulator, run_emulator

REPO_ROOT = Path(__file__).resolve().parents[1]
URL_RE = re.compile(r"^http://127\.0\.0\.1:(\d+)$")
CREDENTIALS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "test",
    "aws_secret_access_key": "test",
}
# No client-side retries: an HTTP 500 from the emulator must surface, not be retried away.
# Full-jitter backoff for the contended counter (tuned: ~8 s for 200 increments).
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
NO_RETRY = AioConfig(retries={"total_max_attempts": 1}, max_pool_connections=64)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _http_get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _tracked_instances(endpoint_url: str) -> int:
    """How many model instances moto's dashboard lists (its instances_tracked lists)."""
    data = _http_get_json(endpoint_url + "/moto-api/data.json")
    return sum(len(instances) for models in data.values() for instances in models.values())


def _process_gone(pid: int) -> bool:
    """True once the pid is reaped: a zombie still accepts signal 0."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def cli() -> Iterator[subprocess.Popen[bytes]]:
    with subprocess.Popen(
        [sys.executable, "-m", "eventstore_async.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    ) as proc:  # __exit__ closes the pipes and reaps the process
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


# --- the command line ---------------------------------------------------------------


def test_importing_the_package_does_not_import_moto() -> None:
    code = (
        "import sys, eventstore_async.emulator as e; "
        "assert e.Emulator and 'moto' not in sys.modules and 'werkzeug' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_url_first_and_exits_cleanly_on_signal(
    cli: subprocess.Popen[bytes], signum: signal.Signals
) -> None:
    assert cli.stdout is not None
    started = time.perf_counter()
    first_line = cli.stdout.readline().decode()
    ready_after = time.perf_counter() - started
    url = first_line.rstrip("\n")
    assert first_line.endswith("\n")
    assert URL_RE.match(url), first_line
    assert _tracked_instances(url) == 0  # serves HTTP right after printing the URL
    print(f"CLI printed its URL after {ready_after:.2f}s")

    cli.send_signal(signum)
    stdout, stderr = cli.communicate(timeout=15)
    assert cli.returncode == 0, stderr.decode()
    assert stdout == b"", "stdout must hold the URL line only"
    assert b"Traceback" not in stderr
    assert stderr == b"", "quiet by default"


@pytest.mark.timeout(180)
def test_cli_stops_on_stdin_eof_when_asked() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "eventstore_async.emulator", "--stop-on-stdin-eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert URL_RE.match(proc.stdout.readline().decode().strip())
            # communicate() closes stdin: what the OS does when the parent dies.
            _, stderr = proc.communicate(timeout=15)
            assert proc.returncode == 0, stderr.decode()
        finally:
            if proc.poll() is None:
                proc.kill()


# --- the Emulator context manager ---------------------------------------------------


@pytest.mark.anyio
async def test_emulator_serves_dynamodb_and_s3() -> None:
    started = time.perf_counter()
    async with Emulator() as emu:
        print(f"Emulator ready after {time.perf_counter() - started:.2f}s")
        assert URL_RE.match(emu.endpoint_url)
        pid = emu.pid
        assert pid is not None
        session = aioboto3.Session()
        async with (
            session.client("dynamodb", endpoint_url=emu.endpoint_url, **CREDENTIALS) as ddb,
            session.client("s3", endpoint_url=emu.endpoint_url, **CREDENTIALS) as s3,
        ):
            await _create_table(ddb, "events")
            await ddb.put_item(
                TableName="events", Item={"pk": {"S": "a"}, "sk": {"N": "0"}, "v": {"N": "7"}}
            )
            got = await ddb.get_item(
                TableName="events", Key={"pk": {"S": "a"}, "sk": {"N": "0"}}, ConsistentRead=True
            )
            assert got["Item"]["v"] == {"N": "7"}

            await s3.create_bucket(Bucket="changesets")
            await s3.put_object(Bucket="changesets", Key="a/1", Body=b"payload" * 1000)
            obj = await s3.get_object(Bucket="changesets", Key="a/1")
            async with obj["Body"] as body:
                assert await body.read() == b"payload" * 1000
            with pytest.raises(ClientError) as excinfo:  # conditional put, as the store uses it
                await s3.put_object(Bucket="changesets", Key="a/1", Body=b"x", IfNoneMatch="*")
            assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412

            # Model tracking is off: moto's dashboard sees no instances at all.
            assert await anyio.to_thread.run_sync(_tracked_instances, emu.endpoint_url) == 0

            await emu.reset()
            assert (await ddb.list_tables())["TableNames"] == []
            assert (await s3.list_buckets())["Buckets"] == []
        assert emu.stderr_tail() == "", "quiet by default"
    assert _process_gone(pid)
    with pytest.raises(RuntimeError):
        _ = emu.endpoint_url


@pytest.mark.anyio
async def test_emulator_stops_when_the_block_is_cancelled() -> None:
    pid = None
    with anyio.CancelScope() as scope:
        async with Emulator() as emu:
            pid = emu.pid
            scope.cancel()
            await anyio.sleep(30)  # cancelled at once; __aexit__ must still stop the server
    assert scope.cancelled_caught
    assert pid is not None and _process_gone(pid)


@pytest.mark.anyio
async def test_emulator_startup_failure_reports_stderr() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=r"(?s)failed to start.*in use"):
            async with Emulator(port=port):
                pass  # pragma: no cover


def test_run_emulator_sync() -> None:
    with run_emulator() as url:
        assert URL_RE.match(url)
        assert _tracked_instances(url) == 0
        # One Server header only: aiohttp in dev mode rejects moto's duplicate one.
        request = urllib.request.Request(
            url,
            data=b"{}",
            headers={
                "X-Amz-Target": "DynamoDB_20120810.ListTables",
                "Content-Type": "application/x-amz-json-1.0",
                "Authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/"
                "dynamodb/aws4_request, SignedHeaders=host, Signature=0",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response) == {"TableNames": []}
            assert len(response.headers.get_all("Server")) == 1
            assert len(response.headers.get_all("Date")) == 1
    port = int(URL_RE.match(url).group(1))  # type: ignore[union-attr]
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


# --- atomicity under concurrency ----------------------------------------------------


async def _create_table(ddb: Any, name: str) -> None:
    await ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **TABLE_KEYS)


async def _increment_workload(
    endpoint_url: str, *, tasks: int, increments: int
) -> tuple[int, int, list[int], int]:
    """``tasks`` writers each do conditional increments of one counter until ``increments``
    have been acknowledged in total. Returns (acknowledged, counter, sks, cancelled)."""
    table = "counter"
    head_key = {"pk": {"S": "c"}, "sk": {"N": "0"}}
    session = aioboto3.Session()
    acknowledged = 0
    cancelled = 0
    tickets = increments
    async with session.client(
        "dynamodb", endpoint_url=endpoint_url, config=NO_RETRY, **CREDENTIALS
    ) as ddb:
        await _create_table(ddb, table)
        await ddb.put_item(TableName=table, Item={**head_key, "v": {"N": "0"}})

        async def writer() -> None:
            nonlocal acknowledged, cancelled, tickets
            while tickets > 0:
                tickets -= 1
                attempt = 0
                while True:
                    head = await ddb.get_item(TableName=table, Key=head_key, ConsistentRead=True)
                    old = int(head["Item"]["v"]["N"])
                    new = old + 1
                    try:
                        await ddb.transact_write_items(
                            TransactItems=[
                                {
                                    "Update": {
                                        "TableName": table,
                                        "Key": head_key,
                                        "UpdateExpression": "SET v = :new",
                                        "ConditionExpression": "v = :old",
                                        "ExpressionAttributeValues": {
                                            ":new": {"N": str(new)},
                                            ":old": {"N": str(old)},
                                        },
                                    }
                                },
                                {
                                    "Put": {
                                        "TableName": table,
                                        "Item": {"pk": {"S": "c"}, "sk": {"N": str(new)}},
                                        "ConditionExpression": "attribute_not_exists(pk)",
                                    }
                                },
                            ]
                        )
                    except ClientError as exc:
                        if exc.response["Error"]["Code"] != "TransactionCanceledException":
                            raise
                        cancelled += 1
                        attempt += 1
                        await anyio.sleep(
                            random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
                        )
                        continue
                    acknowledged += 1
                    break

        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(writer)

        head = await ddb.get_item(TableName=table, Key=head_key, ConsistentRead=True)
        sks: list[int] = []
        paginator = ddb.get_paginator("query")
        async for page in paginator.paginate(
            TableName=table,
            KeyConditionExpression="pk = :pk AND sk > :zero",
            ExpressionAttributeValues={":pk": {"S": "c"}, ":zero": {"N": "0"}},
            ConsistentRead=True,
        ):
            sks.extend(int(item["sk"]["N"]) for item in page["Items"])
    return acknowledged, int(head["Item"]["v"]["N"]), sks, cancelled


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_concurrent_transactions_are_atomic() -> None:
    increments = 200
    async with Emulator() as emu:
        started = time.perf_counter()
        acknowledged, counter, sks, cancelled = await _increment_workload(
            emu.endpoint_url, tasks=32, increments=increments
        )
        elapsed = time.perf_counter() - started
        print(f"{acknowledged} increments, {cancelled} cancelled, in {elapsed:.1f}s")
        assert emu.stderr_tail() == ""  # no request failed inside the server
    assert acknowledged == increments
    assert counter == acknowledged
    assert sks == list(range(1, increments + 1))  # no lost write, no gap
