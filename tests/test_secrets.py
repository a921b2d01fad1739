"""Credentials stay secret: not in reprs, error messages or DEBUG logs; TLS is verified.

The emulator does not check signatures, so any keys work against it; these are made
distinctive so a leak anywhere is found by a plain substring search.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterator

import pytest

from eventstore_async import (
    EventStore,
    EventStoreError,
    SchemaMissingError,
    StorageUnavailableError,
    StoreConfig,
)
from eventstore_async._backends.aws.session import _client_kwargs

ACCESS_KEY = "AKIACHAOSTESTKEY0001"
SECRET_KEY = "s3cr3t/Do-Not+Leak-0123456789abcdefghijklm"
SESSION_TOKEN = "FwoGZXIvYXdzEDoaDSESSIONTOKEN0123456789sessiontokenvalue"


def secret_config(**overrides: object) -> StoreConfig:
    name = f"secrets-{uuid.uuid4().hex[:12]}"
    settings: dict[str, object] = {
        "table_name": name,
        "bucket_name": name,
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
        "aws_session_token": SESSION_TOKEN,
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "max_attempts": 1,
    }
    settings.update(overrides)
    return StoreConfig(**settings)  # type: ignore[arg-type]


def exception_texts(exc: BaseException) -> Iterator[str]:
    """str, repr and the formatted traceback of an error and its whole cause chain."""
    yield "".join(traceback.format_exception(exc))
    seen: BaseException | None = exc
    while seen is not None:
        yield str(seen)
        yield repr(seen)
        yield repr(seen.args)
        seen = seen.__cause__ or seen.__context__


def assert_no_secret(texts: Iterator[str] | list[str], *secrets: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a credential leaked: ...{text[:300]}..."


# -- reprs --------------------------------------------------------------------------------


def test_config_repr_and_str_hide_every_credential() -> None:
    config = secret_config()
    for text in (repr(config), str(config), repr(config.replace(read_timeout=3.0))):
        assert_no_secret([text], ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
    assert config.aws_secret_access_key == SECRET_KEY  # kept, only hidden


def test_store_repr_hides_credentials() -> None:
    store = EventStore(secret_config())
    assert_no_secret([repr(store), str(store), repr(store.config)], SECRET_KEY, SESSION_TOKEN)


# -- errors -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_refused_calls_do_not_show_credentials(emulator_url: str) -> None:
    """A call the emulator refuses (no such table) and one to an unreachable endpoint."""
    raised: list[BaseException] = []
    async with EventStore(secret_config(endpoint_url=emulator_url)) as store:
        with pytest.raises(SchemaMissingError) as missing:
            await store.load("order-1")
        raised.append(missing.value)
        with pytest.raises(SchemaMissingError) as missing_append:
            await store.append("order-1", [{"n": 1}], expected_version=0)
        raised.append(missing_append.value)
    async with EventStore(secret_config(endpoint_url="http://127.0.0.1:9")) as store:
        with pytest.raises(StorageUnavailableError) as unreachable:
            await store.head("order-1")
        raised.append(unreachable.value)
    for exc in raised:
        assert isinstance(exc, EventStoreError)
        assert_no_secret(exception_texts(exc), SECRET_KEY, SESSION_TOKEN)


# -- logs ---------------------------------------------------------------------------------


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG (botocore, aiobotocore, eventstore_async...), captured."""
    caplog.set_level(logging.DEBUG)
    return caplog


async def exercise(emulator_url: str, config: StoreConfig) -> None:
    async with EventStore(config.replace(endpoint_url=emulator_url)) as store:
        await store.create_schema()
        try:
            await store.append("order-1", [{"n": 1}], expected_version=0, metadata={"u": "a"})
            await store.load("order-1")
            await store.head("order-1")
        finally:
            await store.drop_schema()


def record_texts(records: list[logging.LogRecord]) -> list[str]:
    texts = []
    for record in records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            texts.extend(exception_texts(record.exc_info[1]))
    return texts


@pytest.mark.anyio
async def test_debug_logs_never_show_the_secret_key(
    emulator_url: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    await exercise(emulator_url, secret_config(aws_session_token=None))
    debug_records = debug_logs.records
    names = {record.name.split(".")[0] for record in debug_records}
    assert "botocore" in names, "botocore's DEBUG records were not captured: the test shows nothing"
    assert_no_secret(record_texts(debug_records), SECRET_KEY)


@pytest.mark.anyio
async def test_debug_logs_never_show_the_session_token(
    emulator_url: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    await exercise(emulator_url, secret_config())
    assert_no_secret(record_texts(debug_logs.records), SESSION_TOKEN)


# -- TLS ----------------------------------------------------------------------------------


def test_tls_is_verified_by_default() -> None:
    config = StoreConfig(table_name="events")
    assert config.verify_tls is True
    assert _client_kwargs(config)["verify"] is True
    remote = StoreConfig(table_name="events", endpoint_url="https://dynamodb.example")
    assert _client_kwargs(remote)["verify"] is True
    assert StoreConfig.from_env({"EVENTSTORE_TABLE": "events"}).verify_tls is True


def test_tls_verification_is_off_only_when_asked() -> None:
    config = StoreConfig(table_name="events", verify_tls=False)
    assert _client_kwargs(config)["verify"] is False
    assert (
        StoreConfig.from_env(
            {"EVENTSTORE_TABLE": "events", "EVENTSTORE_VERIFY_TLS": "0"}
        ).verify_tls
        is False
    )
