"""The emulator's own pieces: the moto version check, size accounting, request tokens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eventstore_async.emulator._journal import Record, UploadIds
from eventstore_async.emulator._moto_patches import (
    TESTED_MOTO_VERSIONS,
    UntestedMotoError,
    check_moto_version,
    transaction_limit_problem,
)
from eventstore_async.emulator._sizes import item_size, number_size, transaction_size, value_size
from eventstore_async.emulator._tokens import RequestTokens, parameters_digest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_tested_moto_is_accepted() -> None:
    assert check_moto_version(TESTED_MOTO_VERSIONS[0]) == TESTED_MOTO_VERSIONS[0]


def test_an_untested_moto_is_refused_with_the_fix_in_the_message() -> None:
    with pytest.raises(UntestedMotoError, match=r"moto 5\.1\.0 is installed.*pip install"):
        check_moto_version("5.1.0")


def test_the_server_refuses_to_start_on_an_untested_moto() -> None:
    program = (
        "import importlib.metadata as m; m.version = lambda name: '4.0.0'\n"
        "from eventstore_async.emulator._server import main; raise SystemExit(main([]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, timeout=60, cwd=REPO_ROOT
    )
    assert done.returncode == 2
    assert done.stdout == b""  # no URL: nothing was served
    assert b"moto 4.0.0 is installed" in done.stderr


# -- sizes, as DynamoDB counts them ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 1), ("1", 2), ("12", 2), ("123", 3), ("-1.50", 2), ("1000000", 2), ("1E+5", 2)],
)
def test_numbers_count_one_byte_per_two_significant_digits_plus_one(text: str, size: int) -> None:
    assert number_size(text) == size


def test_values_count_as_dynamodb_counts_them() -> None:
    assert value_size("S", "héllo") == 6
    assert value_size("B", b"\x00" * 10) == 10
    assert value_size("B", "AAAA") == 3  # base64 text, not yet decoded
    assert value_size("BOOL", True) == value_size("NULL", True) == 1
    assert value_size("L", [{"S": "ab"}, {"N": "1"}]) == 3 + (1 + 2) + (1 + 2)
    assert value_size("M", {"k": {"S": "ab"}}) == 3 + 1 + 1 + 2
    assert value_size("SS", ["a", "bc"]) == 3


def test_an_item_counts_names_and_values() -> None:
    item = {"pk": {"S": "x"}, "sk": {"N": "1"}, "p": {"B": b"\x01" * 100}}
    assert item_size(item.items()) == (2 + 1) + (2 + 2) + (1 + 100)


def test_a_transaction_counts_puts_keys_and_update_values() -> None:
    keys = {"pk": {"S": "x"}, "sk": {"N": "1"}}  # 7 bytes
    actions = [
        {"Put": {"Item": {**keys, "p": {"B": b"\x00" * 10}}}},
        {"Update": {"Key": keys, "ExpressionAttributeValues": {":v": {"S": "abc"}}}},
        {"ConditionCheck": {"Key": keys}},
    ]
    assert transaction_size(actions) == (7 + 11) + (7 + 3) + 7


def test_limit_problems_name_the_limit() -> None:
    small = [{"ConditionCheck": {"Key": {"pk": {"S": "x"}}}}]
    assert transaction_limit_problem(small * 100) is None
    too_many = transaction_limit_problem(small * 101)
    assert too_many is not None and "length less than or equal to 100" in too_many
    big = [{"Put": {"Item": {"p": {"B": b"\x00" * 400_000}}}}] * 11
    assert transaction_limit_problem(big) == "Transaction request cannot be larger than 4 MB"


# -- request tokens ------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_replays_with_the_same_parameters_and_mismatches_with_others() -> None:
    tokens = RequestTokens(clock=FakeClock())
    first = parameters_digest({"TransactItems": [1], "ClientRequestToken": "t"})
    other = parameters_digest({"TransactItems": [2], "ClientRequestToken": "t"})
    assert tokens.check("t", first) == "new"
    tokens.remember("t", first)
    assert tokens.check("t", first) == "replay"
    assert tokens.check("t", other) == "mismatch"
    assert tokens.check("u", first) == "new"


def test_a_token_is_forgotten_after_ten_minutes() -> None:
    clock = FakeClock()
    tokens = RequestTokens(clock=clock)
    tokens.remember("old", "d1")
    clock.now += 300
    tokens.remember("young", "d2")
    clock.now += 300.5
    assert tokens.check("old", "other") == "new"
    assert tokens.check("young", "d2") == "replay"
    assert len(tokens) == 1


def test_tokens_carried_in_a_snapshot_keep_their_time_and_expire_from_it() -> None:
    clock = FakeClock()
    written = RequestTokens(clock=clock)
    written.remember("old", "d1")
    clock.now += 300
    written.remember("young", "d2")
    entries = written.entries()
    assert entries == [("old", "d1", 1000.0), ("young", "d2", 1300.0)]
    clock.now += 300.5  # the restart: "old" is past its ten minutes, "young" is not
    read = RequestTokens(clock=clock)
    read.load(entries)
    assert read.entries() == [("young", "d2", 1300.0)]
    assert read.check("young", "d2") == "replay"
    assert read.check("old", "d1") == "new"


def test_the_digest_ignores_the_token_and_key_order_and_sees_bytes() -> None:
    a = parameters_digest({"A": 1, "B": {"B": b"\x00"}, "ClientRequestToken": "x"})
    b = parameters_digest({"B": {"B": b"\x00"}, "A": 1, "ClientRequestToken": "y"})
    c = parameters_digest({"B": {"B": b"\x01"}, "A": 1})
    assert a == b != c


def test_replayed_requests_of_a_multipart_upload_get_its_new_id() -> None:
    uploads = UploadIds()
    created = Record(at=0.0, environ={"QUERY_STRING": "uploads="}, upload_id="old-id")
    uploads.learn(created, b"<X><UploadId>new-id</UploadId></X>")
    part = {
        "QUERY_STRING": "partNumber=2&uploadId=old-id",
        "RAW_URI": "/b/k?partNumber=2&uploadId=old-id",
        "PATH_INFO": "/b/k",
    }
    assert uploads.rewrite(part) == {
        "QUERY_STRING": "partNumber=2&uploadId=new-id",
        "RAW_URI": "/b/k?partNumber=2&uploadId=new-id",
        "PATH_INFO": "/b/k",
    }
    other = {"QUERY_STRING": "uploadId=unknown"}
    assert uploads.rewrite(other) == other
