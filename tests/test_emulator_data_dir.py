"""``--data-dir``: the emulator keeps its state across restarts, SIGKILL included."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from eventstore_async import EventStore, StoreConfig
from eventstore_async.emulator import Emulator
from eventstore_async.emulator._datadir import DataDir
from eventstore_async.emulator._journal import (
    FORMAT_NAME,
    JOURNAL_NAME,
    DataDirError,
    Journal,
    Record,
)
from eventstore_async.emulator._moto_patches import TESTED_MOTO_VERSIONS
from eventstore_async.emulator._process import emulator_command

CREDENTIALS = {"aws_access_key_id": "t", "aws_secret_access_key": "t"}
MIB = 1024 * 1024


def config_for(url: str, token: str) -> StoreConfig:
    return StoreConfig(
        endpoint_url=url,
        region_name="us-east-1",
        table_name=f"es-dd-{token}",
        bucket_name=f"es-dd-{token}",
        offload_threshold_bytes=4096,
        **CREDENTIALS,
    )


def dynamodb(url: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", **CREDENTIALS)


def counter_increment(table: str, by: int = 1) -> list[dict[str, Any]]:
    return [
        {
            "Update": {
                "TableName": table,
                "Key": {"pk": {"S": "counter"}, "sk": {"N": "0"}},
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": str(by)}},
            }
        }
    ]


@pytest.mark.anyio
async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:8]
    acknowledged: dict[str, list[Any]] = {}
    request_token = uuid.uuid4().hex
    async with Emulator(data_dir=tmp_path) as emu:
        config = config_for(emu.endpoint_url, token)
        async with EventStore(config) as store:
            await store.create_schema()
            for n in range(24):
                aggregate = f"agg-{n % 3}"
                events = [{"n": n, "pad": "x" * (8000 if n % 7 == 0 else 10)}]  # some to S3
                version = len(acknowledged.get(aggregate, []))
                await store.append(aggregate, events, expected_version=version)
                acknowledged.setdefault(aggregate, []).append(events)
            big = [{"blob": "y" * (6 * MIB)}]  # a multipart upload (5 MiB parts)
            await store.append("big", big, expected_version=0)
            acknowledged["big"] = [big]
        dynamodb(emu.endpoint_url).transact_write_items(
            TransactItems=counter_increment(config.table_name), ClientRequestToken=request_token
        )
        assert emu.pid is not None
        os.kill(emu.pid, signal.SIGKILL)  # right after the last acknowledgement

    async with Emulator(data_dir=tmp_path) as emu:
        config = config_for(emu.endpoint_url, token)
        async with EventStore(config) as store:
            for aggregate, change_sets in acknowledged.items():
                history = await store.load(aggregate)
                assert [list(cs.events) for cs in history.change_sets] == change_sets
        client = dynamodb(emu.endpoint_url)
        # the token is still known (ten minutes from the original request): not applied again
        client.transact_write_items(
            TransactItems=counter_increment(config.table_name), ClientRequestToken=request_token
        )
        item = client.get_item(
            TableName=config.table_name, Key={"pk": {"S": "counter"}, "sk": {"N": "0"}}
        )
        assert item["Item"]["n"] == {"N": "1"}
        with pytest.raises(ClientError) as excinfo:
            client.transact_write_items(
                TransactItems=counter_increment(config.table_name, by=2),
                ClientRequestToken=request_token,
            )
        assert excinfo.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"


@pytest.mark.anyio
async def test_a_torn_last_record_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:8]
    async with (
        Emulator(data_dir=tmp_path) as emu,
        EventStore(config_for(emu.endpoint_url, token)) as store,
    ):
        await store.create_schema()
        await store.append("a", [{"n": 1}], expected_version=0)
    journal = tmp_path / JOURNAL_NAME
    with journal.open("ab") as file:
        file.write(b"\x00\x00\x10\x00torn")  # a frame announcing 4 KiB, cut short
    async with (
        Emulator(data_dir=tmp_path) as emu,
        EventStore(config_for(emu.endpoint_url, token)) as store,
    ):
        assert [cs.version for cs in (await store.load("a")).change_sets] == [1]
        await store.append("a", [{"n": 2}], expected_version=1)  # on the compacted dir
    async with (
        Emulator(data_dir=tmp_path) as emu,
        EventStore(config_for(emu.endpoint_url, token)) as store,
    ):
        assert [cs.version for cs in (await store.load("a")).change_sets] == [1, 2]


def test_the_journal_truncates_a_torn_tail_and_keeps_the_records_before(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = Journal(path, TESTED_MOTO_VERSIONS[0])
    records = [Record(at=float(n), environ={"N": str(n)}, body=b"x" * n) for n in range(3)]
    for record in records:
        journal.append(record)
    whole = path.stat().st_size
    assert journal.size == whole
    journal.close()
    with path.open("ab") as file:
        file.write(b"\x00\x00\x10\x00torn")  # a frame announcing 4 KiB, cut short
    journal = Journal(path, TESTED_MOTO_VERSIONS[0])
    try:
        assert list(journal.records()) == records
        assert journal.size == whole == path.stat().st_size
    finally:
        journal.close()


def journal_of_three(path: Path) -> tuple[list[Record], list[int]]:
    """A journal of three records at ``path``; the records and where each starts."""
    journal = Journal(path, TESTED_MOTO_VERSIONS[0])
    records = [Record(at=float(n), environ={"N": str(n)}, body=b"x" * 40) for n in range(3)]
    starts = []
    for record in records:
        starts.append(journal.size)
        journal.append(record)
    journal.close()
    return records, starts


def damage(path: Path, at: int) -> bytes:
    """Flip one byte at offset ``at``; the file's bytes after it."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("payload_byte", [12, 20])  # in the msgpack body of the 2nd record
