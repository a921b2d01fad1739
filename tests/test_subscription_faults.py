"""Subscriptions under cancelled transactions: only a failed lease condition is a loss.

DynamoDB cancels a transaction with ``TransactionConflict`` when another one touches
the same item at the same time (the lease renewal and a ``project()`` of the same
consumer, or a waiting successor's attempt). That is retried; a lease whose condition
failed is lost, and then renewal stops.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from eventstore_async import (
    EventStore,
    LeaseLostError,
    StorageError,
    StorageUnavailableError,
    StoreConfig,
)
from eventstore_async._feed.subscription import Subscription
from eventstore_async._records import (
    CheckpointRecord,
    CheckpointWrite,
    CommitPlan,
    CommitRejected,
    LeaseWrite,
    Rejection,
    checkpoint_partition,
)
from eventstore_async._retry import ConflictBackoff
from eventstore_async.testing import DynamoDBBackend
from tests.chaos.proxy import FaultProxy, ProxyRequest

from .conftest import StoreFactory, backend_of, store_on

pytestmark = pytest.mark.anyio

SHARDS = 2

#: What a fault script answers for a plan: a cancellation code for every write, or
#: None to let the plan through. It may await (to hold a commit until the test says).
Script = Callable[[CommitPlan], Awaitable[str | None]]


class CommitFaults:
    """A backend wrapper whose ``commit`` asks a script first; the rest passes through.

    ``finished`` is called with each plan once its commit is over: applied, refused,
    failed or cancelled.
    """

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.script: Script | None = None
        self.finished: Callable[[CommitPlan], None] = lambda plan: None
        self.refused: list[CommitPlan] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def commit(self, plan: CommitPlan) -> None:
        try:
            code = await self.script(plan) if self.script is not None else None
            if code is not None:
                self.refused.append(plan)
                raise CommitRejected([Rejection(code=code, old=None) for _ in plan.writes])
            await self.inner.commit(plan)
        finally:
            self.finished(plan)


def with_faults(store: EventStore) -> CommitFaults:
    """The fault wrapper in front of ``store``'s backend (see :func:`new_store`)."""
    faults = backend_of(store)
    assert isinstance(faults, CommitFaults)
    return faults


def leads_with(kind: type, times: int, code: str = "TransactionConflict") -> Script:
    """Cancel the first ``times`` plans that start with a ``kind`` write."""
    left = [times]

    async def script(plan: CommitPlan) -> str | None:
        if isinstance(plan.writes[0], kind) and left[0] > 0:
            left[0] -= 1
            return code
        return None

    return script


async def new_store(make_store: StoreFactory) -> tuple[EventStore, str]:
    store = await make_store(feed_shards=SHARDS, wrap=CommitFaults)
    aggregate = f"faults-{uuid.uuid4().hex[:6]}"
    for version in range(3):
        await store.append(aggregate, [{"n": version}], expected_version=version)
    return store, f"sub-{uuid.uuid4().hex[:8]}"


async def checkpoint_of(store: EventStore, name: str) -> CheckpointRecord:
    record = await backend_of(store).get(checkpoint_partition(name), 0)
    assert isinstance(record, CheckpointRecord)
    return record


async def assert_free(store: EventStore, name: str) -> None:
    """The lease was released: another consumer gets it at once."""
    async with store.subscribe(name, wait=False):
        pass


# -- project() and checkpoint() -------------------------------------------------------------


async def test_conflict_on_project_is_retried_not_a_lease_loss(
    make_store: StoreFactory,
) -> None:
    store, name = await new_store(make_store)
    faults = with_faults(store)
    faults.script = leads_with(CheckpointWrite, 2)
    async with store.subscribe(name) as sub:
        change_set = await sub.__anext__()
        await sub.project("faults", put={change_set.aggregate_id: {"v": change_set.version}})
        await sub.checkpoint()  # the subscription still works
    assert len(faults.refused) == 2
    assert await store.get_view("faults", change_set.aggregate_id) == {"v": change_set.version}
    assert (await checkpoint_of(store, name)).seq == 3  # project, checkpoint, release
    await assert_free(store, name)


async def test_conflicts_past_the_retries_are_waited_out_not_a_lease_loss(
    make_store: StoreFactory,
) -> None:
    store, name = await new_store(make_store)
    faults = with_faults(store)
    sub = store.subscribe(name)
    sub._settings = dataclasses.replace(sub._settings, backoff=ConflictBackoff(2, 0.001, 0.002))
    async with sub:
        await sub.__anext__()
        faults.script = leads_with(CheckpointWrite, 7)
        await sub.project("faults", put={"k": {"v": 1}})  # held on past 3 rounds of 3
        assert len(faults.refused) == 7
        assert sub._lost is None
    assert await store.get_view("faults", "k") == {"v": 1}


