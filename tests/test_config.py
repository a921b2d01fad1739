"""StoreConfig: frozen, keyword-only, validated; from_env() and replace()."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from eventstore_async import InvalidInputError, StoreConfig

SECRETS: dict[str, Any] = {
    "aws_access_key_id": "AKIAEXAMPLEKEYID0001",
    "aws_secret_access_key": "wJalrXUtnFEMI-secret-value-0002",
    "aws_session_token": "FwoGZXIvYXdz-session-token-0003",
}


def _rejected(argument: str, **fields: Any) -> InvalidInputError:
    fields.setdefault("table_name", "events")
    with pytest.raises(InvalidInputError) as caught:
        StoreConfig(**fields)
    assert caught.value.argument == argument
    return caught.value


# -- shape ------------------------------------------------------------------------------


def test_defaults() -> None:
    config = StoreConfig(table_name="events")
    assert config.table_name == "events"
    assert config.bucket_name is None
    assert config.region_name == "us-east-1"
    assert config.endpoint_url is None
    assert config.page_size is None
    assert config.verify_tls is True


def test_is_frozen() -> None:
    config = StoreConfig(table_name="events")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.table_name = "other"  # type: ignore[misc]
    assert config.table_name == "events"


def test_has_no_instance_dict() -> None:
    # slots: a typo'd attribute cannot be set behind validation's back.
    config = StoreConfig(table_name="events")
    with pytest.raises((AttributeError, TypeError)):
        config.tabel_name = "x"  # type: ignore[attr-defined]


def test_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        StoreConfig("events")  # type: ignore[call-arg]


def test_table_name_is_required() -> None:
    with pytest.raises(TypeError):
        StoreConfig()  # type: ignore[call-arg]


def test_equal_configs_compare_equal() -> None:
    assert StoreConfig(table_name="events") == StoreConfig(table_name="events")
    assert StoreConfig(table_name="events") != StoreConfig(table_name="events2")


# -- valid values -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abc", "a" * 255, "Events_2024.v1-x", "my.table"])
def test_valid_table_names(name: str) -> None:
    assert StoreConfig(table_name=name).table_name == name


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "events-changesets", "my.bucket.1"])
def test_valid_bucket_names(bucket: str) -> None:
    assert StoreConfig(table_name="events", bucket_name=bucket).bucket_name == bucket


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:4566", "https://dynamodb.eu-west-1.amazonaws.com"]
)
def test_valid_endpoint_urls(url: str) -> None:
    assert StoreConfig(table_name="events", endpoint_url=url).endpoint_url == url


def test_int_timeouts_are_accepted() -> None:
    config = StoreConfig(table_name="events", connect_timeout=1, read_timeout=30)
    assert config.connect_timeout == 1
    assert config.read_timeout == 30


def test_boundary_numbers_are_accepted() -> None:
    config = StoreConfig(
        table_name="events",
        max_pool_connections=1,
        max_attempts=1,
        conflict_retries=0,
        page_size=1,
        verify_tls=False,
    )
    assert (config.max_pool_connections, config.conflict_retries, config.page_size) == (1, 0, 1)


# -- invalid values: the error names the field ------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["", "ab", "a" * 256, "my table", "tab/le", "tablé", "events!", None, 123],
    ids=repr,
)
def test_bad_table_name(name: object) -> None:
    _rejected("table_name", table_name=name)


@pytest.mark.parametrize(
    "bucket",
    ["MyBucket", "UPPER", "ab", "a" * 64, "my_bucket", "-bucket", "bucket-", "my bucket", ""],
    ids=repr,
)
def test_bad_bucket_name(bucket: str) -> None:
    _rejected("bucket_name", bucket_name=bucket)


def test_bucket_name_not_a_str() -> None:
    _rejected("bucket_name", bucket_name=b"events")


@pytest.mark.parametrize("region", ["", None, 1])
def test_bad_region(region: object) -> None:
    _rejected("region_name", region_name=region)


@pytest.mark.parametrize(
    "url", ["localhost:4566", "127.0.0.1:4566", "ftp://host", "//host", "", b"http://x"], ids=repr
)
def test_bad_endpoint_url(url: object) -> None:
    _rejected("endpoint_url", endpoint_url=url)


@pytest.mark.parametrize("value", [0, -1, 10_001, True, False, "64", 8.0, None], ids=repr)
def test_bad_max_pool_connections(value: object) -> None:
    _rejected("max_pool_connections", max_pool_connections=value)


@pytest.mark.parametrize("value", [0, 21, True, "4"], ids=repr)
def test_bad_max_attempts(value: object) -> None:
    _rejected("max_attempts", max_attempts=value)


@pytest.mark.parametrize("value", [-1, 101, 1.5, False], ids=repr)
def test_bad_conflict_retries(value: object) -> None:
    _rejected("conflict_retries", conflict_retries=value)


@pytest.mark.parametrize(
    "field", ["connect_timeout", "read_timeout", "backoff_base", "backoff_max"]
)
@pytest.mark.parametrize(
    "value", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, True, "2", None], ids=repr
)
def test_bad_durations(field: str, value: object) -> None:
    _rejected(field, **{field: value})


@pytest.mark.parametrize("value", [0, -5, 1_000_001, True, "100", 10.0], ids=repr)
def test_bad_page_size(value: object) -> None:
    _rejected("page_size", page_size=value)


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None], ids=repr)
def test_bad_verify_tls(value: object) -> None:
    _rejected("verify_tls", verify_tls=value)


def test_invalid_input_error_is_also_a_value_error() -> None:
    error = _rejected("page_size", page_size=0)
    assert isinstance(error, ValueError)
    assert "page_size" in str(error)


@pytest.mark.parametrize(
    "fields",
    [{"table_name": "events\n"}, {"table_name": "events", "bucket_name": "my-bucket\n"}],
    ids=["table_name", "bucket_name"],
)
def test_trailing_newline_in_names_is_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        StoreConfig(**fields)


# -- secrets never shown ----------------------------------------------------------------


def test_repr_hides_credentials() -> None:
    config = StoreConfig(table_name="events", **SECRETS)
    for text in (repr(config), str(config)):
        assert "events" in text
        for secret in SECRETS.values():
            assert secret not in text
        for field in SECRETS:
            assert field not in text


def test_credentials_are_kept() -> None:
    config = StoreConfig(table_name="events", **SECRETS)
    assert config.aws_secret_access_key == SECRETS["aws_secret_access_key"]
    assert config.aws_access_key_id == SECRETS["aws_access_key_id"]
    assert config.aws_session_token == SECRETS["aws_session_token"]


def test_repr_of_replaced_config_hides_credentials() -> None:
    config = StoreConfig(table_name="events").replace(**SECRETS)
    assert all(secret not in repr(config) for secret in SECRETS.values())


# -- from_env ---------------------------------------------------------------------------


def test_from_env_reads_names_and_endpoint() -> None:
    config = StoreConfig.from_env(
        {
            "EVENTSTORE_TABLE": "orders",
            "EVENTSTORE_BUCKET": "orders-changesets",
            "EVENTSTORE_ENDPOINT_URL": "http://127.0.0.1:5000",
        }
    )
    assert config.table_name == "orders"
    assert config.bucket_name == "orders-changesets"
    assert config.endpoint_url == "http://127.0.0.1:5000"
    assert config.region_name == "us-east-1"


def test_from_env_ignores_unrelated_variables() -> None:
    config = StoreConfig.from_env({"EVENTSTORE_TABLE": "orders", "HOME": "/root", "TABLE": "x"})
    assert config == StoreConfig(table_name="orders")


def test_from_env_aws_region() -> None:
    config = StoreConfig.from_env({"EVENTSTORE_TABLE": "orders", "AWS_REGION": "eu-west-1"})
    assert config.region_name == "eu-west-1"


def test_from_env_aws_default_region() -> None:
    environ = {"EVENTSTORE_TABLE": "orders", "AWS_DEFAULT_REGION": "ap-south-1"}
    assert StoreConfig.from_env(environ).region_name == "ap-south-1"


def test_from_env_aws_region_wins_over_default_region() -> None:
    environ = {
        "EVENTSTORE_TABLE": "orders",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "ap-south-1",
    }
    assert StoreConfig.from_env(environ).region_name == "eu-west-1"


def test_from_env_eventstore_region_wins_over_aws_region() -> None:
    environ = {
        "EVENTSTORE_TABLE": "orders",
        "EVENTSTORE_REGION": "us-west-2",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "ap-south-1",
    }
    assert StoreConfig.from_env(environ).region_name == "us-west-2"


def test_from_env_parses_numbers() -> None:
    config = StoreConfig.from_env(
        {
            "EVENTSTORE_TABLE": "orders",
            "EVENTSTORE_MAX_POOL_CONNECTIONS": "16",
            "EVENTSTORE_CONNECT_TIMEOUT": "0.5",
            "EVENTSTORE_READ_TIMEOUT": "3",
            "EVENTSTORE_MAX_ATTEMPTS": "7",
            "EVENTSTORE_CONFLICT_RETRIES": "0",
            "EVENTSTORE_PAGE_SIZE": "25",
        }
    )
    assert config.max_pool_connections == 16
    assert isinstance(config.max_pool_connections, int)
    assert config.connect_timeout == 0.5
    assert config.read_timeout == 3.0
    assert isinstance(config.read_timeout, float)
    assert config.max_attempts == 7
    assert config.conflict_retries == 0
    assert config.page_size == 25


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_from_env_parses_bools(raw: str, expected: bool) -> None:
    environ = {"EVENTSTORE_TABLE": "orders", "EVENTSTORE_VERIFY_TLS": raw}
    assert StoreConfig.from_env(environ).verify_tls is expected


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("EVENTSTORE_MAX_POOL_CONNECTIONS", "many"),
        ("EVENTSTORE_MAX_POOL_CONNECTIONS", "1.5"),
        ("EVENTSTORE_PAGE_SIZE", "ten"),
        ("EVENTSTORE_MAX_ATTEMPTS", ""),
        ("EVENTSTORE_CONNECT_TIMEOUT", "fast"),
        ("EVENTSTORE_VERIFY_TLS", "maybe"),
    ],
)
def test_from_env_unparsable_value_names_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        StoreConfig.from_env({"EVENTSTORE_TABLE": "orders", variable: raw})
    assert caught.value.argument == variable
    assert repr(raw) in str(caught.value)


def test_from_env_out_of_range_value_names_the_field() -> None:
    environ = {"EVENTSTORE_TABLE": "orders", "EVENTSTORE_MAX_POOL_CONNECTIONS": "0"}
    with pytest.raises(InvalidInputError) as caught:
        StoreConfig.from_env(environ)
    assert caught.value.argument == "max_pool_connections"


def test_from_env_invalid_table_name_is_rejected() -> None:
    with pytest.raises(InvalidInputError) as caught:
        StoreConfig.from_env({"EVENTSTORE_TABLE": "x"})
    assert caught.value.argument == "table_name"


def test_from_env_without_table_raises() -> None:
    with pytest.raises(InvalidInputError) as caught:
        StoreConfig.from_env({"EVENTSTORE_BUCKET": "orders-changesets"})
    assert caught.value.argument == "EVENTSTORE_TABLE"


def test_from_env_without_table_accepts_a_table_override() -> None:
    assert StoreConfig.from_env({}, table_name="orders").table_name == "orders"


def test_from_env_overrides_win() -> None:
    config = StoreConfig.from_env(
        {
            "EVENTSTORE_TABLE": "orders",
            "EVENTSTORE_PAGE_SIZE": "25",
            "AWS_REGION": "eu-west-1",
            "EVENTSTORE_VERIFY_TLS": "false",
        },
        table_name="payments",
        page_size=100,
        region_name="us-east-2",
        verify_tls=True,
    )
    assert config.table_name == "payments"
    assert config.page_size == 100
    assert config.region_name == "us-east-2"
    assert config.verify_tls is True


def test_from_env_overrides_are_validated() -> None:
    with pytest.raises(InvalidInputError) as caught:
        StoreConfig.from_env({"EVENTSTORE_TABLE": "orders"}, page_size=0)
    assert caught.value.argument == "page_size"


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTORE_TABLE", "from-os-environ")
    monkeypatch.setenv("EVENTSTORE_READ_TIMEOUT", "4.5")
    config = StoreConfig.from_env()
    assert config.table_name == "from-os-environ"
    assert config.read_timeout == 4.5


# -- replace ----------------------------------------------------------------------------


def test_replace_returns_a_changed_copy() -> None:
    config = StoreConfig(table_name="events", page_size=10)
    changed = config.replace(page_size=20, bucket_name="events-bucket")
    assert (changed.page_size, changed.bucket_name) == (20, "events-bucket")
    assert changed.table_name == "events"
    assert (config.page_size, config.bucket_name) == (10, None)


def test_replace_keeps_credentials() -> None:
    config = StoreConfig(table_name="events", **SECRETS).replace(read_timeout=5.0)
    assert config.aws_secret_access_key == SECRETS["aws_secret_access_key"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("table_name", "x"),
        ("bucket_name", "Upper"),
        ("endpoint_url", "localhost:1"),
        ("read_timeout", math.nan),
        ("max_pool_connections", 0),
        ("verify_tls", "yes"),
    ],
)
def test_replace_validates_again(field: str, value: object) -> None:
    config = StoreConfig(table_name="events")
    with pytest.raises(InvalidInputError) as caught:
        config.replace(**{field: value})
    assert caught.value.argument == field
