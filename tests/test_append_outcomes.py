"""What an append reports, and what it leaves in the bucket, when it does not simply land.

- Objects uploaded for an append are deleted when it definitely did not land (a failure
  or cancellation before anything was sent, a refusal) and kept while a transaction
  carrying them may have been stored.
- A lost answer is settled by reading every change set back; only change sets of this
  very attempt (commit id and timestamp) acknowledge it, and an earlier call's are
  returned as stored.
- Past the point where the change set may be stored, a failure or the deadline is
  :class:`CommitOutcomeUnknownError`, never an error that says nothing was written.

The fault cases run on the in-memory backend wrapped by :class:`FaultyBackend`, which
fails commits and change set reads on cue; the rest run on every backend.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import nullcontext, suppress
from typing import Any

import anyio
import anyio.abc
import pytest

from eventstore_async import (
    ANY,
    Append,
    ChangeSet,
    CommitOutcomeUnknownError,
    EventStore,
    IntegrityError,
    InvalidInputError,
    StorageUnavailableError,
    StoreClosedError,
    StoreConfig,
)
from eventstore_async._backends.aws.items import record_to_item
from eventstore_async._backends.memory import MemoryBackend
from eventstore_async._records import (
    ChangeSetRecord,
    CommitPlan,
    CommitRejected,
    FeedShapeRecord,
    PutFeedShape,
)

from .conftest import StoreFactory, backend_of, store_on

pytestmark = pytest.mark.anyio

THRESHOLD = 1024


def new_id() -> str:
    return f"outcome-{uuid.uuid4().hex[:10]}"


def big(label: str) -> list[dict[str, Any]]:
    """Events over the offload threshold: they go to the bucket."""
    return [{"label": label, "pad": "x" * (2 * THRESHOLD)}]


async def object_keys(store: EventStore) -> list[str]:
    objects = backend_of(store).objects
    assert objects is not None
    return sorted([info.key async for info in objects.list(store.config.key_prefix)])


def lost(operation: str = "TransactWriteItems") -> StorageUnavailableError:
    return StorageUnavailableError(
        "connection reset", reason="ConnectionResetError", operation=operation
    )


class FaultyBackend(MemoryBackend):
    """A MemoryBackend whose commits and change set reads fail on cue.

    Commit faults: ``lost`` (stored, answer lost), ``refused-lost`` (refused, answer
    lost), ``crash-before`` / ``crash-after`` (an unexpected error, without / after
    storing), ``lost-at-close`` (stored, then the answer is lost when the store closes).
    Read faults: ``fail``, ``hang`` (until cancelled; sets ``hanging``), ``closed``. After
    ``aclose`` every
    change set read raises :class:`StoreClosedError`, as the DynamoDB backend does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.commit_faults: list[str] = []
        self.read_faults: list[str] = []
        self.in_flight = anyio.Event()
        self.hanging = anyio.Event()
        self.closed = anyio.Event()

    async def commit(self, plan: CommitPlan) -> None:
        if isinstance(plan.writes[0], PutFeedShape):  # recorded by the first append: no fault
            await super().commit(plan)
            return
        fault = self.commit_faults.pop(0) if self.commit_faults else "ok"
        if fault == "crash-before":
            raise RuntimeError("the client broke before sending")
        if fault == "refused-lost":
            await self._refused_but_lost(plan)
        await super().commit(plan)
        if fault == "lost":
            raise lost()
        if fault == "crash-after":
            raise RuntimeError("the client broke after sending")
        if fault == "lost-at-close":
            self.in_flight.set()
            await self.closed.wait()
            raise lost()

    async def _refused_but_lost(self, plan: CommitPlan) -> None:
        try:
            await super().commit(plan)
        except CommitRejected as refusal:
            raise lost() from refusal
        raise AssertionError("the transaction was expected to be refused")

    async def get_change_set(self, aggregate_id: str, version: int) -> ChangeSetRecord | None:
        fault = self.read_faults.pop(0) if self.read_faults else "ok"
        if self.closed.is_set() or fault == "closed":
            raise StoreClosedError("the store is not open")
        if fault == "fail":
            raise lost("GetItem")
        if fault == "hang":
            self.hanging.set()
            await anyio.sleep_forever()
        return await super().get_change_set(aggregate_id, version)

    async def aclose(self) -> None:
        self.closed.set()
        await super().aclose()


def faulty_store(**config: Any) -> tuple[EventStore, FaultyBackend]:
    settings: dict[str, Any] = {
        "table_name": "faulty",
        "bucket_name": "faulty",
        "backoff_base": 0.001,
        "offload_threshold_bytes": THRESHOLD,
    }
    settings.update(config)
    backend = FaultyBackend()
    return store_on(StoreConfig(**settings), backend), backend


