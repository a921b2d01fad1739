"""The class-based face on every backend: an Aggregate subclass as a repository's
decider, handlers by decorator and by name, no half-mutated object left cached."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from eventstore_async import Aggregate, EventStore, InvalidInputError, applies
from examples.bank import (
    EVENT_TYPES,
    AccountAggregate,
    Deposited,
    Opened,
    Refused,
    Withdrawn,
)

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio


@pytest.fixture
async def bank(make_store: StoreFactory) -> EventStore:
    return await make_store(types=EVENT_TYPES)  # type: ignore[no-any-return]


async def test_methods_record_events_that_the_repository_appends(bank: EventStore) -> None:
    repo = bank.repository(AccountAggregate)
    await repo.execute("acct-1", lambda account: account.open("ada"))
    await repo.execute("acct-1", lambda account: account.deposit(10))
    outcome = await repo.execute("acct-1", lambda account: account.withdraw(4))
    assert outcome.version == 3 and outcome.state.balance == 6
    assert outcome.change_set is not None and outcome.change_set.events == (Withdrawn(amount=4),)
    history = await bank.load("acct-1")
    assert history.events == [Opened(owner="ada"), Deposited(amount=10), Withdrawn(amount=4)]
    assert history.head.aggregate_type == "account"
    loaded = await repo.get("acct-1")
    assert (loaded.version, loaded.state.owner, loaded.state.balance) == (3, "ada", 6)


class Cached(AccountAggregate):
    cache_size = 8


async def test_a_failed_command_leaves_the_cached_object_untouched(bank: EventStore) -> None:
    repo = bank.repository(Cached)
    await repo.execute("acct-1", lambda account: account.open("ada"))
    await repo.execute("acct-1", lambda account: account.deposit(10))

    def deposit_then_fail(account: Cached) -> None:
        account.deposit(5)  # recorded and applied to the command's copy...
        account.withdraw(100)  # ...then refused

    with pytest.raises(Refused):
        await repo.execute("acct-1", deposit_then_fail)
    cached = repo.cached("acct-1")
    assert cached is not None and cached.state.balance == 10
    assert (await bank.head("acct-1")).version == 2  # type: ignore[union-attr]
    outcome = await repo.execute("acct-1", lambda account: account.withdraw(10))
    assert outcome.state.balance == 0


async def test_changing_a_returned_object_leaves_the_cached_one_untouched(
    bank: EventStore,
) -> None:
    """``get`` and ``execute`` handed out the cached object itself: a caller that changed
    it (or tried a method on it) changed what the next command decided on, and an
    overdraft was stored."""

    class CachedAccount(AccountAggregate):
        cache_size = 10

    repo = bank.repository(CachedAccount)
    await repo.execute("acct-1", lambda account: account.open("ada"))
    outcome = await repo.execute("acct-1", lambda account: account.deposit(10))
    outcome.state.balance = 1_000
    loaded = await repo.get("acct-1")
    assert loaded.state.balance == 10
    loaded.state.deposit(990)  # a preview on the returned object, never executed
    with pytest.raises(Refused, match="overdraft"):
        await repo.execute("acct-1", lambda account: account.withdraw(500))
    assert (await bank.load("acct-1")).events == [Opened(owner="ada"), Deposited(amount=10)]
    assert (await repo.get("acct-1")).state.balance == 10


async def test_a_command_that_records_nothing_writes_nothing(bank: EventStore) -> None:
    outcome = await bank.repository(AccountAggregate).execute("acct-1", lambda account: None)
    assert (outcome.version, outcome.change_set) == (0, None)
    assert await bank.head("acct-1") is None


class Stranger(msgspec.Struct, tag="bank.stranger", frozen=True):
    pass


async def test_an_event_without_a_handler_is_refused(bank: EventStore) -> None:
    repo = bank.repository(AccountAggregate)
    with pytest.raises(InvalidInputError, match="no handler for Stranger"):
        await repo.execute("acct-1", lambda account: account.record(Stranger()))
    assert await bank.head("acct-1") is None


class Snapshotted(AccountAggregate):
    snapshot_every = 2


async def test_snapshots_of_an_aggregate_store_its_attributes(make_store: StoreFactory) -> None:
    store = await make_store(types=EVENT_TYPES)
    repo = store.repository(Snapshotted)
    await repo.execute("acct-1", lambda account: account.open("ada"))
    for _ in range(3):
        await repo.execute("acct-1", lambda account: account.deposit(2))
    history = await store.load("acct-1", snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.version == 4
    assert history.snapshot.state == {"owner": "ada", "balance": 6}
    fresh = await make_store(types=EVENT_TYPES)
    loaded = await fresh.repository(Snapshotted).get("acct-1")
    assert (loaded.version, loaded.state.balance) == (4, 6)
    outcome = await fresh.repository(Snapshotted).execute(
        "acct-1", lambda account: account.withdraw(6)
    )
    assert outcome.state.balance == 0


def test_handlers_are_found_by_decorator_by_name_and_by_inheritance() -> None:
    class Base(Aggregate):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        @applies(Opened, Deposited)
        def _either(self, event: Any) -> None:
            self.seen.append(type(event).__name__)

    class Child(Base):
        def on_Withdrawn(self, event: Withdrawn) -> None:
            self.seen.append("by name")

    decider = Child.__decider__()
    state = decider.fold(decider.initial(), [Opened(owner="a"), Withdrawn(amount=1)])
    assert state.seen == ["Opened", "by name"]
    assert Child.__decider__() is decider


def test_applies_needs_event_types() -> None:
    with pytest.raises(InvalidInputError):
        applies()
