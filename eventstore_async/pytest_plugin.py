"""pytest fixtures for testing an application built on eventstore_async.

Installed with the package and loaded by pytest through the ``pytest11`` entry point;
nothing to import. The async fixtures run under anyio's pytest plugin (mark the tests
``@pytest.mark.anyio``)::

    @pytest.mark.anyio
    async def test_open_account(event_store):
        await event_store.append("acc-1", [Opened(owner="ada")], expected_version=0)
        assert (await event_store.head("acc-1")).version == 1

Fixtures:

- ``event_store``: a fresh in-memory store per test (``EventStore.in_memory``).
- ``eventstore_emulator``: the endpoint URL of one embedded emulator for the session
  (started on first use, stopped at the end), or of ``eventstore_endpoint_url`` when
  that ini option is set.
- ``emulator_store``: a store on a fresh table and bucket of that emulator per test;
  the schema is created before the test and dropped after it.

What to override (in your ``conftest.py``):

- ``eventstore_types`` -> the event Struct types the stores decode (default none: events
  load as raw mappings).
- ``eventstore_config`` -> a dict of :class:`~eventstore_async.StoreConfig` fields for
  both stores (``feed_shards``, ``offload_threshold_bytes``...).

ini options: ``eventstore_endpoint_url`` (use that endpoint instead of starting the
emulator; credentials and region as boto3 finds them, e.g. ``AWS_REGION``) and
``eventstore_emulator_startup_timeout`` (seconds, default 30).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

from eventstore_async import EventStore, StoreConfig
from eventstore_async.emulator import run_emulator

__all__ = [
    "emulator_store",
    "event_store",
    "eventstore_config",
    "eventstore_emulator",
    "eventstore_types",
]

_ENDPOINT_INI = "eventstore_endpoint_url"
_STARTUP_INI = "eventstore_emulator_startup_timeout"
_EMULATOR_SETTINGS: dict[str, Any] = {
    "region_name": "us-east-1",
    "aws_access_key_id": "test",
    "aws_secret_access_key": "test",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the plugin's ini options."""
    parser.addini(
        _ENDPOINT_INI,
        "eventstore_async: run emulator_store against this endpoint instead of starting "
        "the embedded emulator",
        default="",
    )
    parser.addini(
        _STARTUP_INI,
        "eventstore_async: seconds the embedded emulator may take to start",
        default="30",
    )


@pytest.fixture
def eventstore_types() -> tuple[type[msgspec.Struct], ...]:
    """The event types the fixtures' stores decode; override to name yours."""
    return ()


@pytest.fixture
def eventstore_config() -> dict[str, Any]:
    """StoreConfig fields for the fixtures' stores; override to set yours."""
    return {}


@pytest.fixture(scope="session")
def eventstore_emulator(pytestconfig: pytest.Config) -> Iterator[str]:
    """The endpoint URL of the session's emulator (or of ``eventstore_endpoint_url``)."""
    endpoint = str(pytestconfig.getini(_ENDPOINT_INI) or "")
    if endpoint:
        yield endpoint
        return
    timeout = float(pytestconfig.getini(_STARTUP_INI))
    with run_emulator(startup_timeout=timeout) as url:
        yield url


@pytest.fixture
async def event_store(
    eventstore_types: tuple[type[msgspec.Struct], ...], eventstore_config: dict[str, Any]
) -> AsyncIterator[EventStore]:
    """A fresh in-memory store, open for the test and closed after it."""
    async with EventStore.in_memory(types=eventstore_types, **eventstore_config) as store:
        yield store


@pytest.fixture
async def emulator_store(
    eventstore_emulator: str,
    eventstore_types: tuple[type[msgspec.Struct], ...],
    eventstore_config: dict[str, Any],
    pytestconfig: pytest.Config,
) -> AsyncIterator[EventStore]:
    """A store on a fresh table and bucket of the emulator; dropped after the test."""
    token = uuid.uuid4().hex[:12]
    settings: dict[str, Any] = {
        "table_name": f"test-{token}",
        "bucket_name": f"test-{token}",
        "endpoint_url": eventstore_emulator,
    }
    if not pytestconfig.getini(_ENDPOINT_INI):
        settings.update(_EMULATOR_SETTINGS)
    config = StoreConfig(**{**settings, **eventstore_config})
    async with EventStore(config, types=eventstore_types) as store:
        await store.create_schema()
        try:
            yield store
        finally:  # with a store of its own: the test may have closed this one
            async with EventStore(config) as admin:
                await admin.drop_schema()
