"""A retried command id that already landed returns its outcome without calling
``decide``: on an uncached aggregate (the load reads the commit marker at the same
time), and on a cached one whose entry saw the landing; the one case that still decides
once (a cached aggregate that never saw it) lands nothing. On every backend."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import pytest

from eventstore_async import EventStore
from examples.bank import (
    EVENT_TYPES,
    Account,
    Refused,
    account_decider,
    deposit,
    open_account,
    withdraw,
)

from .conftest import Counted, StoreFactory, backend_of

pytestmark = pytest.mark.anyio

SEEN_PER_AGGREGATE = 8  # commit ids a cached aggregate remembers (README)
SPIED = ("commit", "get", "get_head", "get_change_set", "query", "get_many")


def spy_requests(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The backend calls the store makes from now on, by name."""
    calls: list[str] = []
    backend = backend_of(store)
    for name in SPIED:
        method = getattr(backend, name)

        def spied(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls.append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(backend, name, spied)
    return calls


async def opened_with(store: EventStore, balance: int, *, cache_size: int = 0) -> None:
    repo = store.repository(account_decider(cache_size=cache_size))
    await repo.execute("acct-1", open_account("ada"))
    await repo.execute("acct-1", deposit(balance))


# -- (a) uncached: the marker is read with the load ------------------------------------


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same-store", "another-store"])
async def test_an_uncached_retry_returns_the_landed_outcome_without_deciding(
    make_store: StoreFactory, elsewhere: bool
) -> None:
    mine = await make_store(types=EVENT_TYPES)
    retrier = await make_store(types=EVENT_TYPES) if elsewhere else mine
    await opened_with(mine, 10)
    first = await mine.repository(account_decider()).execute(
        "acct-1", withdraw(10), command_id="cmd-1"
    )
    # Now the withdrawal would be an overdraft: a decide would refuse.
    decide = Counted(withdraw(10))
    again = await retrier.repository(account_decider()).execute(
        "acct-1", decide, command_id="cmd-1"
    )
    assert decide.calls == 0
    assert (again.version, again.state) == (3, Account(owner="ada", balance=0))
    assert again.change_set == first.change_set
    # After the aggregate moved on, where a decide would succeed: still not called.
    await mine.repository(account_decider()).execute("acct-1", deposit(50))
    later = await retrier.repository(account_decider()).execute(
        "acct-1", decide, command_id="cmd-1"
    )
    assert decide.calls == 0
    assert (later.version, later.state.balance) == (3, 0)
    history = await mine.load("acct-1")
    assert [cs.commit_id for cs in history.change_sets].count("cmd-1") == 1
    assert history.version == 4


async def test_an_uncached_command_reads_the_marker_while_it_loads(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker read (GetItem) and the load (Query) are in flight at once: each is
    held until the other has started, which only a concurrent pair gets past."""
    store = await make_store(types=EVENT_TYPES)
    await opened_with(store, 10)
    backend = backend_of(store)
    started = {"get": anyio.Event(), "query": anyio.Event()}
    real_get, real_query = backend.get, backend.query

    async def get(*args: Any, **kwargs: Any) -> Any:
        started["get"].set()
        await started["query"].wait()
        return await real_get(*args, **kwargs)

    def query(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async def pages() -> AsyncIterator[Any]:
            started["query"].set()
            await started["get"].wait()
            async with aclosing(real_query(*args, **kwargs)) as inner:
                async for page in inner:
                    yield page

        return pages()

    monkeypatch.setattr(backend, "get", get)
    monkeypatch.setattr(backend, "query", query)
    with anyio.fail_after(60):
        outcome = await store.repository(account_decider()).execute(
            "acct-1", withdraw(4), command_id="cmd-1"
        )
    assert (outcome.version, outcome.state.balance) == (3, 6)


async def test_requests_of_an_uncached_command_with_and_without_a_command_id(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await make_store(types=EVENT_TYPES)
    await opened_with(store, 10)
    calls = spy_requests(store, monkeypatch)
    repo = store.repository(account_decider())
    await repo.execute("acct-1", withdraw(1))
    assert Counter(calls) == {"query": 1, "commit": 1}
    calls.clear()
    await repo.execute("acct-1", withdraw(1), command_id="cmd-1")
    assert Counter(calls) == {"query": 1, "get": 1, "commit": 1}  # + the marker


# -- (b) cached: the entry remembers the commit ids it saw -----------------------------


async def test_a_cached_retry_is_answered_without_deciding_or_any_request(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await make_store(types=EVENT_TYPES)
    await opened_with(store, 10, cache_size=8)
    repo = store.repository(account_decider(cache_size=8))
    first = await repo.execute("acct-1", withdraw(10), command_id="cmd-1")
    calls = spy_requests(store, monkeypatch)
    decide = Counted(withdraw(10))  # an overdraft now
    again = await repo.execute("acct-1", decide, command_id="cmd-1")
    assert (decide.calls, calls) == (0, [])
    assert again == first
    # Older landings are recognised too (the state at that version is read back).
    await repo.execute("acct-1", deposit(7), command_id="cmd-2")
    older = await repo.execute("acct-1", decide, command_id="cmd-1")
    assert decide.calls == 0
    assert (older.version, older.state, older.change_set) == (3, first.state, first.change_set)
    assert (await store.head("acct-1")).version == 4  # type: ignore[union-attr]


async def test_a_landing_folded_in_by_catch_up_is_recognised(make_store: StoreFactory) -> None:
    mine = await make_store(types=EVENT_TYPES)
    other = await make_store(types=EVENT_TYPES)
    repo = mine.repository(account_decider(cache_size=8))
    await repo.execute("acct-1", open_account("ada"))
    await repo.execute("acct-1", deposit(10))  # cached at version 2
    landed = await other.repository(account_decider()).execute(
        "acct-1", withdraw(10), command_id="cmd-1"
    )
    await repo.get("acct-1")  # catches up: folds cmd-1 in
    decide = Counted(withdraw(10))
    again = await repo.execute("acct-1", decide, command_id="cmd-1")
    assert decide.calls == 0
    assert (again.version, again.state.balance, again.change_set) == (3, 0, landed.change_set)


async def test_a_cached_landing_by_another_process_decides_once_and_lands_nothing(
    make_store: StoreFactory,
) -> None:
    """The documented case: another process landed the command before this one cached
    the aggregate. ``decide`` runs once on the cached state; the marker refuses its
    events, which are discarded, and the landed outcome is returned."""
    mine = await make_store(types=EVENT_TYPES)
    other = await make_store(types=EVENT_TYPES)
    await opened_with(other, 10)
    landed = await other.repository(account_decider()).execute(
        "acct-1", withdraw(3), command_id="cmd-1"
    )
    repo = mine.repository(account_decider(cache_size=8))
    await repo.get("acct-1")  # cached at version 3, loaded: its commit ids not noted
    decide = Counted(withdraw(3))
    again = await repo.execute("acct-1", decide, command_id="cmd-1")
    assert decide.calls == 1
    assert (again.version, again.state.balance, again.change_set) == (3, 7, landed.change_set)
    assert (await mine.head("acct-1")).version == 3  # type: ignore[union-attr]
    # Now the entry knows: the next retry does not decide.
    await repo.execute("acct-1", decide, command_id="cmd-1")
    assert decide.calls == 1


async def test_the_record_is_bounded_and_an_older_retry_still_lands_once(
    make_store: StoreFactory,
) -> None:
    store = await make_store(types=EVENT_TYPES)
    await opened_with(store, 100, cache_size=8)
    repo = store.repository(account_decider(cache_size=8))
    first = await repo.execute("acct-1", withdraw(1), command_id="cmd-0")
    for n in range(1, SEEN_PER_AGGREGATE + 1):
        await repo.execute("acct-1", withdraw(1), command_id=f"cmd-{n}")
    decide = Counted(withdraw(1))
    again = await repo.execute("acct-1", decide, command_id="cmd-0")  # fell out of the record
    assert decide.calls == 1  # decided once, refused by the marker
    assert (again.version, again.change_set) == (first.version, first.change_set)
    recent = await repo.execute("acct-1", decide, command_id=f"cmd-{SEEN_PER_AGGREGATE}")
    assert decide.calls == 1
    assert recent.version == first.version + SEEN_PER_AGGREGATE
    assert (await store.head("acct-1")).version == 2 + 1 + SEEN_PER_AGGREGATE  # type: ignore[union-attr]


async def test_a_retry_that_would_now_refuse_is_not_refused(make_store: StoreFactory) -> None:
    store = await make_store(types=EVENT_TYPES)
    await opened_with(store, 5, cache_size=8)
    repo = store.repository(account_decider(cache_size=8))
    await repo.execute("acct-1", withdraw(5), command_id="cmd-1")
    with pytest.raises(Refused):
        await repo.execute("acct-1", withdraw(5), command_id="cmd-2")  # a new command
    outcome = await repo.execute("acct-1", withdraw(5), command_id="cmd-1")
    assert (outcome.version, outcome.state.balance) == (3, 0)


# -- execute_many ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_size", "elsewhere"),
    [(0, False), (0, True), (16, False)],
    ids=["uncached", "uncached-another-store", "cached"],
)
async def test_a_retried_transfer_does_not_decide(
    make_store: StoreFactory, cache_size: int, elsewhere: bool
) -> None:
    store = await make_store(types=EVENT_TYPES)
    retrier = await make_store(types=EVENT_TYPES) if elsewhere else store
    accounts = account_decider(cache_size=cache_size)
    repo = store.repository(accounts)
    for name in ("a", "b"):
        await repo.execute(name, open_account(name))
    await repo.execute("a", deposit(10))
    first = await store.execute_many(
        {"a": withdraw(10), "b": deposit(10)}, deciders=accounts, command_id="t-1"
    )
    decides = {"a": Counted(withdraw(10)), "b": Counted(deposit(10))}  # "a": an overdraft now
    again = await retrier.execute_many(decides, deciders=accounts, command_id="t-1")
    assert [d.calls for d in decides.values()] == [0, 0]
    assert again == first


def withdraw_all(state: Account) -> list[Any]:
    """Withdraw the whole balance, if there is any."""
    return list(withdraw(state.balance)(state)) if state.balance > 0 else []


@pytest.mark.parametrize("cache_size", [0, 8], ids=["uncached", "stale-cache"])
async def test_a_batch_retried_where_it_now_decides_events_elsewhere_returns_the_landing(
    make_store: StoreFactory, cache_size: int
) -> None:
    """The first run left ``y`` unchanged (nothing to withdraw); a retry on a stale cache
    decides a withdrawal on ``y``: the transaction is refused (the marker on ``x``), and
    the landed outcome is the answer, not an integrity error."""
    first_store = await make_store(types=EVENT_TYPES)
    retrier = await make_store(types=EVENT_TYPES)
    accounts, stale = account_decider(), account_decider(cache_size=cache_size)
    for account in ("x", "y"):
        await first_store.repository(accounts).execute(account, open_account("ada"))
    await first_store.repository(accounts).execute("y", deposit(10))
    for account in ("x", "y"):
        await retrier.repository(stale).get(account)  # y cached at balance 10
    await first_store.repository(accounts).execute("y", withdraw(10))
    decides = {"x": deposit(5), "y": withdraw_all}
    first = await first_store.execute_many(decides, deciders=accounts, command_id="m-1")
    assert first["y"].change_set is None

    again = await retrier.execute_many(decides, deciders=stale, command_id="m-1")

    assert {i: (o.version, o.state.balance) for i, o in again.items()} == {
        "x": (2, 5),
        "y": (3, 0),
    }
    assert again["x"].change_set == first["x"].change_set and again["y"].change_set is None
    for account, versions in (("x", 2), ("y", 3)):
        history = await first_store.load(account)
        assert history.version == versions
    assert [cs.commit_id for cs in (await first_store.load("x")).change_sets].count("m-1") == 1
