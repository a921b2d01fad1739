"""execute_many on every backend: several aggregates, one transaction, re-decided on
conflict, a command id landing at most once."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from eventstore_async import ConcurrencyError, Decider, EventStore, InvalidInputError
from examples.bank import (
    EVENT_TYPES,
    Account,
    Refused,
    account_decider,
    deposit,
    open_account,
    withdraw,
)

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio

ACCOUNTS = account_decider(cache_size=16)


async def _open(store: EventStore, balance: int = 0) -> None:
    repo = store.repository(ACCOUNTS)
    for name in ("a", "b"):
        await repo.execute(name, open_account(name))
    if balance:
        await repo.execute("a", deposit(balance))


def transfer(amount: int) -> dict[str, Any]:
    return {"a": withdraw(amount), "b": deposit(amount)}


async def test_a_transfer_changes_both_accounts_in_one_commit(make_store: StoreFactory) -> None:
    store = await make_store(types=EVENT_TYPES)
    await _open(store, 10)
    commits = store.metrics["commits"]
    outcomes = await store.execute_many(transfer(4), deciders=ACCOUNTS, command_id="t-1")
    assert store.metrics["commits"] == commits + 1
    assert outcomes["a"].state == Account(owner="a", balance=6)
    assert outcomes["b"].state == Account(owner="b", balance=4)
    assert outcomes["a"].change_set is not None and outcomes["a"].change_set.commit_id == "t-1"


async def test_a_refusal_writes_nothing_on_any_aggregate(make_store: StoreFactory) -> None:
    store = await make_store(types=EVENT_TYPES)
    await _open(store, 3)
    with pytest.raises(Refused):
        await store.execute_many(transfer(4), deciders=ACCOUNTS)
    assert (await store.head("a")).version == 2  # type: ignore[union-attr]
    assert (await store.head("b")).version == 1  # type: ignore[union-attr]


async def test_a_conflict_re_decides_every_aggregate(make_store: StoreFactory) -> None:
    store = await make_store(types=EVENT_TYPES)
    other = await make_store(types=EVENT_TYPES)
    await _open(store, 3)
    await store.repository(ACCOUNTS).get("b")  # both cached
    await other.repository(account_decider()).execute("a", deposit(5))
    outcomes = await store.execute_many(transfer(8), deciders=ACCOUNTS)
    assert (outcomes["a"].version, outcomes["a"].state.balance) == (4, 0)
    assert (outcomes["b"].version, outcomes["b"].state.balance) == (2, 8)


async def test_max_attempts_bounds_the_retries(make_store: StoreFactory) -> None:
    store = await make_store(types=EVENT_TYPES)
    other = await make_store(types=EVENT_TYPES)
    await _open(store, 10)
    await other.repository(account_decider()).execute("b", deposit(1))
    with pytest.raises(ConcurrencyError) as raised:
        await store.execute_many(transfer(1), deciders=ACCOUNTS, max_attempts=1)
    assert raised.value.aggregate_id == "b"


async def test_a_retried_transfer_lands_once(make_store: StoreFactory) -> None:
    store = await make_store(types=EVENT_TYPES)
    other = await make_store(types=EVENT_TYPES)
    await _open(store, 10)
    first = await store.execute_many(transfer(10), deciders=ACCOUNTS, command_id="t-1")
    # Elsewhere, from stored state: "a" would now refuse (balance 0), yet the retry
    # returns the landed outcome of both.
    again = await other.execute_many(transfer(10), deciders=account_decider(), command_id="t-1")
    assert {i: o.version for i, o in again.items()} == {i: o.version for i, o in first.items()}
    assert again["b"].state.balance == 10
    await other.repository(account_decider()).execute("a", deposit(30))
    later = await other.execute_many(transfer(10), deciders=account_decider(), command_id="t-1")
    assert later["a"].version == 3 and later["a"].state.balance == 0
    assert (await store.head("a")).version == 4  # type: ignore[union-attr]
    assert (await store.head("b")).version == 2  # type: ignore[union-attr]


async def test_bad_arguments_are_refused(make_store: StoreFactory) -> None:
    store = await make_store(types=EVENT_TYPES)
    with pytest.raises(InvalidInputError, match="decides"):
        await store.execute_many({}, deciders=ACCOUNTS)
    with pytest.raises(InvalidInputError, match="deciders"):
        await store.execute_many({"a": deposit(1)}, deciders={"b": ACCOUNTS})
    with pytest.raises(InvalidInputError, match="decides"):
        await store.execute_many({"a": 3}, deciders=ACCOUNTS)  # type: ignore[dict-item]
    with pytest.raises(InvalidInputError, match="max_attempts"):
        await store.execute_many({"a": deposit(1)}, deciders=ACCOUNTS, max_attempts=0)


class Opaque(msgspec.Struct, tag="bank.opaque", frozen=True):
    value: Any


async def test_an_event_that_does_not_encode_is_named_by_its_aggregate(
    make_store: StoreFactory,
) -> None:
    store = await make_store(types=EVENT_TYPES)
    lenient = Decider(Account, lambda state, event: state)
    with pytest.raises(InvalidInputError) as raised:
        await store.execute_many(
            {"a": lambda state: [Opaque(1)], "b": lambda state: [Opaque(object())]},
            deciders=lenient,
        )
    assert raised.value.argument.startswith("decides['b'].events[0]"), raised.value
    assert await store.head("a") is None and await store.head("b") is None
