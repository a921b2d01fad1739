"""Snapshots under races and failures: loads beside evicting saves, saves whose
outcome is unknown. Each test holds a task at the exact point with a hook in front
of the backend or the bucket (no sleeps), on every backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio
import pytest

from eventstore_async import (
    EventStore,
    IntegrityError,
    SnapshotOutcomeUnknownError,
    StorageError,
    StorageUnavailableError,
)
from eventstore_async._read.load import SNAPSHOT_READS
from eventstore_async._records import CommitPlan, CommitRejected, Rejection, snapshot_sort_key

from .conftest import StoreFactory, backend_of

pytestmark = pytest.mark.anyio

#: Change sets stay inline, states go to the bucket: every object get is a snapshot's.
THRESHOLD = 512


def new_id() -> str:
    return f"race-{uuid.uuid4().hex[:10]}"


def state(tag: object) -> dict[str, object]:
    return {"tag": tag, "blob": "s" * 2 * THRESHOLD}


class WatchedObjects:
    """The bucket, recording each get and running ``before_get`` ahead of it."""

    def __init__(
        self, inner: Any, before_get: Callable[[str], Awaitable[None]] | None = None
    ) -> None:
        self.inner = inner
        self.gets: list[str] = []
        self._before_get = before_get

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, key: str) -> AsyncIterator[bytes]:
        self.gets.append(key)
        if self._before_get is not None:
            await self._before_get(key)
        async with aclosing(self.inner.get(key)) as chunks:
            async for chunk in chunks:
                yield chunk


class HookedBackend:
    """Another store's opened backend, with some calls replaced by the test's hooks."""

    def __init__(self, inner: Any, objects: Any = None, **hooks: Callable[..., Any]) -> None:
        self.inner = inner
        self._objects = objects
        self._hooks = hooks

    def __getattr__(self, name: str) -> Any:
        return self._hooks.get(name) or getattr(self.inner, name)

    @property
    def objects(self) -> Any:
        return self._objects if self._objects is not None else self.inner.objects

    async def open(self) -> None:
        """The backend belongs to the fixture's store, which opened it."""

    async def aclose(self) -> None:
        """... and closes it."""


@asynccontextmanager
async def hooked(
    store: EventStore, objects: Any = None, *, deadline: float | None = None, **hooks: Any
) -> AsyncIterator[EventStore]:
    """A second store on ``store``'s storage whose backend calls go through hooks, with
    its own ``append_deadline_seconds`` if given (the set-up appends keep the default:
    a busy machine's append may take longer than a test's short deadline)."""
    backend = HookedBackend(backend_of(store), objects, **hooks)
    config = store.config
    if deadline is not None:
        config = config.replace(append_deadline_seconds=deadline)
    async with EventStore(config, backend=backend) as other:
        yield other


async def build(store: EventStore, aggregate: str, versions: int) -> None:
    for version in range(versions):
        await store.append(aggregate, [{"n": version + 1}], expected_version=version)


async def bucket_keys(store: EventStore) -> set[str]:
    objects = backend_of(store).objects
    assert objects is not None
    return {info.key async for info in objects.list(store.config.key_prefix)}


async def snapshot_key(store: EventStore, aggregate: str, version: int) -> str:
    record = await backend_of(store).get(aggregate, snapshot_sort_key(version, "default"))
    pointer = getattr(record, "pointer", None)
    assert pointer is not None, "the snapshot is not offloaded"
    return str(pointer.key)


# -- a load beside a save that deletes the snapshot's object --------------------------------


async def test_load_follows_a_save_that_evicts_its_snapshot(make_store: StoreFactory) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)
    await store.save_snapshot(aggregate, 1, state(1), keep=1)

    async def evict_first(key: str) -> None:  # between the load's Query and its GetObject
        if len(watched.gets) == 1:
            await store.save_snapshot(aggregate, 2, state(2), keep=1)

    watched = WatchedObjects(backend_of(store).objects, evict_first)
    async with hooked(store, watched) as loader:
        history = await loader.load(aggregate, snapshot_schema="default")

    assert history.snapshot is not None and history.snapshot.state == state(2)
    assert [cs.version for cs in history.change_sets] == [3]
    assert len(watched.gets) == 2


