"""``--data-dir`` compaction: a snapshot of the state and an empty journal, crash-safe."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from botocore.exceptions import ClientError

from eventstore_async import EventStore, StoreConfig
from eventstore_async.emulator import Emulator, _moto_state
from eventstore_async.emulator._datadir import DataDir
from eventstore_async.emulator._journal import JOURNAL_NAME, DataDirError, Record
from eventstore_async.emulator._moto_patches import TESTED_MOTO_VERSIONS
from eventstore_async.emulator._process import emulator_command
from eventstore_async.emulator._snapshot import SNAPSHOT_NAME
from eventstore_async.emulator._state import EmulatorState

HERE = Path(__file__).resolve().parent
FORMAT_1_DIR = HERE / "golden" / "emulator-data-dir-v1"
CREDENTIALS = {"aws_access_key_id": "t", "aws_secret_access_key": "t"}
TOKEN = "compaction-request-token"


def config_for(url: str, name: str) -> StoreConfig:
    return StoreConfig(
        endpoint_url=url,
        region_name="us-east-1",
        table_name=name,
        bucket_name=name,
        offload_threshold_bytes=4096,
        **CREDENTIALS,
    )


def dynamodb(url: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", **CREDENTIALS)


def counter_increment(table: str, by: int = 1) -> dict[str, Any]:
    update = {
        "TableName": table,
        "Key": {"pk": {"S": "counter"}, "sk": {"N": "0"}},
        "UpdateExpression": "ADD n :one",
        "ExpressionAttributeValues": {":one": {"N": str(by)}},
    }
    return {"TransactItems": [{"Update": update}], "ClientRequestToken": TOKEN}


def header(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        loaded: dict[str, Any] = json.loads(file.readline())
        return loaded


def journal_is_empty(directory: Path) -> bool:
    journal = directory / JOURNAL_NAME
    return journal.stat().st_size == len(journal.read_bytes().split(b"\n", 1)[0]) + 1


async def append_batch(store: EventStore, written: dict[str, list[Any]], batch: str) -> None:
    for n in range(6):
        aggregate = f"agg-{n % 3}"
        events = [{"batch": batch, "n": n, "pad": "x" * (6000 if n % 4 == 0 else 10)}]
        await store.append(aggregate, events, expected_version=len(written.get(aggregate, [])))
        written.setdefault(aggregate, []).append(events)


async def assert_events(url: str, name: str, written: dict[str, list[Any]]) -> None:
    async with EventStore(config_for(url, name)) as store:
        for aggregate, change_sets in written.items():
            history = await store.load(aggregate)
            assert [list(cs.events) for cs in history.change_sets] == change_sets


async def assert_holds(url: str, name: str, written: dict[str, list[Any]]) -> None:
    """Every change set, and the request token's memory (a replay, then a mismatch)."""
    await assert_events(url, name, written)
    client = dynamodb(url)
    client.transact_write_items(**counter_increment(name))  # a known token: not applied again
    item = client.get_item(TableName=name, Key={"pk": {"S": "counter"}, "sk": {"N": "0"}})
    assert item["Item"]["n"] == {"N": "1"}
    with pytest.raises(ClientError) as excinfo:
        client.transact_write_items(**counter_increment(name, by=2))
    assert excinfo.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"


Source = tuple[Path, str, dict[str, list[Any]]]