def test_a_damaged_record_before_others_is_refused_not_truncated(
    tmp_path: Path, payload_byte: int
) -> None:
    path = tmp_path / JOURNAL_NAME
    _, starts = journal_of_three(path)
    damaged = damage(path, starts[1] + payload_byte)
    journal = Journal(path, TESTED_MOTO_VERSIONS[0])
    try:
        with pytest.raises(DataDirError, match=f"record at byte {starts[1]} is damaged"):
            list(journal.records())
    finally:
        journal.close()
    assert path.read_bytes() == damaged  # the acknowledged records after it are kept


def test_a_damaged_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    records, starts = journal_of_three(path)
    damage(path, starts[2] + 12)
    journal = Journal(path, TESTED_MOTO_VERSIONS[0])
    try:
        assert list(journal.records()) == records[:2]
        assert path.stat().st_size == starts[2]
    finally:
        journal.close()


def test_a_record_that_does_not_decode_is_refused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal_of_three(path)
    with path.open("ab") as file:
        garbage = b"\xc1 not msgpack"
        file.write(struct.pack(">II", len(garbage), zlib.crc32(garbage)) + garbage)
    before = path.read_bytes()
    journal = Journal(path, TESTED_MOTO_VERSIONS[0])
    try:
        with pytest.raises(DataDirError, match="checksum holds but it does not decode"):
            list(journal.records())
    finally:
        journal.close()
    assert path.read_bytes() == before


def test_the_server_refuses_a_damaged_journal_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    _, starts = journal_of_three(path)
    damaged = damage(path, starts[0] + 12)
    done = run_server(tmp_path)
    assert done.returncode == 2
    assert b"is damaged" in done.stderr
    assert path.read_bytes() == damaged


@pytest.mark.anyio
async def test_a_reset_empties_the_data_dir(tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:8]
    async with Emulator(data_dir=tmp_path) as emu:
        async with EventStore(config_for(emu.endpoint_url, token)) as store:
            await store.create_schema()
        await emu.reset()
    async with Emulator(data_dir=tmp_path) as emu:
        assert dynamodb(emu.endpoint_url).list_tables()["TableNames"] == []


def run_server(data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    """Start the server on ``data_dir``; it must refuse (it is killed otherwise)."""
    return subprocess.run(
        emulator_command(data_dir=data_dir), capture_output=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("first_line", "message"),
    [
        (json.dumps({"format": FORMAT_NAME, "version": 99, "moto": "5.2.5"}), b"format 99"),
        (json.dumps({"format": FORMAT_NAME, "version": 1, "moto": "4.0.0"}), b"moto 4.0.0"),
        ("some other file", b"is not an emulator journal"),
    ],
)
def test_an_incompatible_data_dir_is_refused_and_left_alone(
    tmp_path: Path, first_line: str, message: bytes
) -> None:
    journal = tmp_path / JOURNAL_NAME
    journal.write_bytes(first_line.encode() + b"\nrest of it")
    done = run_server(tmp_path)
    assert done.returncode == 2
    assert done.stdout == b""
    assert message in done.stderr
    assert journal.read_bytes() == first_line.encode() + b"\nrest of it"


def test_a_data_dir_in_use_is_refused(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path, TESTED_MOTO_VERSIONS[0])  # what a running emulator holds
    try:
        done = run_server(tmp_path)
    finally:
        data_dir.close()
    assert done.returncode == 2
    assert b"in use by another emulator" in done.stderr


def test_the_command_line_passes_the_data_dir(tmp_path: Path) -> None:
    command = emulator_command(data_dir=tmp_path)
    assert command[-2:] == ["--data-dir", str(tmp_path)]
    assert command[:3] == [sys.executable, "-m", "eventstore_async.emulator"]