async def test_load_follows_a_save_that_overwrites_its_snapshot(make_store: StoreFactory) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)
    await store.save_snapshot(aggregate, 2, state("first"))

    async def overwrite_first(key: str) -> None:
        if len(watched.gets) == 1:
            await store.save_snapshot(aggregate, 2, state("second"))

    watched = WatchedObjects(backend_of(store).objects, overwrite_first)
    async with hooked(store, watched) as loader:
        history = await loader.load(aggregate, snapshot_schema="default")

    assert history.snapshot is not None and history.snapshot.state == state("second")
    assert [cs.version for cs in history.change_sets] == [3]


async def test_load_replays_everything_when_snapshots_keep_vanishing(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 10)
    await store.save_snapshot(aggregate, 2, state(2), keep=1)

    async def evict_each(key: str) -> None:  # every snapshot read is evicted at once
        newer = 2 + len(watched.gets)
        assert await store.save_snapshot(aggregate, newer, state(newer), keep=1) is not None

    watched = WatchedObjects(backend_of(store).objects, evict_each)
    async with hooked(store, watched) as loader:
        history = await loader.load(aggregate, snapshot_schema="default")

    assert len(watched.gets) == SNAPSHOT_READS
    assert history.snapshot is None
    assert [cs.version for cs in history.change_sets] == list(range(1, 11))
    assert history.version == 10


async def test_a_listed_snapshot_without_its_object_is_an_integrity_error(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)
    await store.save_snapshot(aggregate, 2, state(2))
    key = await snapshot_key(store, aggregate, 2)
    assert backend_of(store).objects is not None
    await backend_of(store).objects.delete(key)

    watched = WatchedObjects(backend_of(store).objects)
    async with hooked(store, watched) as loader:
        with pytest.raises(IntegrityError) as broken:
            await loader.load(aggregate, snapshot_schema="default")

    assert "listed on the head" in str(broken.value) and key in str(broken.value)
    assert watched.gets == [key]  # the head and snapshot were read again, not the object


async def test_a_corrupt_snapshot_object_is_not_read_again(make_store: StoreFactory) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)
    await store.save_snapshot(aggregate, 2, state(2))
    key = await snapshot_key(store, aggregate, 2)
    objects = backend_of(store).objects
    assert objects is not None
    await objects.delete(key)
    await objects.put(key, b"not the state that was saved")

    watched = WatchedObjects(objects)
    async with hooked(store, watched) as loader:
        with pytest.raises(IntegrityError, match="does not match its pointer"):
            await loader.load(aggregate, snapshot_schema="default")

    assert watched.gets == [key]


# -- a save whose commit may have landed keeps its object ------------------------------------


def lost_response(inner: Any, *, lands: bool) -> Callable[[CommitPlan], Awaitable[None]]:
    """A commit that (if ``lands``) is applied, but whose caller gets a transport error."""

    async def commit(plan: CommitPlan) -> None:
        if lands:
            await inner.commit(plan)
        raise StorageUnavailableError(
            "Connection reset by peer",
            reason="ConnectionResetError",
            operation="TransactWriteItems",
        )

    return commit


