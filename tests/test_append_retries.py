"""Append's retry rules, driven by a backend that fails on cue.

The emulator never reports TransactionConflict or loses a response, so these cases
run against the in-memory backend wrapped by a scripted one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import anyio
import pytest

from eventstore_async import (
    ANY,
    CommitOutcomeUnknownError,
    EventStore,
    StorageUnavailableError,
    StoreConfig,
)
from eventstore_async._backends.memory import MemoryBackend
from eventstore_async._backends.protocol import Page
from eventstore_async._records import (
    ChangeSetRecord,
    CommitPlan,
    CommitRejected,
    HeadRecord,
    PutFeedShape,
    Record,
    Rejection,
    SortKey,
)

pytestmark = pytest.mark.anyio


class ScriptedBackend:
    """Delegates to a MemoryBackend; ``faults`` says what each commit does first."""

    def __init__(self, faults: list[str]) -> None:
        self.inner = MemoryBackend()
        self.faults = list(faults)
        self.commits = 0

    async def commit(self, plan: CommitPlan) -> None:
        if isinstance(plan.writes[0], PutFeedShape):  # recorded by the first append: no fault
            await self.inner.commit(plan)
            return
        self.commits += 1
        fault = self.faults.pop(0) if self.faults else "ok"
        if fault == "busy":
            raise CommitRejected([Rejection("TransactionConflict", None)] * len(plan.writes))
        if fault == "hang":  # no answer: only the append deadline ends the wait
            await anyio.sleep_forever()
        if fault == "lost-before":  # the request never reached the table
            raise StorageUnavailableError("reset", reason="ConnectionResetError", operation="T")
        await self.inner.commit(plan)
        if fault == "lost-after":  # committed, but the response never came back
            raise StorageUnavailableError("reset", reason="ConnectionResetError", operation="T")

    @property
    def objects(self) -> None:
        return None

    def change_set_size(self, record: ChangeSetRecord) -> int:
        return self.inner.change_set_size(record)

    def companion_size(
        self, record: ChangeSetRecord, aggregate_type: str | None, feed: bool
    ) -> int:
        return self.inner.companion_size(record, aggregate_type, feed)

    async def referenced_objects(self, aggregate_id: str) -> set[str]:
        return await self.inner.referenced_objects(aggregate_id)

    async def open(self) -> None: ...
    async def aclose(self) -> None: ...
    async def create_schema(self) -> None: ...
    async def drop_schema(self) -> None: ...

    async def get(self, partition: str, sort_key: SortKey) -> Record | None:
        return await self.inner.get(partition, sort_key)

    async def get_head(self, aggregate_id: str) -> HeadRecord | None:
        return await self.inner.get_head(aggregate_id)

    async def get_change_set(self, aggregate_id: str, version: int) -> ChangeSetRecord | None:
        return await self.inner.get_change_set(aggregate_id, version)

    def query(self, aggregate_id: str, low: int, high: int | None) -> AsyncGenerator[Page, Any]:
        return self.inner.query(aggregate_id, low, high)


def scripted_store(
    *faults: str, retries: int = 3, deadline: float = 60.0
) -> tuple[EventStore, ScriptedBackend]:
    backend = ScriptedBackend(list(faults))
    config = StoreConfig(
        table_name="scripted",
        conflict_retries=retries,
        backoff_base=0.001,
        append_deadline_seconds=deadline,
    )
    return EventStore(config, backend=backend), backend


async def test_transaction_conflict_is_retried() -> None:
    store, backend = scripted_store("busy", "busy")
    async with store:
        change_set = await store.append("a-1", [{"n": 1}], expected_version=0)
        assert change_set.version == 1
        assert backend.commits == 3
        assert (await store.load("a-1")).version == 1


async def test_transaction_conflict_retries_are_bounded() -> None:
    store, backend = scripted_store("busy", "busy", "busy", "busy", retries=2)
    async with store:
        with pytest.raises(StorageUnavailableError) as busy:
            await store.append("a-1", [{"n": 1}], expected_version=0)
        assert busy.value.code == "TransactionConflict"
        assert backend.commits == 3
        assert await store.head("a-1") is None


async def test_lost_response_after_commit_is_settled_as_landed() -> None:
    store, _ = scripted_store("lost-after")
    async with store:
        change_set = await store.append("a-1", [{"n": 1}], expected_version=0, commit_id="c-1")
        history = await store.load("a-1")
        assert change_set == history.change_sets[0]
        assert history.version == 1


async def test_lost_request_raises_outcome_unknown_and_a_retry_lands_once() -> None:
    store, _ = scripted_store("lost-before")
    async with store:
        with pytest.raises(CommitOutcomeUnknownError) as unknown:
            await store.append("a-1", [{"n": 1}], expected_version=0, commit_id="c-1")
        assert unknown.value.commit_id == "c-1"
        assert await store.head("a-1") is None

        retried = await store.append("a-1", [{"n": 1}], expected_version=0, commit_id="c-1")
        assert retried.version == 1


async def test_any_append_after_an_unknown_outcome_never_lands_twice() -> None:
    store, _ = scripted_store("ok", "lost-after")
    async with store:
        await store.append("a-1", [{"n": 0}], expected_version=ANY)
        first = await store.append("a-1", [{"n": 1}], expected_version=ANY, commit_id="c-9")
        await store.append("a-1", [{"n": 2}], expected_version=ANY)
        again = await store.append("a-1", [{"n": 1}], expected_version=ANY, commit_id="c-9")

        history = await store.load("a-1")
        assert again == first
        assert [cs.commit_id for cs in history.change_sets].count("c-9") == 1
        assert history.version == 3


async def test_a_transaction_without_an_answer_ends_at_the_deadline() -> None:
    store, _ = scripted_store("hang", deadline=0.2)
    async with store:
        with pytest.raises(CommitOutcomeUnknownError) as unknown:
            await store.append("a-1", [{"n": 1}], expected_version=0, commit_id="c-1")
        assert (unknown.value.code, unknown.value.reason) == (None, "AppendDeadline")
        assert await store.head("a-1") is None


async def test_retrying_stops_at_the_deadline_with_nothing_written() -> None:
    store, backend = scripted_store(*["busy"] * 1000, retries=100, deadline=0.3)
    async with store:
        with pytest.raises(StorageUnavailableError) as late:
            await store.append("a-1", [{"n": 1}], expected_version=0)
        assert (late.value.code, late.value.reason) in {
            (None, "AppendDeadline"),
            ("TransactionConflict", None),
        }
        assert not isinstance(late.value, CommitOutcomeUnknownError) or backend.commits > 0
        assert await store.head("a-1") is None
