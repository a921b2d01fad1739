"""The chaos checker: reads the tables and buckets directly and lists every violation.

It uses plain boto3 against the emulator (never the library, never the proxy), so a
bug in the library's read path cannot hide a bug in its write path. It knows the
storage layout from the README's "Schema" section:

    pk (S)         sk (N)   item
    aggregate id   0        head: version, agg_type, commit_id (last), event_count, ...
    aggregate id   1..n     change set: commit_id, ts_us, event_count,
                            payload (B) or an S3 pointer (s3_key, s3_size, s3_sha256)
    aggregate id   v.x      snapshot at version v: payload (B) or an S3 pointer
    aggregate id   < 0      commit marker of an ANY append: commit_id, version
    \x1f...        any      system items (feed, subscriptions, views): counted only

Invariants checked against the writers' ledger (:class:`Expectations`):

1. every acknowledged append is stored exactly once, at its acknowledged version, in
   its aggregate, with the number of events sent;
2. versions per aggregate run 1..n with no gap;
3. each head agrees with its last change set (version, commit id) and its event count
   is the sum of the change sets' counts;
4. no commit id appears twice (in any history, across every table);
5. no stored change set is unaccounted for: each is an acknowledged append, or one whose
   outcome was reported unknown and never settled (abandoned or unresolved);
   an unknown append whose retry with the same commit id and expected version is
   *refused* with a non-transient error breaks the documented way to settle it, and
   an append failing with a non-transient error (not ``StorageUnavailableError``) under
   transient faults misleads its caller;
6. a change set holds its payload inline or an S3 pointer, never both nor neither; a
   payload decodes (format 0x01 to 0x04, see :func:`count_events`) to event_count events;
7. commit markers point at a stored change set with their commit id, and every
   acknowledged ANY append has its marker;
8. when S3 pointers exist: each pointer's object exists with the recorded size and
   SHA-256 and decodes (after ``s3_codec``) to event_count events; objects no pointer
   references, and unfinished multipart uploads, are counted, and are violations once
   a sweep has run (``after_sweep=True``).
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3
import msgspec
from botocore.config import Config

__all__ = ["CheckReport", "Expectations", "Shard", "check"]

FORMAT_MSGPACK = 0x01
FORMAT_FRAMED = 0x02
#: The same layouts with [type_name, version, body] envelopes.
FORMAT_MSGPACK_VERSIONED = 0x03
FORMAT_FRAMED_VERSIONED = 0x04
#: Partition keys of the store's system items (feed, subscriptions, views) start with it.
SYSTEM_PREFIX = "\x1f"
#: Resolutions of an unknown outcome that leave it unknown.
UNSETTLED = ("abandoned", "unresolved", "refused")
#: Error classes an append may fail with when every injected fault is transient.
TRANSIENT = ("StorageUnavailableError", "CommitOutcomeUnknownError")
_ENVELOPE = msgspec.msgpack.Decoder(tuple[str | None, msgspec.Raw])
_ENVELOPES = msgspec.msgpack.Decoder(list[tuple[str | None, msgspec.Raw]])
_VERSIONED = msgspec.msgpack.Decoder(tuple[str | None, int, msgspec.Raw])
_VERSIONED_LIST = msgspec.msgpack.Decoder(list[tuple[str | None, int, msgspec.Raw]])


@dataclass(frozen=True, slots=True)
class Shard:
    table: str
    bucket: str | None


@dataclass(slots=True)
class Expectations:
    """What the writers reported, keyed by commit id."""

    #: commit id -> (shard index, aggregate, version, events sent)
    acked: dict[str, tuple[int, str, int, int]] = field(default_factory=dict)
    #: commit ids whose outcome stayed unknown (abandoned or unresolved): may be stored
    unsettled: set[str] = field(default_factory=set)
    #: unknown commits whose retry (same commit id and expected version) was refused
    #: with a non-transient error: the documented way to settle them failed
    refused: dict[str, str] = field(default_factory=dict)
    #: commit id -> a non-transient error an append failed with: under transient faults
    #: only StorageUnavailableError (retry-safe) may surface, besides conflicts
    misclassified: dict[str, str] = field(default_factory=dict)
    #: commit id -> why it is known not to be stored (conflict, error, not landed)
    failed: dict[str, str] = field(default_factory=dict)
    #: commit ids of acknowledged ANY appends (they must have a marker)
    any_acked: set[str] = field(default_factory=set)
    #: commit id -> (shard index, aggregate, events sent), for every attempt
    attempts: dict[str, tuple[int, str, int]] = field(default_factory=dict)

    @classmethod
    def from_operations(cls, operations: Iterable[dict[str, Any]]) -> Expectations:
        expected = cls()
        for op in operations:
            commit = op["commit_id"]
            expected.attempts[commit] = (op["shard"], op["aggregate"], op["events"])
            landed = op["outcome"] == "acked" or op["resolution"] == "landed"
            if landed:
                expected.acked[commit] = (op["shard"], op["aggregate"], op["version"], op["events"])
                if op["expected"] == "ANY":
                    expected.any_acked.add(commit)
            elif op["outcome"] == "unknown" and op["resolution"] in UNSETTLED:
                expected.unsettled.add(commit)
                if op["resolution"] == "refused":
                    expected.refused[commit] = str(op["final_error"])
            else:
                why = str(op["final_error"] or op["error"] or op["outcome"])
                expected.failed[commit] = f"{why}; expected_version {op['expected']}"
                if op["outcome"] == "error" and not str(op["error"]).startswith(TRANSIENT):
                    expected.misclassified[commit] = str(op["error"])
        return expected


@dataclass(slots=True)
class CheckReport:
    violations: list[str] = field(default_factory=list)
    figures: Counter[str] = field(default_factory=Counter)

    def violate(self, message: str) -> None:
        self.violations.append(message)


@dataclass(frozen=True, slots=True)
class _Pointer:
    """An item holding an S3 pointer: a change set (with its event count) or a snapshot."""

    where: str
    item: dict[str, Any]
    event_count: int | None


@dataclass(slots=True)
class _ChangeSet:
    shard: int
    aggregate: str
    version: int
    commit_id: str
    event_count: int
    item: dict[str, Any]


def check(
    endpoint_url: str,
    shards: list[Shard],
    expected: Expectations,
    *,
    after_sweep: bool = False,
    region_name: str = "us-east-1",
) -> CheckReport:
    """Read every shard directly and check the invariants listed in the module docstring."""
    session = boto3.session.Session(
        aws_access_key_id="checker", aws_secret_access_key="checker", region_name=region_name
    )
    config = Config(retries={"mode": "standard", "max_attempts": 5}, read_timeout=120)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint_url, config=config)
    s3 = session.client(
        "s3",
        endpoint_url=endpoint_url,
        config=config.merge(Config(s3={"addressing_style": "path"})),
    )
    report = CheckReport()
    stored: dict[str, _ChangeSet] = {}
    try:
        for index, shard in enumerate(shards):
            change_sets, pointers = _check_table(dynamodb, index, shard, expected, report)
            for change_set in change_sets:
                _check_unique(change_set, stored, report)
            if shard.bucket is not None:
                _check_bucket(s3, shard.bucket, pointers, report, after_sweep=after_sweep)
            elif pointers:
                report.violate(f"{shard.table}: {len(pointers)} S3 pointers but no bucket")
    finally:
        dynamodb.close()
        s3.close()
    _check_ledger(stored, expected, report)
    return report


# -- one table ----------------------------------------------------------------------------


def _scan(dynamodb: Any, table: str) -> Iterator[dict[str, Any]]:
    params: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = dynamodb.scan(**params)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _check_table(
    dynamodb: Any, index: int, shard: Shard, expected: Expectations, report: CheckReport
) -> tuple[list[_ChangeSet], list[_Pointer]]:
    heads: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[_ChangeSet]] = defaultdict(list)
    markers: list[dict[str, Any]] = []
    pointers: list[_Pointer] = []
    for item in _scan(dynamodb, shard.table):
        report.figures["items"] += 1
        aggregate, sort_key = item["pk"]["S"], Decimal(item["sk"]["N"])
        if aggregate.startswith(SYSTEM_PREFIX):  # feed, subscriptions, views: not checked
            report.figures["system_items"] += 1
        elif sort_key == 0:
            heads[aggregate] = item
        elif sort_key != sort_key.to_integral_value():  # a snapshot, after its version
            report.figures["snapshots"] += 1
            if "s3_key" in item:
                where = f"{shard.table}/{aggregate} snapshot {sort_key}"
                pointers.append(_Pointer(where, item, None))
        elif sort_key > 0:
            change_set = _change_set(index, aggregate, int(sort_key), item, report, shard.table)
            if change_set is not None:
                histories[aggregate].append(change_set)
                if "s3_key" in item:
                    where = f"{shard.table}/{aggregate}@{change_set.version}"
                    pointers.append(_Pointer(where, item, change_set.event_count))
        else:
            markers.append(item)
    report.figures["tables"] += 1
    report.figures["heads"] += len(heads)
    report.figures["markers"] += len(markers)
    for aggregate in sorted(set(heads) | set(histories)):
        history = sorted(histories.get(aggregate, []), key=lambda cs: cs.version)
        _check_history(f"{shard.table}/{aggregate}", heads.get(aggregate), history, report)
    _check_markers(index, shard.table, markers, histories, expected, report)
    return [cs for history in histories.values() for cs in history], pointers


def _change_set(
    index: int, aggregate: str, version: int, item: dict[str, Any], report: CheckReport, table: str
) -> _ChangeSet | None:
    where = f"{table}/{aggregate}@{version}"
    try:
        commit_id = item["commit_id"]["S"]
        event_count = int(item["event_count"]["N"])
        int(item["ts_us"]["N"])
    except (KeyError, ValueError) as exc:
        report.violate(f"{where}: malformed change set item (missing or bad {exc})")
        return None
    report.figures["change_sets"] += 1
    inline, pointer = "payload" in item, "s3_key" in item
    if inline == pointer:
        report.violate(f"{where}: holds {'both' if inline else 'neither'} payload and S3 pointer")
    elif inline:
        _check_payload(where, bytes(item["payload"]["B"]), event_count, report)
    else:
        report.figures["s3_pointers"] += 1
    return _ChangeSet(index, aggregate, version, commit_id, event_count, item)


def _check_payload(where: str, payload: bytes, event_count: int, report: CheckReport) -> None:
    try:
        count = count_events(payload)
    except ValueError as exc:
        report.violate(f"{where}: payload does not decode: {exc}")
        return
    if count != event_count:
        report.violate(f"{where}: payload holds {count} events, event_count {event_count}")


def count_events(payload: bytes) -> int:
    """Events in a payload (README "Schema"): 0x01 + one MessagePack array of envelopes,
    or 0x02 + envelopes each preceded by its 4-byte big-endian length; 0x03 and 0x04 the
    same with versioned envelopes.

    Raises:
        ValueError: unknown format byte, or bytes that do not decode.
    """
    first = payload[0] if payload else -1
    if first in (FORMAT_MSGPACK, FORMAT_MSGPACK_VERSIONED):
        decoder = _ENVELOPES if first == FORMAT_MSGPACK else _VERSIONED_LIST
        try:
            return len(decoder.decode(payload[1:]))
        except msgspec.DecodeError as exc:
            raise ValueError(str(exc)) from None
    if first not in (FORMAT_FRAMED, FORMAT_FRAMED_VERSIONED):
        raise ValueError(f"unknown format byte {payload[:1].hex() or 'none'}")
    envelope = _ENVELOPE if first == FORMAT_FRAMED else _VERSIONED
    count, position = 0, 1
    while position < len(payload):
        length = int.from_bytes(payload[position : position + 4], "big")
        end = position + 4 + length
        if length == 0 or end > len(payload):
            raise ValueError(f"framed payload is truncated at byte {position}")
        try:
            envelope.decode(payload[position + 4 : end])
        except msgspec.DecodeError as exc:
            raise ValueError(f"frame {count}: {exc}") from None
        count, position = count + 1, end
    return count


def _check_history(
    where: str, head: dict[str, Any] | None, history: list[_ChangeSet], report: CheckReport
) -> None:
    report.figures["aggregates"] += 1
    versions = [cs.version for cs in history]
    if versions != list(range(1, len(history) + 1)):
        missing = sorted(set(range(1, max(versions, default=0) + 1)) - set(versions))
        report.violate(f"{where}: versions are not gapless 1..n (missing {missing[:10]})")
    if head is None:
        report.violate(f"{where}: {len(history)} change sets but no head")
        return
    if not history:
        report.violate(f"{where}: a head at version {head['version']['N']} but no change sets")
        return
    last = history[-1]
    version = int(head["version"]["N"])
    if version != last.version:
        report.violate(f"{where}: head at version {version}, last change set {last.version}")
    if head["commit_id"]["S"] != last.commit_id:
        report.violate(
            f"{where}: head commit {head['commit_id']['S']!r}, last change set {last.commit_id!r}"
        )
    total = sum(cs.event_count for cs in history)
    if int(head["event_count"]["N"]) != total:
        report.violate(f"{where}: head counts {head['event_count']['N']} events, history {total}")


def _check_markers(
    index: int,
    table: str,
    markers: list[dict[str, Any]],
    histories: dict[str, list[_ChangeSet]],
    expected: Expectations,
    report: CheckReport,
) -> None:
    marked: set[str] = set()
    for item in markers:
        aggregate, commit_id = item["pk"]["S"], item["commit_id"]["S"]
        version = int(item["version"]["N"])
        marked.add(commit_id)
        found = [cs for cs in histories.get(aggregate, []) if cs.version == version]
        if not found or found[0].commit_id != commit_id:
            report.violate(
                f"{table}/{aggregate}: marker of {commit_id!r} points at version {version}, "
                "which holds another commit or nothing"
            )
    for commit_id in sorted(expected.any_acked):
        shard = expected.acked[commit_id][0]
        if shard == index and commit_id not in marked:
            report.violate(f"{table}: acknowledged ANY append {commit_id!r} has no marker")


# -- across tables ------------------------------------------------------------------------


def _check_unique(
    change_set: _ChangeSet, stored: dict[str, _ChangeSet], report: CheckReport
) -> None:
    other = stored.get(change_set.commit_id)
    if other is not None:
        report.violate(
            f"commit {change_set.commit_id!r} stored twice: {other.aggregate}@{other.version} "
            f"(shard {other.shard}) and {change_set.aggregate}@{change_set.version} "
            f"(shard {change_set.shard})"
        )
        return
    stored[change_set.commit_id] = change_set


def _check_ledger(
    stored: dict[str, _ChangeSet], expected: Expectations, report: CheckReport
) -> None:
    for commit_id, (shard, aggregate, version, events) in sorted(expected.acked.items()):
        found = stored.get(commit_id)
        if found is None:
            report.violate(f"acknowledged {commit_id!r} ({aggregate}@{version}) is not stored")
        elif (found.shard, found.aggregate, found.version) != (shard, aggregate, version):
            report.violate(
                f"acknowledged {commit_id!r} at {aggregate}@{version} (shard {shard}) but "
                f"stored at {found.aggregate}@{found.version} (shard {found.shard})"
            )
        elif found.event_count != events:
            report.violate(f"{commit_id!r}: {events} events sent, {found.event_count} stored")
    for commit_id, change_set in sorted(stored.items()):
        if commit_id in expected.acked:
            continue
        if commit_id in expected.unsettled:
            report.figures["unsettled_stored"] += 1
            _check_attempt(commit_id, change_set, expected, report)
        elif commit_id in expected.failed:
            report.violate(
                f"{commit_id!r} is stored at {change_set.aggregate}@{change_set.version} "
                f"but was reported failed ({expected.failed[commit_id]})"
            )
        else:
            report.violate(f"{commit_id!r} is stored but no writer attempted it")
    report.figures["unsettled_absent"] = sum(1 for c in expected.unsettled if c not in stored)
    for commit_id, error in sorted(expected.misclassified.items()):
        report.violate(
            f"{commit_id!r}: append failed with {error}, a non-transient error, although every "
            "injected fault is transient (the caller is not told it may retry)"
        )
    for commit_id, error in sorted(expected.refused.items()):
        state = "stored" if commit_id in stored else "not stored"
        report.violate(
            f"{commit_id!r} ({state}): its outcome was unknown and retrying it with the same "
            f"commit id and expected version was refused with {error}"
        )


def _check_attempt(
    commit_id: str, change_set: _ChangeSet, expected: Expectations, report: CheckReport
) -> None:
    shard, aggregate, events = expected.attempts[commit_id]
    if (change_set.shard, change_set.aggregate, change_set.event_count) != (
        shard,
        aggregate,
        events,
    ):
        report.violate(f"{commit_id!r} is stored in another aggregate or with other events")


# -- S3 -----------------------------------------------------------------------------------


def _check_bucket(
    s3: Any, bucket: str, pointers: list[_Pointer], report: CheckReport, *, after_sweep: bool
) -> None:
    objects = _list_objects(s3, bucket)
    report.figures["s3_objects"] += len(objects)
    referenced: set[str] = set()
    for pointer in pointers:
        _check_pointer(s3, bucket, pointer, objects, report)
        referenced.add(str(pointer.item["s3_key"].get("S")))
    orphans = sorted(set(objects) - referenced)
    report.figures["s3_unreferenced"] += len(orphans)
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    report.figures["s3_unfinished_uploads"] += len(uploads)
    if after_sweep:
        for key in orphans[:20]:
            report.violate(f"s3://{bucket}/{key} is referenced by no change set after the sweep")
        for upload in uploads[:20]:
            report.violate(f"s3://{bucket}/{upload['Key']}: multipart upload left unfinished")


def _list_objects(s3: Any, bucket: str) -> dict[str, int]:
    objects: dict[str, int] = {}
    params: dict[str, Any] = {"Bucket": bucket}
    while True:
        page = s3.list_objects_v2(**params)
        objects.update({entry["Key"]: entry["Size"] for entry in page.get("Contents", [])})
        if not page.get("IsTruncated"):
            return objects
        params["ContinuationToken"] = page["NextContinuationToken"]


def _check_pointer(
    s3: Any, bucket: str, pointer: _Pointer, objects: dict[str, int], report: CheckReport
) -> None:
    item, where = pointer.item, pointer.where
    try:
        key, size, digest = item["s3_key"]["S"], int(item["s3_size"]["N"]), item["s3_sha256"]
    except (KeyError, ValueError) as exc:
        report.violate(f"{where}: malformed S3 pointer (missing or bad {exc})")
        return
    if "payload" in item:
        report.violate(f"{where}: holds both an inline payload and an S3 pointer")
    if key not in objects:
        report.violate(f"{where}: s3://{bucket}/{key} does not exist")
        return
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if len(body) != size:
        report.violate(f"{where}: s3://{bucket}/{key} is {len(body)} bytes, pointer says {size}")
    if not _digest_matches(hashlib.sha256(body).digest(), digest):
        report.violate(f"{where}: s3://{bucket}/{key} does not match its SHA-256")
        return
    if pointer.event_count is None:  # a snapshot: its payload is state, not events
        return
    codec = item.get("s3_codec", {}).get("S")
    try:
        payload = zlib.decompress(body) if codec == "zlib" else body
        count = count_events(payload)
    except (zlib.error, ValueError) as exc:
        report.violate(f"{where}: s3://{bucket}/{key} does not decode ({codec}): {exc}")
        return
    if count != pointer.event_count:
        report.violate(
            f"{where}: s3://{bucket}/{key} holds {count} events, event_count {pointer.event_count}"
        )


def _digest_matches(actual: bytes, recorded: dict[str, Any]) -> bool:
    """The pointer's hash may be stored as bytes (B), hex or base64 text (S)."""
    if "B" in recorded:
        return bytes(recorded["B"]) == actual
    text = str(recorded.get("S", ""))
    return text.lower() == actual.hex() or text == base64.b64encode(actual).decode()