async def test_a_lost_commit_response_is_settled_by_reading_back(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)

    async with hooked(store, commit=lost_response(backend_of(store), lands=True)) as saver:
        offloaded = await saver.save_snapshot(aggregate, 2, state(2))
        inline = await saver.save_snapshot(aggregate, 3, {"tag": 3})

    assert offloaded is not None and offloaded.version == 2
    assert inline is not None and inline.version == 3
    history = await store.load(aggregate, snapshot_schema="default", to_version=2)
    assert history.snapshot is not None and history.snapshot.state == state(2)
    history = await store.load(aggregate, snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.state == {"tag": 3}


async def test_an_unsettled_outcome_keeps_the_object_and_says_so(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)

    async def unreadable(partition: str, sort_key: Any) -> None:
        raise StorageUnavailableError("timed out", reason="ReadTimeoutError", operation="GetItem")

    hooks = {"commit": lost_response(backend_of(store), lands=True), "get": unreadable}
    async with hooked(store, **hooks) as saver:
        with pytest.raises(SnapshotOutcomeUnknownError) as unknown:
            await saver.save_snapshot(aggregate, 2, state(2))

    assert isinstance(unknown.value, StorageUnavailableError)  # retryable, as before
    assert (unknown.value.aggregate_id, unknown.value.version) == (aggregate, 2)
    assert "may or may not" in str(unknown.value)
    history = await store.load(aggregate, snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.state == state(2)


async def test_a_save_cancelled_in_flight_keeps_the_object(make_store: StoreFactory) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)
    landed = anyio.Event()

    async def lands_then_hangs(plan: CommitPlan) -> None:
        await backend_of(store).commit(plan)
        landed.set()
        await anyio.Event().wait()  # the response never comes

    async with hooked(store, commit=lands_then_hangs) as saver, anyio.create_task_group() as group:
        group.start_soon(saver.save_snapshot, aggregate, 2, state(2))
        with anyio.fail_after(30):  # a guard against hanging, not a synchronisation
            await landed.wait()
        group.cancel_scope.cancel()

    history = await store.load(aggregate, snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.state == state(2)


async def test_an_unlanded_commit_leaves_an_object_only_the_sweep_deletes(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)
    await store.save_snapshot(aggregate, 1, state(1))
    committed = await snapshot_key(store, aggregate, 1)

    async with hooked(store, commit=lost_response(backend_of(store), lands=False)) as saver:
        with pytest.raises(SnapshotOutcomeUnknownError):
            await saver.save_snapshot(aggregate, 2, state(2))

    (left,) = await bucket_keys(store) - {committed}
    referenced = await backend_of(store).referenced_objects(aggregate)
    assert committed in referenced  # the sweep counts snapshot pointers as references
    assert left not in referenced  # so it deletes the one that never landed
    assert (await backend_of(store).get_head(aggregate)).snapshots == {"default": (1,)}  # type: ignore[union-attr]


async def test_a_refused_save_deletes_its_object(make_store: StoreFactory) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD, conflict_retries=0)
    aggregate = new_id()
    await build(store, aggregate, 3)

    async def refused(plan: CommitPlan) -> None:
        raise CommitRejected([Rejection(code="TransactionConflict", old=None)] * len(plan.writes))

    async with hooked(store, commit=refused) as saver:
        with pytest.raises(StorageUnavailableError) as busy:
            await saver.save_snapshot(aggregate, 2, state(2))

    assert not isinstance(busy.value, SnapshotOutcomeUnknownError)
    assert busy.value.code == "TransactionConflict"
    assert await bucket_keys(store) == set()


async def test_a_save_cancelled_between_attempts_deletes_its_object(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD, backoff_base=0.001)
    aggregate = new_id()
    await build(store, aggregate, 3)
    await store.save_snapshot(aggregate, 1, state(1))
    kept = await bucket_keys(store)
    rereading = anyio.Event()
    head_reads = 0

    async def refused(plan: CommitPlan) -> None:  # the first attempt: nothing written
        raise CommitRejected([Rejection(code="TransactionConflict", old=None)] * len(plan.writes))

    async def hangs_on_reread(aggregate_id: str) -> Any:  # before the second attempt is sent
        nonlocal head_reads
        head_reads += 1
        if head_reads > 1:
            rereading.set()
            await anyio.Event().wait()
        return await backend_of(store).get_head(aggregate_id)

    hooks = {"commit": refused, "get_head": hangs_on_reread}
    async with hooked(store, **hooks) as saver, anyio.create_task_group() as group:
        group.start_soon(saver.save_snapshot, aggregate, 2, state(2))
        with anyio.fail_after(30):  # a guard against hanging, not a synchronisation
            await rereading.wait()
        group.cancel_scope.cancel()

    assert await bucket_keys(store) == kept


# -- refusals sorted by code, as for appends and checkpoints --------------------------------


def refused_with(code: str, times: int, inner: Any) -> tuple[Callable[..., Any], list[str]]:
    """A commit refused ``times`` with ``code`` on the head's list, then sent to ``inner``."""
    sent: list[str] = []

    async def commit(plan: CommitPlan) -> None:
        sent.append(code if len(sent) < times else "sent")
        if sent[-1] != "sent":
            reasons: list[Rejection | None] = [Rejection(code=code, old=None)]
            raise CommitRejected(reasons + [None] * (len(plan.writes) - 1))
        await inner.commit(plan)

    return commit, sent


async def test_a_refusal_no_retry_mends_is_raised_at_once_and_deletes_the_object(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)
    commit, sent = refused_with("ValidationError", 1, backend_of(store))

    async with hooked(store, commit=commit) as saver:
        with pytest.raises(StorageError) as refused:
            await saver.save_snapshot(aggregate, 2, state(2))

    assert not isinstance(refused.value, StorageUnavailableError)  # not "retry later"
    assert refused.value.code == "ValidationError"
    assert sent == ["ValidationError"]  # sent once: retrying cannot mend it
    assert await bucket_keys(store) == set()
    assert (await backend_of(store).get_head(aggregate)).snapshots == {}  # type: ignore[union-attr]


@pytest.mark.parametrize("code", ["ConditionalCheckFailed", "TransactionConflict"])
async def test_a_moved_snap_seq_or_a_busy_item_is_retried_on_a_fresh_head(
    make_store: StoreFactory, code: str
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD, backoff_base=0.001)
    aggregate = new_id()
    await build(store, aggregate, 3)
    commit, sent = refused_with(code, 2, backend_of(store))

    async with hooked(store, commit=commit) as saver:
        saved = await saver.save_snapshot(aggregate, 2, state(2))

    assert saved is not None and sent == [code, code, "sent"]
    history = await store.load(aggregate, snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.state == state(2)


# -- a save that landed, answered by a refused re-send, is recognised -----------------------


def lands_then_resend_refused(inner: Any, times: int = 1) -> Callable[[CommitPlan], Any]:
    """The first ``times`` commits land, their answers are lost, and botocore's re-send
    (no request-token idempotency, as on the emulator) is refused because ``snap_seq``
    moved: what the save sees is a failed condition on the head's list."""
    landed = [0]

    async def commit(plan: CommitPlan) -> None:
        await inner.commit(plan)
        if landed[0] < times:
            landed[0] += 1
            head = await inner.get(plan.writes[0].aggregate_id, 0)  # type: ignore[union-attr]
            reasons: list[Rejection | None] = [Rejection(code="ConditionalCheckFailed", old=head)]
            raise CommitRejected(reasons + [None] * (len(plan.writes) - 1))

    return commit


@pytest.mark.parametrize("keep", [1, 2])
async def test_a_save_whose_resend_is_refused_keeps_its_own_object(
    make_store: StoreFactory, keep: int
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD, backoff_base=0.001)
    aggregate = new_id()
    await build(store, aggregate, 3)
    await store.save_snapshot(aggregate, 1, state(1), keep=keep)
    first = await snapshot_key(store, aggregate, 1)

    async with hooked(store, commit=lands_then_resend_refused(backend_of(store))) as saver:
        saved = await saver.save_snapshot(aggregate, 2, state(2), keep=keep)

    assert saved is not None and saved.version == 2
    history = await store.load(aggregate, snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.state == state(2)
    own = await snapshot_key(store, aggregate, 2)
    assert own in await bucket_keys(store)
    assert (first in await bucket_keys(store)) == (keep == 2)  # evicted with keep=1: deleted


async def test_a_landed_save_overwritten_before_its_retry_commits_a_fresh_object(
    make_store: StoreFactory,
) -> None:
    """The save lands, its answer is lost, another save overwrites it (deleting its
    object) and the re-send is refused: the retry must not point to the deleted object."""
    store = await make_store(offload_threshold_bytes=THRESHOLD, backoff_base=0.001)
    aggregate = new_id()
    await build(store, aggregate, 3)
    landed = [0]

    async def commit(plan: CommitPlan) -> None:
        await backend_of(store).commit(plan)
        if not landed[0]:
            landed[0] += 1
            await store.save_snapshot(aggregate, 2, state("other"))  # deletes our object
            head = await backend_of(store).get(aggregate, 0)
            reasons: list[Rejection | None] = [Rejection(code="ConditionalCheckFailed", old=head)]
            raise CommitRejected(reasons + [None] * (len(plan.writes) - 1))

    async with hooked(store, commit=commit) as saver:
        saved = await saver.save_snapshot(aggregate, 2, state(2))

    assert saved is not None
    history = await store.load(aggregate, snapshot_schema="default")  # no IntegrityError
    assert history.snapshot is not None and history.snapshot.state == state(2)
    assert await bucket_keys(store) == {await snapshot_key(store, aggregate, 2)}


# -- a save ends within the commit window, like an append -----------------------------------


async def test_a_save_without_an_answer_ends_at_the_append_deadline(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)

    async def never_answers(plan: CommitPlan) -> None:
        await anyio.Event().wait()

    async with hooked(store, commit=never_answers, deadline=0.3) as saver:
        with anyio.fail_after(10), pytest.raises(SnapshotOutcomeUnknownError) as unknown:
            await saver.save_snapshot(aggregate, 2, state(2))

    assert (unknown.value.code, unknown.value.reason) == (None, "AppendDeadline")
    assert len(await bucket_keys(store)) == 1  # it was in flight: left to the sweep


async def test_a_save_that_keeps_losing_stops_at_the_append_deadline(
    make_store: StoreFactory,
) -> None:
    store = await make_store(
        offload_threshold_bytes=THRESHOLD,
        conflict_retries=100,
        backoff_base=0.01,
        backoff_max=0.02,
    )
    aggregate = new_id()
    await build(store, aggregate, 3)
    commit, sent = refused_with("TransactionConflict", 1000, backend_of(store))

    async with hooked(store, commit=commit, deadline=0.3) as saver:
        with pytest.raises(StorageUnavailableError) as late:
            await saver.save_snapshot(aggregate, 2, state(2))

    assert not isinstance(late.value, SnapshotOutcomeUnknownError)
    assert (late.value.code, late.value.reason) == (None, "AppendDeadline")
    assert 1 <= len(sent) < 101  # stopped by the deadline, not by 100 refusals
    assert await bucket_keys(store) == set()  # nothing landed: its object is deleted
    assert (await backend_of(store).get_head(aggregate)).snapshots == {}  # type: ignore[union-attr]


async def test_a_deadline_during_the_read_back_of_a_refusal_ends_with_nothing_written(
    make_store: StoreFactory,
) -> None:
    """The refused transaction is over: the read-back after the deadline is conclusive,
    so the save says nothing was written (not "unknown") and deletes its object."""
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)
    commit, sent = refused_with("TransactionConflict", 1, backend_of(store))
    reads: list[Any] = []

    async def first_read_hangs(partition: str, sort_key: Any) -> Any:
        reads.append(sort_key)
        if len(reads) == 1:  # the read-back of the refusal, held past the deadline
            await anyio.Event().wait()
        return await backend_of(store).get(partition, sort_key)

    async with hooked(store, commit=commit, get=first_read_hangs, deadline=0.3) as saver:
        with anyio.fail_after(10), pytest.raises(StorageUnavailableError) as late:
            await saver.save_snapshot(aggregate, 2, state(2))

    assert not isinstance(late.value, SnapshotOutcomeUnknownError)
    assert (late.value.code, late.value.reason) == (None, "AppendDeadline")
    assert sent == ["TransactionConflict"] and len(reads) == 2
    assert await bucket_keys(store) == set()
    assert (await backend_of(store).get_head(aggregate)).snapshots == {}  # type: ignore[union-attr]


async def test_a_save_cancelled_while_reading_back_a_refusal_keeps_its_object(
    make_store: StoreFactory,
) -> None:
    """A refusal may answer the re-send of a landed save: until the read-back says, the
    object may be referenced, so a save cancelled then must not delete it."""
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    aggregate = new_id()
    await build(store, aggregate, 3)
    reading = anyio.Event()

    async def hangs(partition: str, sort_key: Any) -> None:
        reading.set()
        await anyio.Event().wait()

    hooks = {"commit": lands_then_resend_refused(backend_of(store)), "get": hangs}
    async with hooked(store, **hooks) as saver, anyio.create_task_group() as group:
        group.start_soon(saver.save_snapshot, aggregate, 2, state(2))
        with anyio.fail_after(30):  # a guard against hanging, not a synchronisation
            await reading.wait()
        group.cancel_scope.cancel()

    history = await store.load(aggregate, snapshot_schema="default")
    assert history.snapshot is not None and history.snapshot.state == state(2)