async def stored(store: EventStore, aggregate_id: str) -> list[ChangeSet]:
    return list((await store.load(aggregate_id)).change_sets)


# -- before anything is sent: every backend -------------------------------------------------


async def test_a_batch_whose_encoding_outlasts_max_upload_seconds_commits_nothing(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD, max_upload_seconds=0.3)
    first, second = new_id(), new_id()

    async def slow_source() -> AsyncIterator[dict[str, Any]]:
        await anyio.sleep(0.4)  # a slow producer: the first entry's object keeps ageing
        yield {"n": 1}

    with pytest.raises(StorageUnavailableError) as too_slow:  # transient: retry later
        await store.append_many(
            [
                Append(aggregate_id=first, events=big("first"), expected_version=0),
                Append(aggregate_id=second, events=slow_source(), expected_version=0),
            ]
        )

    assert (too_slow.value.code, too_slow.value.reason) == (None, "UploadTooSlow")
    assert "nothing was committed" in str(too_slow.value)
    assert await store.head(first) is None and await store.head(second) is None
    assert await object_keys(store) == []
    patient = await make_store(
        offload_threshold_bytes=THRESHOLD, max_upload_seconds=900
    )  # same table
    retried = await patient.append_many(  # nothing was written: the same batch lands
        [
            Append(aggregate_id=first, events=big("first"), expected_version=0),
            Append(aggregate_id=second, events=[{"n": 1}], expected_version=0),
        ]
    )
    assert [cs.version for cs in retried] == [1, 1]


async def test_an_upload_slower_than_max_upload_seconds_commits_nothing(
    make_store: StoreFactory,
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD, max_upload_seconds=0.3)
    aggregate = new_id()

    async def slow_stream() -> AsyncIterator[dict[str, Any]]:
        yield big("first")[0]  # over the threshold: the upload starts
        await anyio.sleep(0.4)  # a slow producer: the upload outlasts the limit
        yield {"n": 2}

    with pytest.raises(StorageUnavailableError) as too_slow:  # transient: retry later
        await store.append(aggregate, slow_stream(), expected_version=0)

    assert (too_slow.value.code, too_slow.value.reason) == (None, "UploadTooSlow")
    assert "nothing was committed" in str(too_slow.value)
    assert await store.head(aggregate) is None
    assert await object_keys(store) == []
    patient = await make_store(
        offload_threshold_bytes=THRESHOLD, max_upload_seconds=900
    )  # same table
    retried = await patient.append(aggregate, big("first"), expected_version=0)
    assert retried.version == 1  # nothing was written: the retry lands as the first
    assert len(await object_keys(store)) == 1


@pytest.mark.parametrize("ending", ["cancelled", "source error"])
async def test_a_batch_ended_while_encoding_deletes_the_objects_already_uploaded(
    make_store: StoreFactory, ending: str
) -> None:
    store = await make_store(offload_threshold_bytes=THRESHOLD)
    first, second = new_id(), new_id()

    with anyio.CancelScope() as scope:

        async def ending_source() -> AsyncIterator[dict[str, Any]]:
            if ending == "cancelled":
                scope.cancel()
                await anyio.sleep_forever()
            raise RuntimeError("the source broke")
            yield {"n": 1}  # pragma: no cover - makes this an async generator

        with pytest.raises(RuntimeError) if ending == "source error" else nullcontext():
            await store.append_many(
                [
                    Append(aggregate_id=first, events=big("first"), expected_version=0),
                    Append(aggregate_id=second, events=ending_source(), expected_version=0),
                ]
            )

    assert scope.cancelled_caught == (ending == "cancelled")
    assert await store.head(first) is None
    assert await object_keys(store) == []