async def test_a_refusal_no_retry_mends_is_a_storage_error(make_store: StoreFactory) -> None:
    store, name = await new_store(make_store)
    faults = with_faults(store)
    async with store.subscribe(name) as sub:
        await sub.__anext__()
        faults.script = leads_with(CheckpointWrite, 1, code="ValidationError")
        with pytest.raises(StorageError) as raised:
            await sub.checkpoint()
        assert not isinstance(raised.value, LeaseLostError | StorageUnavailableError)
        assert raised.value.code == "ValidationError"
        assert len(faults.refused) == 1
        await sub.checkpoint()


async def test_conflict_on_project_through_dynamodb_is_retried(emulator_url: str) -> None:
    """The reviewer's case: DynamoDB's own TransactionCanceledException answer."""
    inject = {"on": False}

    def script(request: ProxyRequest) -> str | None:
        if inject["on"] and request.operation == "TransactWriteItems":
            inject["on"] = False
            return "transaction_conflict"
        return None

    async with FaultProxy(emulator_url, script=script) as proxy:
        config = _config(proxy.url, feed_shards=1)
        async with store_on(config, DynamoDBBackend(config)) as store:
            await store.create_schema()
            for n in range(3):
                await store.append(f"a{n}", [{"n": n}], expected_version=0)
            async with store.subscribe("proj", lease_seconds=30) as sub:
                for _ in range(3):
                    change_set = await sub.__anext__()
                    inject["on"] = change_set.aggregate_id == "a1"
                    await sub.project("v", put={change_set.aggregate_id: {"v": 1}})
            assert proxy.faults["transaction_conflict"] == 1
            assert [await store.get_view("v", f"a{n}") for n in range(3)] == [{"v": 1}] * 3
            assert (await checkpoint_of(store, "proj")).positions == (3,)
            await assert_free(store, "proj")
            await store.drop_schema()


# -- taking and renewing the lease -----------------------------------------------------------


async def test_conflict_while_taking_the_lease_without_waiting_is_not_busy(
    make_store: StoreFactory,
) -> None:
    store, name = await new_store(make_store)
    faults = with_faults(store)
    faults.script = leads_with(LeaseWrite, 1)
    async with store.subscribe(name, wait=False) as sub:
        await sub.__anext__()
    assert len(faults.refused) == 1


async def test_conflict_on_renewal_keeps_the_lease(make_store: StoreFactory) -> None:
    store, name = await new_store(make_store)
    faults = with_faults(store)
    renewals: list[str] = []
    renewed = anyio.Event()

    async def renewal_conflicts_once(plan: CommitPlan) -> str | None:
        if not isinstance(plan.writes[0], LeaseWrite):
            return None
        renewals.append("conflict" if not renewals else "ok")
        if len(renewals) == 2:
            renewed.set()
        return "TransactionConflict" if len(renewals) == 1 else None

    async with store.subscribe(name, lease_seconds=1.5) as sub:
        faults.script = renewal_conflicts_once
        with anyio.fail_after(10):
            await renewed.wait()
        await sub.checkpoint()  # neither lost nor stopped
        assert sub._lost is None
    assert renewals[:2] == ["conflict", "ok"]


async def test_renewal_stops_once_the_lease_is_lost(make_store: StoreFactory) -> None:
    store, name = await new_store(make_store)
    faults = with_faults(store)
    renewal_sent, renewal_over, go_on = anyio.Event(), anyio.Event(), anyio.Event()

    async def hold_renewals(plan: CommitPlan) -> str | None:
        if isinstance(plan.writes[0], LeaseWrite):
            renewal_sent.set()
            await go_on.wait()
        return None

    def renewal_finished(plan: CommitPlan) -> None:
        if isinstance(plan.writes[0], LeaseWrite):
            renewal_over.set()

    async with store.subscribe(name, lease_seconds=1.5) as sub:
        await sub.__anext__()
        faults.script, faults.finished = hold_renewals, renewal_finished
        with anyio.fail_after(10):
            await renewal_sent.wait()  # a renewal is on its way
        await _expire_lease(faults, sub)
        with pytest.raises(LeaseLostError):
            await sub.checkpoint()
        go_on.set()  # a renewal let through now would take the lost lease back
        with anyio.fail_after(10):
            await renewal_over.wait()
        assert (await checkpoint_of(store, name)).lease_until_us == 1  # not taken back
    await assert_free(store, name)


async def test_iteration_ends_once_project_finds_the_lease_lost(
    make_store: StoreFactory,
) -> None:
    store, name = await new_store(make_store)
    async with store.subscribe(name) as sub:
        await sub.__anext__()
        far_future = 2**62
        usurper = LeaseWrite(name, "someone-else", far_future + 1, far_future, ())
        await backend_of(store).commit(CommitPlan(writes=(usurper,), token=uuid.uuid4().hex))
        with pytest.raises(LeaseLostError):
            await sub.project("faults", put={"k": {"v": 1}})
        with pytest.raises(LeaseLostError):  # not the change sets still buffered
            await sub.__anext__()
    assert await store.get_view("faults", "k") is None


