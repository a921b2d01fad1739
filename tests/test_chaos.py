"""The chaos run at small scale, the checker's own teeth, and bugs the chaos run found.

``make chaos`` runs the same code with 10,000+ appends (see ``tests/chaos/run.py``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import msgspec
import pytest

from eventstore_async import (
    CommitOutcomeUnknownError,
    EventStore,
    StorageUnavailableError,
    StoreConfig,
)
from eventstore_async._backends.aws.dynamodb import TABLE_KEYS
from eventstore_async._records import schema_partition
from tests.chaos.checker import Expectations, Shard, check
from tests.chaos.proxy import FaultProxy, ProxyRequest
from tests.chaos.run import ChaosOptions, render, run_chaos, summarize

CREDENTIALS = {"aws_access_key_id": "chaos", "aws_secret_access_key": "chaos-secret"}


@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_short_chaos_run_finds_no_violation() -> None:
    # botocore's default 4 attempts per request (make chaos uses 2, which exposes the
    # landed-but-reported-failed bug pinned below in about 1 append in 1,500).
    options = ChaosOptions(
        processes=2,
        tasks=4,
        attempts=38,
        shards=4,
        aggregates=3,
        rate=0.10,
        seed=7,
        max_attempts=4,
    )
    result = await run_chaos(options)
    summary = summarize(result)
    print(render(summary))
    assert summary["violations"] == []
    snapshot_steps = sum(summary["snapshot_steps"].values())
    assert summary["appends_attempted"] + snapshot_steps == 2 * 4 * 38
    assert snapshot_steps > 0, "no writer saved a snapshot"
    assert summary["stored"]["sweeper_rounds"] > 0, "the sweeper did not run"
    assert summary["acknowledged"] > 200
    assert summary["conflicts"] > 0, "the writers never raced"
    assert summary["proxy_fault_percent"] >= 5.0
    assert len(summary["proxy_faults"]) >= 6, summary["proxy_faults"]
    for stderr in result.writer_stderr:
        assert "Traceback" not in stderr and "nclosed" not in stderr, stderr[-2000:]
        assert "never awaited" not in stderr, stderr[-2000:]


# -- the checker catches what it should -----------------------------------------------------


def _key(aggregate: str, version: int) -> dict[str, Any]:
    return {"pk": {"S": aggregate}, "sk": {"N": str(version)}}


def _change_set(aggregate: str, version: int, commit: str, events: int = 1) -> dict[str, Any]:
    payload = b"\x01" + msgspec.msgpack.encode([[None, {"n": n}] for n in range(events)])
    return {
        **_key(aggregate, version),
        "commit_id": {"S": commit},
        "ts_us": {"N": "1"},
        "event_count": {"N": str(events)},
        "payload": {"B": payload},
    }


def _head(aggregate: str, version: int, commit: str, events: int) -> dict[str, Any]:
    return {
        **_key(aggregate, 0),
        "version": {"N": str(version)},
        "commit_id": {"S": commit},
        "event_count": {"N": str(events)},
        "created_us": {"N": "1"},
        "updated_us": {"N": "1"},
    }


@pytest.fixture
def shard(emulator_url: str) -> Iterator[tuple[Shard, Any, Any]]:
    """A table holding a correct history a@1..2 and its (empty) bucket."""
    name = f"checker-{uuid.uuid4().hex[:12]}"
    dynamodb = boto3.client(
        "dynamodb", endpoint_url=emulator_url, region_name="us-east-1", **_keys()
    )
    s3 = boto3.client("s3", endpoint_url=emulator_url, region_name="us-east-1", **_keys())
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **TABLE_KEYS)
    s3.create_bucket(Bucket=name)
    for item in (_change_set("a", 1, "c1"), _change_set("a", 2, "c2", 2), _head("a", 2, "c2", 3)):
        dynamodb.put_item(TableName=name, Item=item)
    try:
        yield Shard(table=name, bucket=name), dynamodb, s3
    finally:
        dynamodb.delete_table(TableName=name)
        for entry in s3.list_objects_v2(Bucket=name).get("Contents", []):
            s3.delete_object(Bucket=name, Key=entry["Key"])
        s3.delete_bucket(Bucket=name)
        dynamodb.close()
        s3.close()


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "checker", "aws_secret_access_key": "checker"}


def _acked(**versions: int) -> Expectations:
    """Acknowledged commits c1, c2... of aggregate ``a``."""
    operations = [
        {
            "commit_id": commit,
            "shard": 0,
            "aggregate": "a",
            "expected": version - 1,
            "events": 2 if commit == "c2" else 1,
            "outcome": "acked",
            "version": version,
            "error": None,
            "resolution": None,
            "final_error": None,
        }
        for commit, version in versions.items()
    ]
    return Expectations.from_operations(operations)


def test_checker_accepts_a_correct_store(emulator_url: str, shard: tuple[Shard, Any, Any]) -> None:
    report = check(emulator_url, [shard[0]], _acked(c1=1, c2=2))
    assert report.violations == []
    assert report.figures["change_sets"] == 2


def test_checker_finds_a_lost_acknowledged_append(
    emulator_url: str, shard: tuple[Shard, Any, Any]
) -> None:
    report = check(emulator_url, [shard[0]], _acked(c1=1, c2=2, c3=3))
    assert any("'c3'" in v and "not stored" in v for v in report.violations), report.violations


def test_checker_finds_gaps_bad_heads_and_doubles(
    emulator_url: str, shard: tuple[Shard, Any, Any]
) -> None:
    info, dynamodb, _ = shard
    dynamodb.put_item(TableName=info.table, Item=_change_set("a", 4, "c1"))  # gap + double
    dynamodb.put_item(TableName=info.table, Item=_change_set("b", 1, "stray"))  # unaccounted
    report = check(emulator_url, [info], _acked(c1=1, c2=2))
    text = "\n".join(report.violations)
    assert "not gapless" in text
    assert "head at version 2, last change set 4" in text
    assert "stored twice" in text
    assert "no head" in text
    assert "'stray' is stored but no writer attempted it" in text


def test_checker_finds_a_change_set_of_a_failed_append(
    emulator_url: str, shard: tuple[Shard, Any, Any]
) -> None:
    expected = _acked(c1=1)
    expected.failed["c2"] = "ConcurrencyError"
    report = check(emulator_url, [shard[0]], expected)
    assert any("reported failed" in v for v in report.violations), report.violations


def test_checker_verifies_s3_pointers(emulator_url: str, shard: tuple[Shard, Any, Any]) -> None:
    info, dynamodb, s3 = shard
    good = b"\x02" + b"".join(
        len(frame).to_bytes(4, "big") + frame
        for frame in (msgspec.msgpack.encode([None, {"n": n}]) for n in range(2))
    )
    s3.put_object(Bucket=info.bucket, Key="changesets/good", Body=good)
    s3.put_object(Bucket=info.bucket, Key="changesets/bad", Body=good + b"tampered")
    s3.put_object(Bucket=info.bucket, Key="changesets/orphan", Body=b"x")

    def pointer(version: int, commit: str, key: str) -> dict[str, Any]:
        item = _change_set("p", version, commit, 2)
        del item["payload"]
        item["s3_key"] = {"S": key}
        item["s3_size"] = {"N": str(len(good))}
        item["s3_sha256"] = {"S": hashlib.sha256(good).hexdigest()}
        return item

    for item in (
        pointer(1, "p1", "changesets/good"),
        pointer(2, "p2", "changesets/bad"),
        pointer(3, "p3", "changesets/missing"),
        _head("p", 3, "p3", 6),
    ):
        dynamodb.put_item(TableName=info.table, Item=item)
    expected = _acked(c1=1, c2=2)
    expected.unsettled.update({"p1", "p2", "p3"})
    expected.attempts.update({c: (0, "p", 2) for c in ("p1", "p2", "p3")})
    report = check(emulator_url, [info], expected)
    assert report.figures["s3_pointers"] == 3
    assert report.figures["s3_unreferenced"] == 1  # counted; a violation only after a sweep
    text = "\n".join(report.violations)
    assert "changesets/bad is" in text and "pointer says" in text
    assert "changesets/missing does not exist" in text
    assert "changesets/good" not in text
    swept = check(emulator_url, [info], expected, after_sweep=True)
    assert any("changesets/orphan is referenced by no change set" in v for v in swept.violations)


# -- bugs the chaos run found ---------------------------------------------------------------


async def _schema(emulator_url: str, config: StoreConfig) -> None:
    async with EventStore(config.replace(endpoint_url=emulator_url)) as store:
        await store.create_schema()


def _config(proxy_url: str, **overrides: Any) -> StoreConfig:
    name = f"chaos-bug-{uuid.uuid4().hex[:12]}"
    return StoreConfig(
        table_name=name,
        bucket_name=name,
        endpoint_url=proxy_url,
        read_timeout=2.0,
        connect_timeout=2.0,
        **CREDENTIALS,
        **overrides,
    )


def reads_feed_shape(request: ProxyRequest) -> bool:
    """The store's one check of the table's feed shard count, before its first append:
    scripts aimed at an append's own requests let it pass."""
    return json.dumps(schema_partition()).encode() in request.body


