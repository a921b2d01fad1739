"""An event store behind a small HTTP API: Starlette, one EventStore per process.

::

    POST /aggregates/{id}/changesets
        {"expected_version": 0, "events": [{...}, ...], "commit_id": "..." (optional),
         "wait_seconds": 2.0 (optional: answer once the summaries read model has it)}
        201 {"version": 1, "commit_id": "..."}              + "projected": true/false when
                                                            wait_seconds was given
        409 {"error": "conflict", "expected": 0, "actual": 3}    reload, then retry
        400 {"error": "invalid_input", "argument": "...", "detail": "..."}
        503 {"error": "unavailable", ...}                         retry with the same commit_id
    GET /aggregates/{id}
        200 {"aggregate_id": "...", "version": 3, "events": [...]}
        404 {"error": "not_found", ...}
    GET /summaries/{id}                                  the read model (feed on)
        200 {"version": 3, "events": 5, "last_commit_id": "..."}
        404 {"error": "not_found", ...}                   not projected yet
    POST /accounts/{id}/open | deposit | withdraw, POST /transfers, GET /accounts/{id}
        commands on a bank account through a repository (examples/bank_api.py):
        422 for a refusal (overdraft), 409 only after 3 conflicting decides

With the global feed on (``feed_shards > 0``, as in ``--emulator`` and ``--memory``),
a subscription in the lifespan keeps a read model of per-aggregate summaries, written
with its checkpoint in one transaction (``Subscription.project``): CQRS's query side.

Run it (``pip install 'eventstore-async[web]'``)::

    EVENTSTORE_TABLE=events python -m examples.webapp --port 8000   # AWS, config from env
    python -m examples.webapp --emulator                              # embedded emulator
    python -m examples.webapp --stub http://127.0.0.1:9000            # a DynamoDB stub
    python -m examples.webapp --memory                                # in this process

The store is opened once, in the lifespan, and every request shares its pooled
connections. Events are JSON objects, stored as given and loaded back as dicts.
"""

import argparse
import functools
import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventstore_async import (
    AggregateNotFoundError,
    ChangeSet,
    CommitOutcomeUnknownError,
    ConcurrencyError,
    EventStore,
    EventStoreError,
    InvalidInputError,
    StorageUnavailableError,
    StoreClosedError,
    StoreConfig,
)

from . import bank_api

__all__ = ["AppendBody", "StoreFactory", "create_app", "main", "project_summaries"]

#: Opens the app's store: an ``EventStore`` (itself an async context manager), or any
#: async context manager that yields one.
StoreFactory = Callable[[], AbstractAsyncContextManager[EventStore]]


class AppendBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /aggregates/{id}/changesets``."""

    expected_version: int
    events: list[dict[str, Any]]
    commit_id: str | None = None
    #: Answer only once the summaries read model holds the change (read-your-writes),
    #: waiting at most this long (0 < wait_seconds <= 60; needs the feed).
    wait_seconds: float | None = None


_log = logging.getLogger("examples.webapp")

# Built once: msgspec's encoders and typed decoders are fastest reused.
_decode_append = msgspec.json.Decoder(AppendBody).decode
_encode = msgspec.json.Encoder().encode


def _json(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(content), status, headers, media_type="application/json")


async def append(request: Request) -> Response:
    body = _decode_append(await request.body())
    store: EventStore = request.app.state.store
    _check_wait(store, body.wait_seconds)  # before anything is written
    change_set = await store.append(
        request.path_params["aggregate_id"],
        body.events,
        expected_version=body.expected_version,
        commit_id=body.commit_id,
    )
    content: dict[str, Any] = {"version": change_set.version, "commit_id": change_set.commit_id}
    if body.wait_seconds is not None:
        content["projected"] = await _projected(store, change_set, body.wait_seconds)
    return _json(201, content)


def _check_wait(store: EventStore, seconds: float | None) -> None:
    if seconds is None:
        return
    if not 0 < seconds <= 60:
        raise InvalidInputError("wait_seconds", "must be more than 0 and at most 60")
    if not store.config.feed_shards:
        raise InvalidInputError("wait_seconds", "needs the feed (feed_shards > 0)")


async def _projected(store: EventStore, change_set: ChangeSet, seconds: float) -> bool:
    """Whether the summaries read model has the change within ``seconds``."""
    try:
        await store.wait_for(SUMMARIES_SUBSCRIPTION, change_set, timeout=seconds)
    except TimeoutError:
        return False
    return True


async def summary(request: Request) -> Response:
    store: EventStore = request.app.state.store
    aggregate_id = request.path_params["aggregate_id"]
    document = await store.get_view(SUMMARIES, aggregate_id)
    if document is None:
        return _json(404, {"error": "not_found", "aggregate_id": aggregate_id})
    return _json(200, document)


#: The read model's name, and the subscription that maintains it.
SUMMARIES = "summaries"
SUMMARIES_SUBSCRIPTION = "webapp-summaries"


async def project_summaries(store: EventStore) -> None:
    """Follow the feed; keep one summary document per aggregate. Exactly once: the
    document and the checkpoint are written together.

    It never takes the store (and the app) down with it: the subscription itself waits
    out an outage, and whatever else ends it (its lease taken over, a change set that
    does not decode) is logged and the subscription started again from its checkpoint.
    It ends only when the store closes.
    """
    failures = 0
    while True:
        try:
            await _follow_summaries(store)
        except StoreClosedError:
            return
        except EventStoreError:
            failures += 1
            _log.exception("the summaries projection stopped; starting it again")
            await anyio.sleep(min(0.5 * 2**failures, 30.0))


async def _follow_summaries(store: EventStore) -> None:
    async with store.subscribe(SUMMARIES_SUBSCRIPTION) as subscription:
        async for change_set in subscription:
            before = await store.get_view(SUMMARIES, change_set.aggregate_id) or {"events": 0}
            document = {
                "version": change_set.version,
                "events": before["events"] + change_set.event_count,
                "last_commit_id": change_set.commit_id,
            }
            await subscription.project(SUMMARIES, put={change_set.aggregate_id: document})


async def load(request: Request) -> Response:
    store: EventStore = request.app.state.store
    history = await store.load(request.path_params["aggregate_id"])
    content = {"aggregate_id": history.aggregate_id, "version": history.version}
    return _json(200, {**content, "events": history.events})


# -- errors to responses (Starlette picks the handler by the exception's class) -----------


async def bad_body(request: Request, exc: Exception) -> Response:
    return _json(400, {"error": "invalid_input", "argument": "body", "detail": str(exc)})


async def invalid_input(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInputError)
    content = {"error": "invalid_input", "argument": exc.argument, "detail": exc.problem}
    return _json(400, content)


async def conflict(request: Request, exc: Exception) -> Response:
    """The client reloads (GET), decides again, and retries at ``actual``."""
    assert isinstance(exc, ConcurrencyError)
    return _json(409, {"error": "conflict", "expected": exc.expected, "actual": exc.actual})


async def not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AggregateNotFoundError)
    return _json(404, {"error": "not_found", "aggregate_id": exc.aggregate_id})


async def unavailable(request: Request, exc: Exception) -> Response:
    """Throttled or unreachable after retries. A commit whose outcome is unknown may
    have landed: retrying with its ``commit_id`` stores it at most once."""
    content: dict[str, Any] = {"error": "unavailable", "detail": str(exc)}
    if isinstance(exc, CommitOutcomeUnknownError):
        content["commit_id"] = exc.commit_id
    return _json(503, content, headers={"Retry-After": "1"})


EXCEPTION_HANDLERS = {
    msgspec.DecodeError: bad_body,  # malformed JSON, or a field of the wrong type
    InvalidInputError: invalid_input,
    ConcurrencyError: conflict,
    AggregateNotFoundError: not_found,
    StorageUnavailableError: unavailable,
    **bank_api.EXCEPTION_HANDLERS,
}


def create_app(open_store: StoreFactory | None = None) -> Starlette:
    """The app; ``open_store`` opens its one store (default: ``StoreConfig.from_env()``).

    Tests pass ``EventStore.in_memory``.
    """
    factory = open_store or (lambda: EventStore(StoreConfig.from_env()))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with factory() as store, anyio.create_task_group() as background:
            app.state.store = store
            bank_api.prepare(store)
            if store.config.feed_shards:
                background.start_soon(project_summaries, store)
            # What is alive now lives as long as the app (~100k objects: the clients,
            # botocore's service models). Frozen, a full collection no longer walks them:
            # it took 30-50 ms every few seconds under load, most of the p99 at 500 req/s.
            gc.freeze()
            yield
            gc.unfreeze()
            background.cancel_scope.cancel()

    routes = [
        Route("/aggregates/{aggregate_id}/changesets", append, methods=["POST"]),
        Route("/aggregates/{aggregate_id}", load, methods=["GET"]),
        Route("/summaries/{aggregate_id}", summary, methods=["GET"]),
        *bank_api.ROUTES,
    ]
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)


# -- running it ------------------------------------------------------------------------


def local_config(endpoint_url: str, table_name: str, feed_shards: int = 0) -> StoreConfig:
    """A config for a local endpoint: it checks no signature, but botocore wants one."""
    return StoreConfig(
        table_name=table_name,
        endpoint_url=endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        feed_shards=feed_shards,
    )


@asynccontextmanager
async def emulator_store() -> AsyncIterator[EventStore]:
    """A store on the embedded emulator, started here, with its schema created."""
    from eventstore_async.emulator import Emulator  # needs the "emulator" extra

    async with (
        Emulator() as emulator,
        EventStore(local_config(emulator.endpoint_url, "webapp", feed_shards=4)) as store,
    ):
        await store.create_schema()
        yield store


def stub_store(endpoint_url: str) -> Callable[[], EventStore]:
    """A store on a DynamoDB-protocol stub (``benchmarks/stub_server.py``)."""
    config = local_config(endpoint_url, "bench")
    return lambda: EventStore(config)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.webapp",
        description="The example event store API, served by uvicorn. "
        "The store's config comes from EVENTSTORE_* variables unless a backend is named.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument("--emulator", action="store_true", help="start the embedded emulator")
    backend.add_argument("--stub", metavar="URL", help="a DynamoDB-protocol stub endpoint")
    backend.add_argument("--memory", action="store_true", help="an in-memory store (no AWS)")
    # "auto": uvloop and httptools when they are installed, else asyncio and h11.
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    open_store: StoreFactory | None = None
    if args.emulator:
        open_store = emulator_store
    elif args.stub:
        open_store = stub_store(args.stub)
    elif args.memory:
        open_store = functools.partial(EventStore.in_memory, feed_shards=4)
    uvicorn.run(
        create_app(open_store),
        host=args.host,
        port=args.port,
        loop=args.loop,
        http=args.http,
        access_log=args.access_log,  # off by default: a log line costs more than an append
        log_level="info" if args.access_log else "warning",
    )


if __name__ == "__main__":
    main()
