"""Shared fixtures: one contract suite, run against every backend.

``store`` is parametrized over the in-memory backend, the embedded emulator (a real
moto server process on 127.0.0.1, spoken to over HTTP), and, when
``EVENTSTORE_TEST_ENDPOINT_URL`` is set, that endpoint (LocalStack or AWS). Each test
gets a fresh table and bucket, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest

from eventstore_async import EventStore, StoreConfig
from eventstore_async.emulator import run_emulator
from eventstore_async.testing import Backend, DynamoDBBackend, MemoryBackend, memory_backend

from .domain import EVENT_TYPES

ENDPOINT_VARIABLE = "EVENTSTORE_TEST_ENDPOINT_URL"


def backend_names() -> list[str]:
    """memory, emulator, and endpoint when EVENTSTORE_TEST_ENDPOINT_URL is set."""
    names = ["memory", "emulator"]
    if os.environ.get(ENDPOINT_VARIABLE):
        names.append("endpoint")
    return names


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    with run_emulator() as url:
        yield url


def unique_names() -> dict[str, str]:
    token = uuid.uuid4().hex[:12]
    return {"table_name": f"es-test-{token}", "bucket_name": f"es-test-{token}"}


def remote_config(backend: str, request: pytest.FixtureRequest, **overrides: object) -> StoreConfig:
    """A config on a fresh table and bucket of the emulator or the given endpoint."""
    if backend == "emulator":
        url = request.getfixturevalue("emulator_url")
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        return StoreConfig(
            endpoint_url=url, region_name="us-east-1", **credentials, **unique_names(), **overrides
        )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return StoreConfig(
        endpoint_url=os.environ[ENDPOINT_VARIABLE],
        region_name=region,
        **unique_names(),
        **overrides,
    )


StoreFactory = Callable[..., EventStore]


@pytest.fixture(params=backend_names())
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(
    backend_name: str, request: pytest.FixtureRequest
) -> AsyncIterator[StoreFactory]:
    """Opens stores on this test's backend; every store shares one fresh schema.

    ``make_store(**config_overrides)`` returns an opened store. Its schema exists.
    ``wrap=`` puts a wrapper (a test double that fails calls on cue) in front of the
    store's backend. :func:`backend_of` gives the backend a store was made with.
    """
    opened: list[EventStore] = []
    shared_memory: list[tuple[StoreConfig, MemoryBackend]] = []
    base: StoreConfig | None = None
    if backend_name != "memory":
        base = remote_config(backend_name, request)

    async def factory(
        *,
        types: tuple[type[msgspec.Struct], ...] = EVENT_TYPES,
        wrap: Callable[[Backend], Backend] | None = None,
        **overrides: Any,
    ) -> EventStore:
        if base is None:
            config, backend = _memory_sibling(shared_memory, overrides)
        else:
            config = base.replace(**overrides)
            backend = DynamoDBBackend(config)
        store = store_on(config, wrap(backend) if wrap else backend, types=types)
        await store.__aenter__()
        opened.append(store)
        await store.create_schema()
        return store

    yield factory  # type: ignore[misc]
    for store in opened:
        await store.aclose()
    if opened and base is not None:  # with a store of its own: the test may have closed its
        async with EventStore(opened[0].config) as admin:
            await admin.drop_schema()


def _memory_sibling(
    shared: list[tuple[StoreConfig, MemoryBackend]], overrides: dict[str, Any]
) -> tuple[StoreConfig, MemoryBackend]:
    """In-memory stores of one test share their storage, as remote ones share a table
    (the first store's config, with this one's overrides)."""
    if not shared:
        settings: dict[str, Any] = {"table_name": "in-memory", "bucket_name": "in-memory"}
        config = StoreConfig(**{**settings, **overrides})
        shared.append((config, memory_backend(config)))
        return shared[0]
    first, backend = shared[0]
    return first.replace(**overrides), backend


_BACKENDS: weakref.WeakKeyDictionary[EventStore, Backend] = weakref.WeakKeyDictionary()


def store_on(
    config: StoreConfig, backend: Backend, *, types: tuple[type[msgspec.Struct], ...] = EVENT_TYPES
) -> EventStore:
    """A store (not opened) on ``backend``, which :func:`backend_of` returns for it."""
    store = EventStore(config, types=types, backend=backend)
    _BACKENDS[store] = backend
    return store


def in_memory(**config: Any) -> EventStore:
    """``EventStore.in_memory(**config)``, with its backend known to :func:`backend_of`."""
    settings: dict[str, Any] = {"table_name": "in-memory", "bucket_name": "in-memory"}
    store_config = StoreConfig(**{**settings, **config})
    return store_on(store_config, memory_backend(store_config))


class Counted:
    """A decide function that counts its calls."""

    def __init__(self, decide: Any) -> None:
        self.decide = decide
        self.calls = 0

    def __call__(self, state: Any) -> Any:
        self.calls += 1
        return self.decide(state)


def backend_of(store: EventStore) -> Any:
    """The backend a store of :func:`store_on` (or of ``make_store``) was made with:
    tests read and disturb the storage through it."""
    return _BACKENDS[store]


@pytest.fixture
async def store(make_store: StoreFactory) -> EventStore:
    return await make_store()  # type: ignore[no-any-return]