async def _expire_lease(faults: CommitFaults, sub: Subscription) -> None:
    """Hand the consumer's lease to another one (as if it had been too slow to renew),
    whose own term has already ended. (A lease that merely ran out, nobody else taking
    it, is taken again: see test_subscription_outage.py.)"""
    expire = LeaseWrite(sub.name, "another-consumer", lease_until_us=1, now_us=2**62, positions=())
    await faults.inner.commit(CommitPlan(writes=(expire,), token=uuid.uuid4().hex))


def _config(endpoint_url: str, **overrides: Any) -> StoreConfig:
    token = uuid.uuid4().hex[:12]
    return StoreConfig(
        table_name=f"es-faults-{token}",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        **overrides,
    )


# -- project() whose answer was lost --------------------------------------------------------


class LostAnswers:
    """A backend wrapper: the first ``times`` projections (checkpoint + view writes) are
    applied, then their caller gets a read timeout or, with ``hang``, no answer ever."""

    def __init__(self, backend: Any, *, times: int = 1, hang: bool = False) -> None:
        self.inner = backend
        self.left = times
        self.hang = hang
        self.landed = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def commit(self, plan: CommitPlan) -> None:
        await self.inner.commit(plan)
        if self.left and isinstance(plan.writes[0], CheckpointWrite) and len(plan.writes) > 1:
            self.left -= 1
            self.landed.set()
            if self.hang:
                await anyio.Event().wait()
            raise StorageUnavailableError(
                "Read timeout on endpoint URL",
                reason="ReadTimeoutError",
                operation="TransactWriteItems",
            )


def with_lost_answers(store: EventStore, **options: Any) -> LostAnswers:
    """Lost answers behind the :class:`CommitFaults` wrapper of ``store`` (new_store's)."""
    faults = with_faults(store)
    lost = LostAnswers(faults.inner, **options)
    faults.inner = lost
    return lost


async def project_count(sub: Subscription, store: EventStore, change_set: Any) -> None:
    """The usual projection: read the document, write it back counted once more."""
    doc = await store.get_view("lost", change_set.aggregate_id) or {"count": 0}
    await sub.project("lost", put={change_set.aggregate_id: {"count": doc["count"] + 1}})


async def test_a_projection_whose_answer_was_lost_is_settled_not_reported_unwritten(
    make_store: StoreFactory,
) -> None:
    store, name = await new_store(make_store)
    with_lost_answers(store)
    async with store.subscribe(name) as sub:
        first = await sub.__anext__()
        await project_count(sub, store, first)  # landed, answer lost: found landed
        second = await sub.__anext__()
        await project_count(sub, store, second)
    assert await store.get_view("lost", first.aggregate_id) == {"count": 2}  # each once
    assert (await checkpoint_of(store, name)).seq == 3  # two projections and the release
    await assert_free(store, name)


async def test_a_retried_projection_that_had_landed_succeeds_without_applying_twice(
    make_store: StoreFactory,
) -> None:
    """The caller gives up on a project() with no answer (its own timeout), whose
    transaction had landed, and retries it: not a lost lease, not applied twice."""
    store, name = await new_store(make_store)
    lost = with_lost_answers(store, hang=True)
    async with store.subscribe(name) as sub:
        first = await sub.__anext__()
        async with anyio.create_task_group() as group:
            group.start_soon(project_count, sub, store, first)
            with anyio.fail_after(30):  # a guard against hanging, not a synchronisation
                await lost.landed.wait()
            group.cancel_scope.cancel()  # the caller's timeout
        await project_count(sub, store, first)  # the retry: recognised as landed
        second = await sub.__anext__()
        await project_count(sub, store, second)
        await sub.checkpoint()
    assert await store.get_view("lost", first.aggregate_id) == {"count": 2}
    assert (await checkpoint_of(store, name)).seq == 4  # two projections, checkpoint, release
    await assert_free(store, name)


async def test_a_checkpoint_after_a_landed_projection_in_doubt_is_not_a_lease_loss(
    make_store: StoreFactory,
) -> None:
    store, name = await new_store(make_store)
    lost = with_lost_answers(store, hang=True)
    async with store.subscribe(name) as sub:
        first = await sub.__anext__()
        async with anyio.create_task_group() as group:
            group.start_soon(project_count, sub, store, first)
            with anyio.fail_after(30):
                await lost.landed.wait()
            group.cancel_scope.cancel()
        await sub.__anext__()
        await sub.checkpoint()  # other positions: saved after the landed projection
    assert await store.get_view("lost", first.aggregate_id) == {"count": 1}
    assert (await checkpoint_of(store, name)).seq == 3
    await assert_free(store, name)