def _first(operation: str, kind: str) -> Any:
    """A proxy script: ``kind`` on the first request of ``operation`` only."""
    seen: set[str] = set()

    def script(request: ProxyRequest) -> str | None:
        if request.operation == operation and operation not in seen:
            seen.add(operation)
            return kind
        return None

    return script


@pytest.mark.anyio
async def test_landed_append_is_not_reported_failed_when_its_read_back_fails(
    emulator_url: str,
) -> None:
    plan = {"TransactWriteItems": ["reset_after"], "GetItem": ["reset_before", "reset_before"]}

    def script(request: ProxyRequest) -> str | None:
        if reads_feed_shape(request):
            return None
        kinds = plan.get(request.operation)
        return kinds.pop(0) if kinds else None

    async with FaultProxy(emulator_url, script=script) as proxy:
        # Two botocore attempts per request: the transaction's retry meets its own commit.
        config = _config(proxy.url, max_attempts=2)
        await _schema(emulator_url, config)
        async with EventStore(config) as store:
            try:
                change_set = await store.append(
                    "order-1", [{"n": 1}], expected_version=0, commit_id="c-1"
                )
            except CommitOutcomeUnknownError:
                pass  # honest: the caller retries with the commit id
            else:
                assert (change_set.version, change_set.commit_id) == (1, "c-1")
    # The refusal carries the landed change set itself, so no read-back is needed.
    assert proxy.faults["reset_after"] == 1


