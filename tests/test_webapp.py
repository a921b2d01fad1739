"""The example web app (examples/webapp.py), driven in-process on the in-memory store."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from eventstore_async import (
    ANY,
    CommitOutcomeUnknownError,
    EventStore,
    StorageUnavailableError,
    StoreConfig,
)
from eventstore_async._records import CommitPlan, PutChangeSet
from eventstore_async.testing import MemoryBackend
from examples.bank import EVENT_TYPES, Deposited
from examples.webapp import create_app

pytestmark = pytest.mark.anyio

ORDER_PLACED = {"type": "OrderPlaced", "customer": "ada"}
ITEM_ADDED = {"type": "ItemAdded", "sku": "book", "qty": 2}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # httpx's ASGITransport sends no lifespan events: run the app's lifespan here.
    app = create_app(EventStore.in_memory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def post(client: httpx.AsyncClient, aggregate_id: str, **body: object) -> httpx.Response:
    return await client.post(f"/aggregates/{aggregate_id}/changesets", json=body)


async def test_append_then_load(client: httpx.AsyncClient) -> None:
    first = await post(client, "order-1", expected_version=0, events=[ORDER_PLACED])
    second = await post(client, "order-1", expected_version=1, events=[ITEM_ADDED], commit_id="c-2")

    assert first.status_code == 201
    assert first.json()["version"] == 1
    assert first.json()["commit_id"]
    assert (second.status_code, second.json()) == (201, {"version": 2, "commit_id": "c-2"})
    loaded = await client.get("/aggregates/order-1")
    assert loaded.status_code == 200
    assert loaded.json() == {
        "aggregate_id": "order-1",
        "version": 2,
        "events": [ORDER_PLACED, ITEM_ADDED],
    }


async def test_retry_with_same_commit_id_lands_once(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        response = await post(
            client, "order-1", expected_version=0, events=[ORDER_PLACED], commit_id="c-1"
        )
        assert (response.status_code, response.json()["version"]) == (201, 1)
    assert (await client.get("/aggregates/order-1")).json()["events"] == [ORDER_PLACED]


async def test_conflict_is_409_with_the_actual_version(client: httpx.AsyncClient) -> None:
    await post(client, "order-1", expected_version=0, events=[ORDER_PLACED])
    await post(client, "order-1", expected_version=1, events=[ITEM_ADDED])

    response = await post(client, "order-1", expected_version=1, events=[ITEM_ADDED])

    assert response.status_code == 409
    assert response.json() == {"error": "conflict", "expected": 1, "actual": 2}


async def test_bad_aggregate_id_is_400_naming_it(client: httpx.AsyncClient) -> None:
    too_long = "x" * 600
    appended = await post(client, too_long, expected_version=0, events=[ORDER_PLACED])
    loaded = await client.get("/aggregates/bad%01id")

    for response in (appended, loaded):
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_input"
        assert response.json()["argument"] == "aggregate_id"


@pytest.mark.parametrize(
    ("body", "argument"),
    [
        ({"expected_version": -1, "events": [ORDER_PLACED]}, "expected_version"),
        ({"expected_version": 0, "events": []}, "events"),
        ({"expected_version": 0, "events": [ORDER_PLACED], "commit_id": "no spaces"}, "commit_id"),
        ({"expected_version": "0", "events": [ORDER_PLACED]}, "body"),
        ({"events": [ORDER_PLACED]}, "body"),
    ],
)
async def test_bad_body_is_400_naming_the_argument(
    client: httpx.AsyncClient, body: dict[str, object], argument: str
) -> None:
    response = await client.post("/aggregates/order-1/changesets", json=body)

    assert response.status_code == 400
    assert response.json()["argument"] == argument
    assert (await client.get("/aggregates/order-1")).status_code == 404


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/aggregates/order-1/changesets", content=b"{not json")

    assert (response.status_code, response.json()["argument"]) == (400, "body")


async def test_missing_aggregate_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/aggregates/nobody")

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "aggregate_id": "nobody"}


async def test_storage_unavailable_is_503(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def throttled(*args: object, **kwargs: object) -> None:
        raise StorageUnavailableError("throttled", code="Throttling", operation="Query")

    monkeypatch.setattr(EventStore, "load", throttled)

    response = await client.get("/aggregates/order-1")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "unavailable"


async def test_unknown_commit_outcome_is_503_with_the_commit_id(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lost(*args: object, **kwargs: object) -> None:
        raise CommitOutcomeUnknownError(
            "timed out", reason="ReadTimeoutError", operation="TransactWriteItems", commit_id="c-9"
        )

    monkeypatch.setattr(EventStore, "append", lost)

    response = await post(client, "order-1", expected_version=0, events=[ORDER_PLACED])

    assert response.status_code == 503
    assert response.json()["commit_id"] == "c-9"


async def test_the_read_model_follows_the_appends() -> None:
    app = create_app(functools.partial(EventStore.in_memory, feed_shards=2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await post(client, "order-7", expected_version=0, events=[ORDER_PLACED])
            await post(client, "order-7", expected_version=1, events=[ITEM_ADDED, ITEM_ADDED])
            summary = await summary_at(client, "order-7", version=2)
            missing = await client.get("/summaries/order-8")

    assert summary["events"] == 3
    assert missing.status_code == 404


async def summary_at(client: httpx.AsyncClient, aggregate_id: str, version: int) -> Any:
    """Wait for the background projection to reach ``version``."""
    with anyio.fail_after(10):
        while True:
            response = await client.get(f"/summaries/{aggregate_id}")
            if response.status_code == 200 and response.json()["version"] == version:
                return response.json()
            await anyio.sleep(0.01)


# -- the command endpoints (examples/bank_api.py) -----------------------------------------


async def command(client: httpx.AsyncClient, path: str, **body: object) -> httpx.Response:
    return await client.post(path, json=body)


async def test_account_commands(client: httpx.AsyncClient) -> None:
    opened = await command(client, "/accounts/acct-1/open", owner="ada")
    assert opened.status_code == 200
    assert opened.json() == {"account": "acct-1", "version": 1, "owner": "ada", "balance": 0}
    await command(client, "/accounts/acct-1/deposit", amount=10)
    withdrawn = await command(client, "/accounts/acct-1/withdraw", amount=4, command_id="w-1")
    assert withdrawn.json()["balance"] == 6
    again = await command(client, "/accounts/acct-1/withdraw", amount=4, command_id="w-1")
    assert again.json() == withdrawn.json()  # the retry landed nothing
    loaded = await client.get("/accounts/acct-1")
    assert (loaded.status_code, loaded.json()["balance"], loaded.json()["version"]) == (200, 6, 3)


async def test_an_overdraft_is_422_and_a_missing_account_404(client: httpx.AsyncClient) -> None:
    await command(client, "/accounts/acct-1/open", owner="ada")
    refused = await command(client, "/accounts/acct-1/withdraw", amount=1)
    assert refused.status_code == 422
    assert refused.json()["error"] == "refused" and "overdraft" in refused.json()["detail"]
    assert (await client.get("/accounts/nobody")).status_code == 404
    bad = await command(client, "/accounts/acct-1/deposit", amount="ten")
    assert bad.status_code == 400


async def test_a_transfer_moves_money_in_one_commit(client: httpx.AsyncClient) -> None:
    for name in ("a", "b"):
        await command(client, f"/accounts/{name}/open", owner=name)
    await command(client, "/accounts/a/deposit", amount=10)
    moved = await client.post("/transfers", json={"from": "a", "to": "b", "amount": 7})
    assert moved.status_code == 200
    assert (moved.json()["from"]["balance"], moved.json()["to"]["balance"]) == (3, 7)
    too_much = await client.post("/transfers", json={"from": "a", "to": "b", "amount": 7})
    assert too_much.status_code == 422
    assert (await client.get("/accounts/b")).json()["balance"] == 7


class RivalBackend(MemoryBackend):
    """A memory backend on which, once ``rival`` is set, another writer's deposit lands
    on the account just before each of the store's own commits to it: every command
    decided on the version it read then conflicts, as with a busy second process."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: EventStore | None = None
        self.rival_deposits = 0

    async def commit(self, plan: CommitPlan) -> None:
        rival, self.rival = self.rival, None  # None while the rival's own commit runs
        try:
            if rival is not None and _writes_change_set_of(plan, "acct-1"):
                await rival.append("acct-1", [Deposited(amount=1)], expected_version=ANY)
                self.rival_deposits += 1
            await super().commit(plan)
        finally:
            self.rival = rival


def _writes_change_set_of(plan: CommitPlan, aggregate_id: str) -> bool:
    return any(
        isinstance(w, PutChangeSet) and w.record.aggregate_id == aggregate_id for w in plan.writes
    )


async def test_a_command_is_409_only_after_max_attempts() -> None:
    config = StoreConfig(table_name="in-memory", bucket_name=None)
    backend = RivalBackend()
    app = create_app(lambda: EventStore(config, backend=backend))
    async with (
        app.router.lifespan_context(app),
        EventStore(config, types=EVENT_TYPES, backend=backend) as rival,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        await command(client, "/accounts/acct-1/open", owner="ada")
        backend.rival = rival
        response = await command(client, "/accounts/acct-1/deposit", amount=5)
        backend.rival = None
        account = (await client.get("/accounts/acct-1")).json()

    assert response.status_code == 409
    assert backend.rival_deposits == 3  # three decides, each beaten by the rival, then 409
    assert (account["version"], account["balance"]) == (4, 3)  # only the rival's deposits