async def test_version_arguments_are_named_version(store: EventStore) -> None:
    aggregate = new_id()
    await store.append(aggregate, [{"n": 1}], expected_version=0)
    with pytest.raises(InvalidInputError) as zero:
        await store.save_snapshot(aggregate, 0, {"s": 1})
    with pytest.raises(InvalidInputError) as text:
        await store.save_snapshot(aggregate, "1", {"s": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError) as events:
        store.iter_events(aggregate, 0)
    assert [e.value.argument for e in (zero, text, events)] == ["version"] * 3


# -- lost answers settled by reading back --------------------------------------------------


async def test_a_retry_whose_refusal_is_lost_returns_the_stored_change_set() -> None:
    store, backend = faulty_store()
    async with store:
        backend.commit_faults, backend.read_faults = ["lost"], ["fail"]
        with pytest.raises(CommitOutcomeUnknownError):
            await store.append(
                "a", big("first"), expected_version=0, commit_id="c-1", metadata={"try": 1}
            )
        backend.commit_faults = ["refused-lost"]
        again = await store.append(
            "a", big("first"), expected_version=0, commit_id="c-1", metadata={"try": 2}
        )

        assert [again] == await stored(store, "a")
        assert again.metadata == {"try": 1}
        assert await object_keys(store) == sorted(await backend.referenced_objects("a"))


async def test_a_batch_retry_whose_refusal_is_lost_returns_every_stored_change_set() -> None:
    store, backend = faulty_store()
    batch = [
        Append(aggregate_id="a", events=[{"n": 1}], expected_version=0, commit_id="c-1"),
        Append(aggregate_id="b", events=big("b"), expected_version=0, commit_id="c-2"),
    ]
    async with store:
        backend.commit_faults, backend.read_faults = ["lost"], ["fail"]
        with pytest.raises(CommitOutcomeUnknownError):
            await store.append_many(batch)
        backend.commit_faults = ["refused-lost"]
        again = await store.append_many(batch)

        assert again == [*await stored(store, "a"), *await stored(store, "b")]
        assert await object_keys(store) == sorted(await backend.referenced_objects("b"))


async def test_an_any_entry_not_at_its_version_leaves_a_lost_refusal_unknown() -> None:
    """An ANY append's commit id may be stored at another version (its marker says
    where): not finding it where this attempt wrote proves nothing."""
    store, backend = faulty_store()
    batch = [
        Append(aggregate_id="a", events=[{"n": 1}], expected_version=0, commit_id="c-1"),
        Append(aggregate_id="b", events=big("b"), expected_version=ANY, commit_id="c-2"),
    ]
    async with store:
        backend.commit_faults, backend.read_faults = ["lost"], ["fail"]
        with pytest.raises(CommitOutcomeUnknownError):
            await store.append_many(batch)
        backend.commit_faults = ["refused-lost"]  # b is retried at version 2
        with pytest.raises(CommitOutcomeUnknownError):
            await store.append_many(batch)

        again = await store.append_many(batch)
        assert again == [*await stored(store, "a"), *await stored(store, "b")]
        left = set(await object_keys(store)) - await backend.referenced_objects("b")
        assert len(left) == 1  # the unsettled attempt's object, left to the sweep


async def test_a_batch_partly_stored_by_an_earlier_call_is_not_acknowledged() -> None:
    store, backend = faulty_store()
    async with store:
        backend.commit_faults, backend.read_faults = ["lost"], ["fail"]
        with pytest.raises(CommitOutcomeUnknownError):
            await store.append("a", [{"n": 1}], expected_version=0, commit_id="c-1")
        backend.commit_faults = ["refused-lost"]
        with pytest.raises(IntegrityError, match="part of a batch"):
            await store.append_many(
                [
                    Append(
                        aggregate_id="a", events=[{"n": 1}], expected_version=0, commit_id="c-1"
                    ),
                    Append(aggregate_id="b", events=big("b"), expected_version=0, commit_id="c-2"),
                ]
            )

        assert await store.head("b") is None
        assert await object_keys(store) == []  # the refused batch's object is deleted


async def test_a_lost_batch_answer_is_acknowledged_only_when_every_entry_is_read_back() -> None:
    store, backend = faulty_store()
    batch = [
        Append(aggregate_id="a", events=[{"n": 1}], expected_version=0, commit_id="c-1"),
        Append(aggregate_id="b", events=big("b"), expected_version=0, commit_id="c-2"),
    ]
    async with store:
        backend.commit_faults, backend.read_faults = ["lost"], ["ok", "fail"]
        with pytest.raises(CommitOutcomeUnknownError) as unknown:
            await store.append_many(batch)
        assert unknown.value.commit_ids == ("c-1", "c-2")
        assert len(await object_keys(store)) == 1  # it landed: its object stays

        again = await store.append_many(batch)
        assert again == [*await stored(store, "a"), *await stored(store, "b")]
        assert await object_keys(store) == sorted(await backend.referenced_objects("b"))


# -- failures once a transaction was sent ---------------------------------------------------


async def test_a_deadline_after_a_landed_refusal_is_an_unknown_outcome() -> None:
    store, backend = faulty_store(append_deadline_seconds=1.0)
    async with store:
        backend.commit_faults, backend.read_faults = ["lost"], ["fail"]
        with pytest.raises(CommitOutcomeUnknownError):
            await store.append("a", [{"n": 1}], expected_version=ANY, commit_id="c-1")
        backend.read_faults = ["hang"]  # the refusal says "landed"; its read-back hangs
        with pytest.raises(CommitOutcomeUnknownError) as unknown:
            await store.append("a", [{"n": 1}], expected_version=ANY, commit_id="c-1")
        assert (unknown.value.code, unknown.value.reason) == (None, "AppendDeadline")

        again = await store.append("a", [{"n": 1}], expected_version=ANY, commit_id="c-1")
        assert [again] == await stored(store, "a")


async def test_a_failed_read_back_of_a_landed_refusal_is_an_unknown_outcome() -> None:
    store, backend = faulty_store()
    async with store:
        backend.commit_faults, backend.read_faults = ["lost"], ["fail"]
        with pytest.raises(CommitOutcomeUnknownError):
            await store.append("a", [{"n": 1}], expected_version=ANY, commit_id="c-1")
        backend.read_faults = ["closed"]
        with pytest.raises(CommitOutcomeUnknownError) as unknown:
            await store.append("a", [{"n": 1}], expected_version=ANY, commit_id="c-1")
        assert unknown.value.commit_id == "c-1"


async def test_closing_the_store_under_a_transaction_keeps_its_object() -> None:
    store, backend = faulty_store()
    failures: list[BaseException] = []
    await store.__aenter__()

    async def append() -> None:
        try:
            await store.append("a", big("a"), expected_version=0, commit_id="c-1")
        except Exception as exc:
            failures.append(exc)

    backend.commit_faults = ["lost-at-close"]
    async with anyio.create_task_group() as group:
        group.start_soon(append)
        await backend.in_flight.wait()
        await store.aclose(grace_seconds=0)

    assert [type(exc) for exc in failures] == [CommitOutcomeUnknownError]
    head = await backend.get_head("a")
    assert head is not None and head.last_commit_id == "c-1"  # it had landed
    assert await object_keys(store) == sorted(await backend.referenced_objects("a"))


def reads_feed_shape(request: bytes) -> bool:
    """Whether a raw DynamoDB request is the GetItem of the table's feed shape item."""
    return b"DynamoDB_20120810.GetItem" in request and b"schema" in request


def shape_answer(shards: int) -> bytes:
    """A GetItem answer carrying the table's feed shape item, as DynamoDB sends it."""
    body = json.dumps({"Item": record_to_item(FeedShapeRecord(shards=shards))}).encode()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def test_closing_a_dynamodb_store_under_a_transaction_is_an_unknown_outcome() -> None:
    """The real client, closed while a transaction it sent waits for an answer (one
    attempt per request: botocore's retries on the closed client would only add time)."""
    received = anyio.Event()
    failures: list[BaseException] = []

    async def answer_nothing(client: anyio.abc.SocketStream) -> None:
        async with client:
            with suppress(anyio.EndOfStream):  # the closed store hangs up
                # The store's one check of the feed shape, before its first append:
                while reads_feed_shape(await client.receive()):
                    await client.send(shape_answer(shards=0))
                received.set()  # the transaction: no answer, ever
                await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    config = StoreConfig(
        table_name="events",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        max_attempts=1,
    )
    store = EventStore(config)

    async def append() -> None:
        try:
            await store.append("a", [{"n": 1}], expected_version=0, commit_id="c-1")
        except Exception as exc:
            failures.append(exc)

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, answer_nothing)
        await store.__aenter__()
        async with anyio.create_task_group() as appending:
            appending.start_soon(append)
            await received.wait()
            await store.aclose(grace_seconds=0)
        group.cancel_scope.cancel()

    assert [type(exc) for exc in failures] == [CommitOutcomeUnknownError]