async def write_source(directory: Path, name: str, written: dict[str, list[Any]]) -> None:
    async with (
        Emulator(data_dir=directory) as emu,
        EventStore(config_for(emu.endpoint_url, name)) as store,
    ):
        await store.create_schema()
        await append_batch(store, written, "a")
        dynamodb(emu.endpoint_url).transact_write_items(**counter_increment(name))
    async with (
        Emulator(data_dir=directory) as emu,
        EventStore(config_for(emu.endpoint_url, name)) as store,
    ):
        await append_batch(store, written, "b")  # on top of the snapshot of batch a


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A data dir with a snapshot (generation 1) and a journal of writes after it."""
    directory = tmp_path_factory.mktemp("source")
    name = f"es-compact-{uuid.uuid4().hex[:8]}"
    written: dict[str, list[Any]] = {}
    anyio.run(write_source, directory, name, written)
    assert header(directory / SNAPSHOT_NAME)["generation"] == 1
    assert header(directory / JOURNAL_NAME)["snapshot"] == 1
    assert not journal_is_empty(directory)
    return directory, name, written


@pytest.mark.anyio
async def test_start_up_compacts_and_the_snapshot_holds_everything(
    source: Source, tmp_path: Path
) -> None:
    origin, name, written = source
    directory = tmp_path / "data"
    shutil.copytree(origin, directory)
    async with Emulator(data_dir=directory) as emu:
        said = emu.stderr_tail()
        assert "snapshot generation 1 and " in said
        assert "compacted into snapshot generation 2" in said
        assert journal_is_empty(directory)
        await assert_events(emu.endpoint_url, name, written)  # reads only: nothing journaled
    async with Emulator(data_dir=directory) as emu:  # from the snapshot alone
        said = emu.stderr_tail()
        assert "snapshot generation 2 and 0 journaled requests" in said
        assert "compacted" not in said
        await assert_holds(emu.endpoint_url, name, written)


@pytest.mark.anyio
async def test_create_schema_again_on_a_restored_state_keeps_every_object(
    source: Source, tmp_path: Path
) -> None:
    """``create_schema`` is idempotent on a state restored from a snapshot, and when its
    journaled ``CreateBucket`` is replayed on top of one: the bucket keeps its objects."""
    origin, name, written = source
    directory = tmp_path / "data"
    shutil.copytree(origin, directory)
    async with Emulator(data_dir=directory) as emu:  # restored from generation 1
        async with EventStore(config_for(emu.endpoint_url, name)) as store:
            await store.create_schema()
        await assert_events(emu.endpoint_url, name, written)
    async with Emulator(data_dir=directory) as emu:  # the CreateBucket replayed on gen 2
        await assert_events(emu.endpoint_url, name, written)
        async with EventStore(config_for(emu.endpoint_url, name)) as store:
            await store.create_schema()
        await assert_events(emu.endpoint_url, name, written)


STEPS = [
    f"{name}-{when}" for name in ("snapshot", "journal") for when in ("torn", "written", "renamed")
]


@pytest.mark.anyio
@pytest.mark.parametrize("step", STEPS)
async def test_a_crash_at_any_step_of_a_compaction_loses_nothing(
    source: Source, tmp_path: Path, step: str
) -> None:
    origin, name, written = source
    directory = tmp_path / "data"
    shutil.copytree(origin, directory)
    with anyio.fail_after(120):
        crashed = await anyio.run_process(
            [sys.executable, str(HERE / "compaction_crash.py"), str(directory), step], check=False
        )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    async with Emulator(data_dir=directory) as emu:
        assert sorted(p.name for p in directory.iterdir()) == [JOURNAL_NAME, SNAPSHOT_NAME]
        assert journal_is_empty(directory)
        await assert_holds(emu.endpoint_url, name, written)


@pytest.mark.anyio
async def test_a_running_emulator_compacts_past_the_size_and_survives_sigkill(
    tmp_path: Path,
) -> None:
    name = f"es-compact-{uuid.uuid4().hex[:8]}"
    written: dict[str, list[Any]] = {}
    emu = Emulator(data_dir=tmp_path, compact_journal_bytes=20_000)
    async with emu, EventStore(config_for(emu.endpoint_url, name)) as store:
        await store.create_schema()
        dynamodb(emu.endpoint_url).transact_write_items(**counter_increment(name))
        for batch in "abcd":
            await append_batch(store, written, batch)
        generation = header(tmp_path / SNAPSHOT_NAME)["generation"]
        assert generation >= 2  # compacted while serving, more than once
        assert (tmp_path / JOURNAL_NAME).stat().st_size < 20_000 + 10_000
        await append_batch(store, written, "e")
        assert emu.pid is not None
        os.kill(emu.pid, signal.SIGKILL)  # right after the last acknowledgement
    async with Emulator(data_dir=tmp_path) as emu:
        await assert_holds(emu.endpoint_url, name, written)


@pytest.mark.anyio
async def test_a_format_1_data_dir_opens_and_is_compacted(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    shutil.copytree(FORMAT_1_DIR, directory)  # written by the emulator before snapshots
    assert header(directory / JOURNAL_NAME)["version"] == 1
    async with (
        Emulator(data_dir=directory) as emu,
        EventStore(config_for(emu.endpoint_url, "v1-events")) as store,
    ):
        first = await store.load("order-1")
        assert [list(cs.events) for cs in first.change_sets] == [
            [{"placed": 1}],
            [{"paid": 2, "pad": "p" * 6000}],  # offloaded to S3
        ]
        second = await store.load("order-2")
        assert [list(cs.events) for cs in second.change_sets] == [[{"placed": 3}]]
    assert header(directory / JOURNAL_NAME)["version"] == 2
    assert header(directory / JOURNAL_NAME)["snapshot"] == 1
    assert header(directory / SNAPSHOT_NAME)["generation"] == 1


def refusal(directory: Path) -> subprocess.CompletedProcess[bytes]:
    """Start the server on ``directory``; it must refuse (it is killed otherwise)."""
    return subprocess.run(
        emulator_command(data_dir=directory), capture_output=True, timeout=60, check=False
    )


def contents(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def damage_body(directory: Path) -> None:
    snapshot = directory / SNAPSHOT_NAME
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))


def truncate_snapshot(directory: Path) -> None:
    snapshot = directory / SNAPSHOT_NAME
    snapshot.write_bytes(snapshot.read_bytes()[:-100])


def rewrite_snapshot_header(**changes: Any) -> Any:
    def rewrite(directory: Path) -> None:
        snapshot = directory / SNAPSHOT_NAME
        first, rest = snapshot.read_bytes().split(b"\n", 1)
        snapshot.write_bytes(json.dumps({**json.loads(first), **changes}).encode() + b"\n" + rest)

    return rewrite


def remove_snapshot(directory: Path) -> None:
    (directory / SNAPSHOT_NAME).unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (damage_body, b"is damaged"),
        (truncate_snapshot, b"is damaged"),
        (rewrite_snapshot_header(version=99), b"snapshot format 99"),
        (rewrite_snapshot_header(moto="4.0.0"), b"moto 4.0.0"),
        (rewrite_snapshot_header(generation=5), b"do not belong together"),
        (remove_snapshot, b"do not belong together"),
    ],
)
def test_a_damaged_or_foreign_snapshot_is_refused_and_left_alone(
    source: Source, tmp_path: Path, damage: Any, message: bytes
) -> None:
    directory = tmp_path / "data"
    shutil.copytree(source[0], directory)
    damage(directory)
    before = contents(directory)
    done = refusal(directory)
    assert done.returncode == 2, done.stderr.decode()
    assert done.stdout == b""
    assert message in done.stderr
    assert contents(directory) == before


# -- the data dir's steps, in-process, with an injected disk failure ---------------------

MOTO = TESTED_MOTO_VERSIONS[0]


def record(n: int) -> Record:
    return Record(at=float(n), environ={"N": str(n)}, body=b"r" * n)


def fail_on_replace(monkeypatch: pytest.MonkeyPatch, file_name: str) -> None:
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if os.fspath(src).endswith(file_name):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_a_failed_snapshot_rename_keeps_the_journal_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = DataDir(tmp_path, MOTO)
    data_dir.append(record(1))
    fail_on_replace(monkeypatch, "snapshot.tmp")
    with pytest.raises(OSError, match="No space"):
        data_dir.compact(b"state after 1")
    data_dir.append(record(2))  # still journaled, and still replayed
    data_dir.close()
    monkeypatch.undo()
    reopened = DataDir(tmp_path, MOTO)
    try:
        assert reopened.generation == 0
        assert reopened.snapshot_body() is None
        assert list(reopened.records()) == [record(1), record(2)]
        assert not (tmp_path / "snapshot.tmp").exists()
    finally:
        reopened.close()


def test_a_failed_journal_rename_refuses_appends_and_the_snapshot_holds_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = DataDir(tmp_path, MOTO)
    data_dir.append(record(1))
    fail_on_replace(monkeypatch, "journal.tmp")
    with pytest.raises(OSError, match="No space"):
        data_dir.compact(b"state after 1")
    with pytest.raises(DataDirError, match="compaction failed half-way"):
        data_dir.append(record(2))  # it would follow the old snapshot: never acknowledged
    data_dir.close()
    monkeypatch.undo()
    reopened = DataDir(tmp_path, MOTO)
    try:
        assert reopened.generation == 1
        assert reopened.snapshot_body() == b"state after 1"
        assert reopened.journal_included
        assert list(reopened.records()) == []  # already in the snapshot
        reopened.start_new_journal()
        reopened.append(record(3))
    finally:
        reopened.close()
    again = DataDir(tmp_path, MOTO)
    try:
        assert (again.generation, again.journal.snapshot) == (1, 1)
        assert list(again.records()) == [record(3)]
    finally:
        again.close()


def test_a_compaction_that_cannot_capture_the_state_waits_for_more_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    captures: list[int] = []

    def capture(tokens: Any) -> bytes:
        captures.append(state_dir.journal.size)
        raise _moto_state.StateNotCaptured("moto's state cannot be snapshotted: test")

    monkeypatch.setattr(_moto_state, "capture", capture)
    state_dir = DataDir(tmp_path, MOTO)
    state = EmulatorState(state_dir, compact_bytes=1000)
    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": "/bucket/key"}
    sizes = []
    try:
        while len(captures) < 2:
            state.served(environ, b"x" * 300, 200, b"")  # an S3 PUT: journaled
            sizes.append(state_dir.journal.size)
    finally:
        state_dir.close()
    first, second = captures
    assert first > 1000 >= sizes[sizes.index(first) - 1]  # as soon as it passed the size
    assert second > first + 1000 >= sizes[-2]  # not before another 1000 bytes
    assert "keeping the journal" in capsys.readouterr().err
    assert not (tmp_path / SNAPSHOT_NAME).exists()
