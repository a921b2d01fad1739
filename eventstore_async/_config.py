"""Store configuration: one small, frozen, validated object."""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from ._errors import InvalidInputError

__all__ = ["StoreConfig"]

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{1,30}[a-z0-9]")
_KEY_PREFIX = re.compile(r"(?!/)[A-Za-z0-9._/-]{0,255}/")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

# DynamoDB caps an item at 400 KB, names and values included. A change set item
# carries about 200 bytes of keys and attributes besides its payload plus the
# metadata, so payloads are checked against this with the real item size.
DYNAMODB_ITEM_LIMIT = 400 * 1024
DYNAMODB_TRANSACTION_LIMIT = 4 * 1024 * 1024
#: Encoded metadata stays inline; with the largest threshold it still fits an item.
MAX_METADATA_BYTES = 64 * 1024
#: Inline payload + metadata + keys and attributes stay under the item limit.
MAX_OFFLOAD_THRESHOLD = 256 * 1024

# Environment variables read by StoreConfig.from_env(), with the field each sets.
_ENV_FIELDS: dict[str, str] = {
    "EVENTSTORE_TABLE": "table_name",
    "EVENTSTORE_BUCKET": "bucket_name",
    "EVENTSTORE_ENDPOINT_URL": "endpoint_url",
    "EVENTSTORE_REGION": "region_name",
    "EVENTSTORE_MAX_POOL_CONNECTIONS": "max_pool_connections",
    "EVENTSTORE_CONNECT_TIMEOUT": "connect_timeout",
    "EVENTSTORE_READ_TIMEOUT": "read_timeout",
    "EVENTSTORE_MAX_ATTEMPTS": "max_attempts",
    "EVENTSTORE_CONFLICT_RETRIES": "conflict_retries",
    "EVENTSTORE_PAGE_SIZE": "page_size",
    "EVENTSTORE_VERIFY_TLS": "verify_tls",
    "EVENTSTORE_OFFLOAD_THRESHOLD_BYTES": "offload_threshold_bytes",
    "EVENTSTORE_PART_SIZE_BYTES": "part_size_bytes",
    "EVENTSTORE_UPLOAD_CONCURRENCY": "upload_concurrency",
    "EVENTSTORE_KEY_PREFIX": "key_prefix",
    "EVENTSTORE_COMPRESSION": "compression",
    "EVENTSTORE_FEED_SHARDS": "feed_shards",
    "EVENTSTORE_FAST_PATH": "fast_path",
    "EVENTSTORE_TRACE_AGGREGATE_IDS": "trace_aggregate_ids",
}


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class StoreConfig:
    """Where the store keeps its data and how it talks to AWS.

    Credentials default to botocore's chain (environment, profile, instance role);
    the explicit ``aws_*`` fields are for emulators and tests and never appear in
    ``repr()``.

    Raises:
        InvalidInputError: a field is out of range; ``argument`` names it.
    """

    table_name: str
    bucket_name: str | None = None
    region_name: str = "us-east-1"
    endpoint_url: str | None = None
    aws_access_key_id: str | None = dataclasses.field(default=None, repr=False)
    aws_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    aws_session_token: str | None = dataclasses.field(default=None, repr=False)
    #: HTTP connections kept per client; size it for the concurrent operations.
    max_pool_connections: int = 64
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    #: Attempts per request for throttling and transient errors (botocore "standard" mode).
    max_attempts: int = 4
    #: Extra attempts of an append cancelled by TransactionConflict, or of an
    #: ``ANY``-version append that lost a race, with full-jitter backoff.
    conflict_retries: int = 8
    backoff_base: float = 0.005
    backoff_max: float = 0.5
    #: Items per Query page; ``None`` lets DynamoDB fill 1 MB pages.
    page_size: int | None = None
    verify_tls: bool = True
    #: A change set whose encoded events are larger goes to S3 (when ``bucket_name`` is
    #: set). See the README ("Oversized change sets") for why 64 KiB.
    offload_threshold_bytes: int = 64 * 1024
    #: Multipart part size (S3: 5 MiB to 5 GiB). An upload holds about
    #: ``2 * (upload_concurrency + 1) * part_size_bytes`` (each part in flight is
    #: copied once by the HTTP stack): 50 MiB with the defaults.
    part_size_bytes: int = 5 * 1024 * 1024
    upload_concurrency: int = 4
    #: Offloaded payloads fetched at once when a history holds several.
    fetch_concurrency: int = 8
    #: Objects are written under this prefix.
    key_prefix: str = "changesets/"
    #: ``"zlib"`` compresses offloaded payloads (about 3x on typical events, at
    #: ~86 MB/s of one core); ``None`` stores them as they are.
    compression: str | None = None
    #: Shards of the global feed (0: no feed, appends pay nothing for it). Every store
    #: on a table must use the count recorded in it (refused otherwise). See the README
    #: ("Global feed").
    feed_shards: int = 0
    #: An append or snapshot save that has not committed after this long stops
    #: retrying (see the README's retry policy). Bounds every retry loop that can
    #: commit a pointer to an object, and with it the sweep's grace.
    append_deadline_seconds: float = 60.0
    #: An upload that takes longer is deleted instead of committed, which bounds how
    #: long an object can wait for its transaction (see ``sweep_orphans``).
    max_upload_seconds: float = 900.0
    #: Send DynamoDB's data-plane calls (TransactWriteItems, Query, GetItem, BatchGetItem)
    #: on the fast path (``_backends/aws/wire.py``: the same requests, signing, retries and errors,
    #: at a third of the CPU). It is used only with the aiobotocore/botocore versions it
    #: was tested with; ``False`` sends every call through the stock aiobotocore client.
    fast_path: bool = True
    #: Put aggregate ids on OpenTelemetry spans (``eventstore.aggregate_id``). Off by
    #: default: ids are unbounded in number and may be personal data.
    trace_aggregate_ids: bool = False

    @property
    def commit_window_seconds(self) -> float:
        """The longest an append or snapshot save may still commit after its object
        was started: the upload (at most ``max_upload_seconds``), the deadline
        (``append_deadline_seconds``), and one more request time for a transaction
        sent just before the deadline."""
        return (
            self.max_upload_seconds
            + self.append_deadline_seconds
            + self.connect_timeout
            + self.read_timeout
        )

    def __post_init__(self) -> None:
        _check_names(self)
        _check_numbers(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> StoreConfig:
        """Build a config from ``EVENTSTORE_*`` variables (and ``AWS_REGION``).

        Keyword arguments override what the environment says.
        """
        env = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            values["region_name"] = region
        for variable, name in _ENV_FIELDS.items():
            if variable in env:
                values[name] = _parse(variable, env[variable], fields[name].type)
        values.update(overrides)
        if "table_name" not in values:
            raise InvalidInputError("EVENTSTORE_TABLE", "is not set")
        return cls(**values)

    def replace(self, **changes: Any) -> StoreConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _parse(variable: str, raw: str, annotation: Any) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("bool"):
            return _parse_bool(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise InvalidInputError(variable, f"cannot parse {raw!r} as {kind}") from None
    return raw


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


def _check_names(config: StoreConfig) -> None:
    if not isinstance(config.table_name, str) or not _TABLE_NAME.fullmatch(config.table_name):
        raise InvalidInputError(
            "table_name", "must be 3-255 characters of letters, digits, '_', '-', '.'"
        )
    bucket = config.bucket_name
    if bucket is not None and (not isinstance(bucket, str) or not _BUCKET_NAME.fullmatch(bucket)):
        raise InvalidInputError(
            "bucket_name", "must be 3-63 characters of lowercase letters, digits, '.', '-'"
        )
    region = config.region_name
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise InvalidInputError("region_name", "must be a region name such as 'us-east-1'")
    _check_endpoint(config.endpoint_url)
    for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidInputError(name, "must be a non-empty str or None")  # value not shown


def _check_endpoint(url: object) -> None:
    if url is None:
        return
    problem = "must be an http:// or https:// URL with a host"
    if not isinstance(url, str) or any(c.isspace() for c in url):
        raise InvalidInputError("endpoint_url", problem)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError:
        raise InvalidInputError("endpoint_url", problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise InvalidInputError("endpoint_url", problem)


_SECONDS_LIMITS: dict[str, float] = {
    "connect_timeout": 3600,
    "read_timeout": 3600,
    "backoff_base": 60,
    "backoff_max": 3600,
    "max_upload_seconds": 86400,
    "append_deadline_seconds": 3600,
}


def _check_numbers(config: StoreConfig) -> None:
    _require_int(config, "max_pool_connections", 1, 10_000)
    _require_int(config, "max_attempts", 1, 20)
    _require_int(config, "conflict_retries", 0, 100)
    if config.page_size is not None:
        _require_int(config, "page_size", 1, 1_000_000)
    _require_int(config, "offload_threshold_bytes", 1, MAX_OFFLOAD_THRESHOLD)
    _require_int(config, "part_size_bytes", 5 * 1024 * 1024, 5 * 1024**3)
    _require_int(config, "upload_concurrency", 1, 64)
    _require_int(config, "fetch_concurrency", 1, 256)
    _require_int(config, "feed_shards", 0, 1024)
    if config.compression not in (None, "zlib"):
        raise InvalidInputError("compression", "must be None or 'zlib'")
    prefix = config.key_prefix
    if not isinstance(prefix, str) or not _KEY_PREFIX.fullmatch(prefix):
        raise InvalidInputError(
            "key_prefix",
            "must be 1-256 characters of A-Za-z0-9 ._-/ ending in '/', not starting with '/'",
        )
    for name, most in _SECONDS_LIMITS.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError(name, "must be a number of seconds")
        if not 0 < value <= most:  # compares ints of any size without OverflowError
            raise InvalidInputError(name, f"must be more than 0 and at most {most} seconds")
    for flag in ("verify_tls", "fast_path", "trace_aggregate_ids"):
        if not isinstance(getattr(config, flag), bool):
            raise InvalidInputError(flag, "must be True or False")


def _require_int(config: StoreConfig, name: str, low: int, high: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(name, "must be an int")
    if not low <= value <= high:
        raise InvalidInputError(name, f"must be between {low} and {high}, got {value}")