@pytest.mark.anyio
async def test_retry_of_a_landed_append_returns_it_with_request_tokens(emulator_url: str) -> None:
    lost = {"TransactWriteItems": "reset_after", "GetItem": "reset_before"}
    done: set[str] = set()

    def script(request: ProxyRequest) -> str | None:
        if reads_feed_shape(request):
            return None
        kind = lost.get(request.operation)
        if kind is None or request.operation in done:
            return None
        done.add(request.operation)
        return kind

    async with FaultProxy(emulator_url, script=script, emulate_request_tokens=True) as proxy:
        config = _config(proxy.url, max_attempts=1)
        await _schema(emulator_url, config)
        async with EventStore(config) as store:
            with pytest.raises(CommitOutcomeUnknownError):
                await store.append("order-1", [{"n": 1}], expected_version=0, commit_id="c-1")
            # The commit landed (reset after forwarding) and the read-back failed.
            change_set = await store.append(
                "order-1", [{"n": 1}], expected_version=0, commit_id="c-1"
            )
            assert (change_set.version, change_set.commit_id) == (1, "c-1")


@pytest.mark.anyio
async def test_lost_put_object_response_does_not_fail_the_append(emulator_url: str) -> None:
    async with FaultProxy(emulator_url, script=_first("S3:PUT", "reset_after")) as proxy:
        config = _config(proxy.url, max_attempts=3, offload_threshold_bytes=1024)
        await _schema(emulator_url, config)
        events = [{"blob": "x" * 3000}]
        async with EventStore(config) as store:
            change_set = await store.append("big-1", events, expected_version=0)
            assert change_set.version == 1
            assert list((await store.load("big-1")).events) == events


@pytest.mark.anyio
async def test_a_refused_put_re_send_that_cannot_be_checked_is_transient(
    emulator_url: str,
) -> None:
    # The PUT lands but its answer is lost; botocore's re-send is refused (412) and every
    # HEAD that would recognise our own object fails: the caller may retry.
    plan = {"S3:PUT": ["reset_after"], "S3:HEAD": ["http_500", "http_500"]}

    def script(request: ProxyRequest) -> str | None:
        kinds = plan.get(request.operation)
        return kinds.pop(0) if kinds else None

    async with FaultProxy(emulator_url, script=script) as proxy:
        config = _config(proxy.url, max_attempts=2, offload_threshold_bytes=1024)
        await _schema(emulator_url, config)
        async with EventStore(config) as store:
            with pytest.raises(StorageUnavailableError) as unconfirmed:
                await store.append("big-1", [{"blob": "x" * 3000}], expected_version=0)
            assert await store.head("big-1") is None
    assert proxy.faults["http_500"] == 2
    assert unconfirmed.value.reason == "UnconfirmedWrite"
