"""Argument checks, run before anything is encoded or sent.

Each check raises :class:`InvalidInputError` naming the argument and the problem.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from typing import Any, Literal

from ._errors import InvalidInputError
from ._models import AnyVersion

__all__ = [
    "MAX_AGGREGATE_ID_BYTES",
    "check_aggregate_id",
    "check_aggregate_ids",
    "check_aggregate_type",
    "check_commit_id",
    "check_count",
    "check_events",
    "check_expected_version",
    "check_metadata",
    "check_on_undecodable",
    "check_seconds",
    "check_start",
    "check_version",
    "check_version_range",
]

#: Ids also name S3 objects (keys up to 1,024 bytes), so they stay well below that.
MAX_AGGREGATE_ID_BYTES = 512
MAX_AGGREGATE_TYPE_CHARS = 256
MAX_COMMIT_ID_CHARS = 128
#: Versions are DynamoDB numbers; keep them far inside exact integer range.
MAX_VERSION = 2**53
_COMMIT_ID = re.compile(r"[A-Za-z0-9._:@/+=-]+")
# Unicode categories Cc (C0, DEL, C1 controls) and Cs (surrogates, not UTF-8 encodable).
_FORBIDDEN_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_aggregate_id(value: Any, argument: str = "aggregate_id") -> str:
    if not isinstance(value, str):
        raise InvalidInputError(argument, f"must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidInputError(argument, "must not be empty")
    _check_text(value, argument)
    size = len(value.encode("utf-8"))
    if size > MAX_AGGREGATE_ID_BYTES:
        raise InvalidInputError(
            argument, f"is {size} bytes in UTF-8, over the limit of {MAX_AGGREGATE_ID_BYTES}"
        )
    return value


def check_aggregate_ids(value: Any, argument: str = "aggregate_ids") -> list[str]:
    """Several aggregate ids, each checked, without duplicates, in the order given.

    A str (or bytes) is refused: it is iterable, but its characters are not the ids meant.
    """
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Iterable):
        raise InvalidInputError(
            argument, f"must be a list, tuple or other iterable of ids, not {type(value).__name__}"
        )
    return list(dict.fromkeys(check_aggregate_id(item, argument) for item in value))


def check_aggregate_type(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError("aggregate_type", f"must be a str, not {type(value).__name__}")
    if not value or len(value) > MAX_AGGREGATE_TYPE_CHARS:
        raise InvalidInputError(
            "aggregate_type", f"must be 1 to {MAX_AGGREGATE_TYPE_CHARS} characters"
        )
    _check_text(value, "aggregate_type")
    return value


def check_commit_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError("commit_id", f"must be a str, not {type(value).__name__}")
    if not 1 <= len(value) <= MAX_COMMIT_ID_CHARS or not _COMMIT_ID.fullmatch(value):
        raise InvalidInputError(
            "commit_id",
            f"must be 1 to {MAX_COMMIT_ID_CHARS} characters of letters, digits and ._:@/+=-",
        )
    return value


def check_expected_version(value: Any) -> int | AnyVersion:
    if isinstance(value, AnyVersion):
        return value
    return _check_version(value, "expected_version", minimum=0)


def check_version(value: Any, argument: str = "version") -> int:
    """One version of an aggregate (1 and up), named as the caller's argument."""
    return _check_version(value, argument, minimum=1)


def check_version_range(from_version: Any, to_version: Any) -> tuple[int, int | None]:
    low = _check_version(from_version, "from_version", minimum=1)
    if to_version is None:
        return low, None
    high = _check_version(to_version, "to_version", minimum=1)
    if high < low:
        raise InvalidInputError("to_version", f"must be >= from_version ({low}), got {high}")
    return low, high


def check_events(events: Any) -> None:
    """The kind of an append's events, checked before anything is encoded or uploaded:
    a non-empty list or tuple, an iterator or an async iterator. Nothing is consumed;
    the codec checks each event when it is encoded."""
    if isinstance(events, str | bytes | bytearray | Mapping) or not isinstance(
        events, Iterable | AsyncIterable
    ):
        raise InvalidInputError(
            "events",
            "must be a list, tuple, iterator or async iterator of events, "
            f"not {type(events).__name__}",
        )
    if isinstance(events, Sequence) and not events:
        raise InvalidInputError("events", "must hold at least one event")


def check_metadata(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInputError("metadata", f"must be a mapping, not {type(value).__name__}")
    return value


def _check_version(value: Any, argument: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(argument, f"must be an int, not {type(value).__name__}")
    if not minimum <= value <= MAX_VERSION:
        raise InvalidInputError(argument, f"must be between {minimum} and 2**53, got {value}")
    return int(value)


def _check_text(value: str, argument: str) -> None:
    found = _FORBIDDEN_CHAR.search(value)
    if found is None:
        return
    kind = "lone surrogate" if found.group() >= "\ud800" else "control character"
    raise InvalidInputError(argument, f"holds a {kind} at index {found.start()}")


def check_start(start: Any) -> Literal["beginning", "end"]:
    if start not in ("beginning", "end"):
        raise InvalidInputError("start", "must be 'beginning' or 'end'")
    return start  # type: ignore[no-any-return]


def check_on_undecodable(value: Any) -> Literal["raise", "raw"]:
    if value not in ("raise", "raw"):
        raise InvalidInputError("on_undecodable", f'must be "raise" or "raw", not {value!r}')
    return value  # type: ignore[no-any-return]


def check_seconds(value: Any, argument: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidInputError(argument, f"must be a number of seconds from {low} to {high}")
    return float(value)


def check_count(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise InvalidInputError(argument, "must be an int from 1 to 1,000,000")
    return value