@pytest.mark.parametrize(("fault", "landed"), [("crash-before", False), ("crash-after", True)])
async def test_an_unexpected_error_from_the_commit_is_settled_by_read_back(
    fault: str, landed: bool
) -> None:
    store, backend = faulty_store()
    async with store:
        backend.commit_faults = [fault]
        if landed:
            change_set = await store.append("a", big("a"), expected_version=0, commit_id="c-1")
            assert [change_set] == await stored(store, "a")
        else:
            with pytest.raises(CommitOutcomeUnknownError) as unknown:
                await store.append("a", big("a"), expected_version=0, commit_id="c-1")
            assert (unknown.value.code, unknown.value.reason) == (None, "RuntimeError")
            assert await store.head("a") is None
        assert len(await object_keys(store)) == 1  # kept: it may have been (or was) stored


async def test_a_cancellation_while_settling_propagates_and_keeps_the_object() -> None:
    store, backend = faulty_store()
    async with store:
        backend.commit_faults, backend.read_faults = ["lost"], ["hang"]

        async def append() -> None:
            await store.append("a", big("a"), expected_version=0)

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(append)
                await backend.hanging.wait()
                scope.cancel()

        assert scope.cancelled_caught
        assert (await store.head("a")) is not None
        assert await object_keys(store) == sorted(await backend.referenced_objects("a"))
