"""Repositories on every backend: get, execute, re-decide on conflict, command ids
landing at most once, turn-taking, caching, snapshots and bad input."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from eventstore_async import (
    ConcurrencyError,
    Decider,
    EventStore,
    EvolveError,
    InvalidInputError,
    Loaded,
)
from eventstore_async.domain._turns import Turns
from examples.bank import (
    EVENT_TYPES,
    Account,
    Deposited,
    Opened,
    Refused,
    Withdrawn,
    account_decider,
    deposit,
    evolve,
    open_account,
    withdraw,
)

from .conftest import Counted, StoreFactory, backend_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def bank(make_store: StoreFactory) -> EventStore:
    return await make_store(types=EVENT_TYPES)  # type: ignore[no-any-return]


async def test_a_missing_aggregate_is_version_0_and_the_initial_state(bank: EventStore) -> None:
    loaded = await bank.repository(account_decider()).get("acct-1")
    assert (loaded.version, loaded.state) == (0, Account())


async def test_commands_append_and_fold(bank: EventStore) -> None:
    repo = bank.repository(account_decider())
    opened = await repo.execute("acct-1", open_account("ada"))
    assert opened.version == 1 and opened.change_set is not None
    assert opened.change_set.events == (Opened(owner="ada"),)
    await repo.execute("acct-1", deposit(10))
    outcome = await repo.execute("acct-1", withdraw(4))
    assert (outcome.version, outcome.state) == (3, Account(owner="ada", balance=6))
    history = await bank.load("acct-1")
    assert history.events == [Opened(owner="ada"), Deposited(amount=10), Withdrawn(amount=4)]
    assert history.head.aggregate_type == "account"
    assert (await repo.get("acct-1")).state == Account(owner="ada", balance=6)


async def test_a_refusal_propagates_and_writes_nothing(bank: EventStore) -> None:
    repo = bank.repository(account_decider())
    await repo.execute("acct-1", open_account("ada"))
    with pytest.raises(Refused, match="overdraft"):
        await repo.execute("acct-1", withdraw(1))
    assert (await bank.head("acct-1")).version == 1  # type: ignore[union-attr]


async def test_no_events_writes_nothing(bank: EventStore) -> None:
    repo = bank.repository(account_decider())
    outcome = await repo.execute("acct-1", lambda state: [])
    assert (outcome.version, outcome.state, outcome.change_set) == (0, Account(), None)
    assert await bank.head("acct-1") is None


async def test_a_conflict_reads_the_newer_change_sets_and_decides_again(
    make_store: StoreFactory,
) -> None:
    mine = await make_store(types=EVENT_TYPES)
    other = await make_store(types=EVENT_TYPES)
    decider = account_decider(cache_size=10)
    repo = mine.repository(decider)
    await repo.execute("acct-1", open_account("ada"))
    await repo.execute("acct-1", deposit(5))  # cached at version 2, balance 5
    await other.repository(account_decider()).execute("acct-1", deposit(10))
    withdrawal = Counted(withdraw(12))  # only possible with the other's deposit folded in
    outcome = await repo.execute("acct-1", withdrawal)
    assert withdrawal.calls == 2
    assert (outcome.version, outcome.state.balance) == (4, 3)
    assert [cs.version for cs in (await mine.load("acct-1")).change_sets] == [1, 2, 3, 4]


async def test_the_last_conflict_is_raised_after_max_attempts(make_store: StoreFactory) -> None:
    mine = await make_store(types=EVENT_TYPES)
    other = await make_store(types=EVENT_TYPES)
    repo = mine.repository(account_decider(cache_size=10))
    await repo.execute("acct-1", open_account("ada"))
    outside = other.repository(account_decider())
    original = repo.catch_up

    async def catch_up_while_another_writes(*args: Any, **kwargs: Any) -> Any:
        loaded = await original(*args, **kwargs)
        await outside.execute("acct-1", deposit(1))  # moves on again before the next try
        return loaded

    repo.catch_up = catch_up_while_another_writes  # type: ignore[method-assign]
    await outside.execute("acct-1", deposit(1))
    decide = Counted(deposit(7))
    with pytest.raises(ConcurrencyError) as raised:
        await repo.execute("acct-1", decide, max_attempts=3)
    assert decide.calls == 3
    assert raised.value.aggregate_id == "acct-1"
    history = await mine.load("acct-1")
    assert Deposited(amount=7) not in history.events


async def test_a_command_id_lands_once_and_a_retry_returns_its_outcome(
    make_store: StoreFactory,
) -> None:
    mine = await make_store(types=EVENT_TYPES)
    other = await make_store(types=EVENT_TYPES)
    repo = mine.repository(account_decider(cache_size=10))
    await repo.execute("acct-1", open_account("ada"))
    await repo.execute("acct-1", deposit(10))
    first = await repo.execute("acct-1", withdraw(10), command_id="cmd-1")
    assert first.version == 3 and first.change_set is not None
    again = await repo.execute("acct-1", withdraw(10), command_id="cmd-1")  # cached at 3
    assert again.version == 3 and again.change_set == first.change_set
    assert again.state == Account(owner="ada", balance=0)
    # Elsewhere, after the aggregate moved on: the withdrawal would now be an overdraft
    # at the current state, yet the retry returns the landed outcome, not a refusal.
    retry_repo = other.repository(account_decider())
    await retry_repo.execute("acct-1", deposit(3))
    late = await retry_repo.execute("acct-1", withdraw(10), command_id="cmd-1")
    assert late.version == 3 and late.state == Account(owner="ada", balance=0)
    assert late.change_set is not None and late.change_set.commit_id == "cmd-1"
    # A retry whose decide succeeds on a moved-on state still lands nothing.
    await retry_repo.execute("acct-1", deposit(20))
    later = await retry_repo.execute("acct-1", withdraw(10), command_id="cmd-1")
    assert later.version == 3
    history = await mine.load("acct-1")
    assert [cs.commit_id for cs in history.change_sets].count("cmd-1") == 1
    assert history.version == 5
    assert (await repo.get("acct-1")).state.balance == 23


async def test_a_command_id_can_be_used_on_another_aggregate(bank: EventStore) -> None:
    repo = bank.repository(account_decider())
    await repo.execute("acct-1", open_account("ada"), command_id="open")
    outcome = await repo.execute("acct-2", open_account("bob"), command_id="open")
    assert outcome.version == 1 and outcome.state.owner == "bob"


async def test_commands_in_one_process_take_turns(bank: EventStore) -> None:
    repo = bank.repository(account_decider(cache_size=10))
    await repo.execute("acct-1", open_account("ada"))
    versions: list[int] = []

    async def one_deposit() -> None:
        versions.append((await repo.execute("acct-1", deposit(1), max_attempts=1)).version)

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(one_deposit)
    assert sorted(versions) == list(range(2, 22))
    assert (await repo.get("acct-1")).state.balance == 20
    with anyio.fail_after(60):  # no turn outlives its commands (a held one would block)
        await repo.execute("acct-1", deposit(1), max_attempts=1)


async def test_the_same_decider_gets_the_same_repository(bank: EventStore) -> None:
    decider = account_decider(cache_size=4)
    assert bank.repository(decider) is bank.repository(decider)
    assert bank.repository(account_decider()) is not bank.repository(decider)


async def test_a_cached_command_decides_on_the_cached_state_and_only_commits(
    bank: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = bank.repository(account_decider(cache_size=10))
    await repo.execute("acct-1", open_account("ada"))
    calls: list[str] = []
    backend = backend_of(bank)
    for name in ("commit", "get", "get_head", "get_change_set", "query", "get_many"):
        monkeypatch.setattr(backend, name, _spy(calls, name, getattr(backend, name)))
    await repo.execute("acct-1", deposit(2))
    await repo.execute("acct-1", deposit(3), command_id="c-1")
    assert calls == ["commit", "commit"]
    again = await repo.execute("acct-1", deposit(3), command_id="c-1")  # a retry
    assert calls == ["commit", "commit"] and again.version == 3


def _spy(calls: list[str], name: str, method: Any) -> Any:
    def spied(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return method(*args, **kwargs)

    return spied


async def test_the_cache_evicts_the_least_recently_used(bank: EventStore) -> None:
    repo = bank.repository(account_decider(cache_size=2))
    for name in ("a", "b", "c"):
        await repo.execute(name, open_account(name))
    await repo.get("b")
    await repo.execute("d", open_account("d"))
    assert [name for name in "abcd" if repo.cached(name) is not None] == ["b", "d"]
    assert repo.cached_count == 2
    assert repo.cached("d") == Loaded(Account(owner="d"), 1)


async def test_snapshots_every_n_versions_and_loads_from_the_newest(
    make_store: StoreFactory,
) -> None:
    mine = await make_store(types=EVENT_TYPES)
    repo = mine.repository(account_decider(snapshot_every=2))
    await repo.execute("acct-1", open_account("ada"))
    for _ in range(4):
        await repo.execute("acct-1", deposit(1))
    history = await mine.load("acct-1", snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.version == 4
    assert history.snapshot.state == Account(owner="ada", balance=3)
    fresh = await make_store(types=EVENT_TYPES)
    loaded = await fresh.repository(account_decider(snapshot_every=2)).get("acct-1")
    assert (loaded.version, loaded.state) == (5, Account(owner="ada", balance=4))


async def test_a_failed_snapshot_is_logged_and_the_command_stands(
    bank: EventStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing_save(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no room")

    monkeypatch.setattr(bank, "save_snapshot", failing_save)
    repo = bank.repository(account_decider(snapshot_every=1))
    with caplog.at_level(logging.WARNING, logger="eventstore_async.domain"):
        outcome = await repo.execute("acct-1", open_account("ada"))
    assert outcome.version == 1
    assert "snapshot at version 1 not saved" in caplog.text


# -- bad input ------------------------------------------------------------------------


class Unknown(msgspec.Struct, tag="bank.unknown", frozen=True):
    pass


@pytest.mark.parametrize(
    ("result", "argument"),
    [
        (None, "decide"),
        (Deposited(amount=1), "decide"),
        ({"type": "x"}, "decide"),
        ("events", "decide"),
        (7, "decide"),
        ([object()], "events[0]"),
        ([Deposited(amount=1), 3], "events[1]"),
        ([Unknown()], "events[0]"),
        ([{"amount": object()}], "events[0]"),
    ],
)
async def test_bad_events_are_refused_before_anything_is_written(
    bank: EventStore, result: Any, argument: str
) -> None:
    decider = Decider(Account, _evolve_or_ignore_mappings)
    repo = bank.repository(decider)
    with pytest.raises(InvalidInputError) as raised:
        await repo.execute("acct-1", lambda state: result)
    assert raised.value.argument.startswith(argument), raised.value
    assert await bank.head("acct-1") is None


def _evolve_or_ignore_mappings(state: Account, event: Any) -> Account:
    return state if isinstance(event, dict) else evolve(state, event)


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"command_id": ""}, "command_id"),
        ({"command_id": 5}, "command_id"),
    ],
)
async def test_bad_arguments_are_refused(
    bank: EventStore, arguments: dict[str, Any], argument: str
) -> None:
    repo = bank.repository(account_decider())
    with pytest.raises(InvalidInputError) as raised:
        await repo.execute("acct-1", open_account("ada"), **arguments)
    assert raised.value.argument == argument


async def test_a_bad_id_or_decide_is_refused(bank: EventStore) -> None:
    repo = bank.repository(account_decider())
    with pytest.raises(InvalidInputError, match="aggregate_id"):
        await repo.execute("", open_account("ada"))
    with pytest.raises(InvalidInputError, match="decide"):
        await repo.execute("acct-1", "open")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="decider"):
        bank.repository(Account)


@pytest.mark.parametrize(
    ("arguments", "argument"),
    [
        ({"initial": 1}, "initial"),
        ({"evolve": None}, "evolve"),
        ({"cache_size": -1}, "cache_size"),
        ({"snapshot_every": 0}, "snapshot_every"),
        ({"snapshot_schema": ""}, "snapshot_schema"),
        ({"aggregate_type": 3}, "aggregate_type"),
    ],
)
def test_bad_decider_arguments_are_refused(arguments: dict[str, Any], argument: str) -> None:
    settings: dict[str, Any] = {"initial": Account, "evolve": evolve, **arguments}
    with pytest.raises(InvalidInputError) as raised:
        Decider(settings.pop("initial"), settings.pop("evolve"), **settings)
    assert raised.value.argument == argument


async def test_an_evolve_failure_on_load_names_the_aggregate_and_version(
    bank: EventStore,
) -> None:
    repo = bank.repository(account_decider())
    await repo.execute("acct-1", open_account("ada"))
    await repo.execute("acct-1", deposit(5))

    def fragile(state: Account, event: Any) -> Account:
        if isinstance(event, Deposited):
            raise ValueError("deposits unsupported")
        return evolve(state, event)

    with pytest.raises(EvolveError) as raised:
        await bank.repository(Decider(Account, fragile)).get("acct-1")
    assert (raised.value.aggregate_id, raised.value.version) == ("acct-1", 2)
    assert isinstance(raised.value.__cause__, ValueError)


def test_a_decider_is_driven_without_a_store() -> None:
    decider = account_decider()
    state = decider.fold(decider.initial(), [Opened(owner="ada"), Deposited(amount=10)])
    assert withdraw(4)(state) == [Withdrawn(amount=4)]
    with pytest.raises(Refused):
        withdraw(11)(state)


# -- turns ---------------------------------------------------------------------------


@pytest.mark.parametrize("cancel_before_release", [False, True])
async def test_turns_go_in_order_and_survive_a_cancelled_waiter(
    cancel_before_release: bool,
) -> None:
    turns = Turns()
    order: list[str] = []
    scope = anyio.CancelScope()

    async def take(name: str) -> None:
        async with turns.hold(["a"]):
            order.append(name)

    async def cancelled_waiter() -> None:
        with scope:
            async with turns.hold(["a"]):
                order.append("cancelled")

    async with anyio.create_task_group() as group, turns.hold(["a"]):
        group.start_soon(cancelled_waiter)  # first in the queue
        await anyio.wait_all_tasks_blocked()
        group.start_soon(take, "second")
        await anyio.wait_all_tasks_blocked()
        if cancel_before_release:
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
        else:
            scope.cancel()  # handed the turn and cancelled at once: it passes it on
    assert order == ["second"]
    assert len(turns) == 0


async def test_turns_are_dropped_when_nobody_holds_or_waits() -> None:
    turns = Turns()

    async def hold() -> None:
        async with turns.hold(["a", "b"]):
            await anyio.lowlevel.checkpoint()  # the others queue up meanwhile

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(hold)
    assert len(turns) == 0


async def test_commands_with_the_global_feed_on(make_store: StoreFactory) -> None:
    store = await make_store(types=EVENT_TYPES, feed_shards=2)
    repo = store.repository(account_decider(cache_size=4))
    await repo.execute("acct-1", open_account("ada"), command_id="open-1")
    await repo.execute("acct-1", deposit(5), command_id="dep-1")
    again = await repo.execute("acct-1", deposit(5), command_id="dep-1")
    assert (again.version, again.state.balance) == (2, 5)
    outcomes = await store.execute_many(
        {"acct-1": withdraw(5), "acct-2": open_account("bob")},
        deciders=account_decider(),
        command_id="t-1",
    )
    assert outcomes["acct-1"].state.balance == 0 and outcomes["acct-2"].version == 1
