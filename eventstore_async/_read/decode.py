"""Storage records to the public models; offloaded payloads fetched on the way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import msgspec

from .._codec import EventCodec, UndecodableEventError
from .._errors import IntegrityError
from .._models import AggregateHead, ChangeSet, RawEvent, Snapshot
from .._offload.payload import PayloadReader
from .._records import ChangeSetRecord, HeadRecord, SnapshotRecord
from .._timeutil import from_us

__all__ = ["ChangeSetDecoder", "to_head"]


def to_head(record: HeadRecord) -> AggregateHead:
    return AggregateHead(
        aggregate_id=record.aggregate_id,
        aggregate_type=record.aggregate_type,
        version=record.version,
        last_commit_id=record.last_commit_id,
        event_count=record.event_count,
        created_at=from_us(record.created_us),
        updated_at=from_us(record.updated_us),
    )


class ChangeSetDecoder:
    """Decodes change set records; offloaded ones are fetched, several at once."""

    def __init__(self, codec: EventCodec, reader: PayloadReader, fetch_concurrency: int) -> None:
        self._codec = codec
        self._reader = reader
        self._limiter = anyio.CapacityLimiter(fetch_concurrency)

    async def snapshot(
        self, record: SnapshotRecord, state_type: type[msgspec.Struct] | None = None
    ) -> Snapshot:
        """The snapshot, its state decoded as ``state_type`` when given, else as
        registered (unregistered types load as :class:`RawEvent`).

        Raises:
            IntegrityError: the state does not decode (naming the snapshot), or its
                offloaded object is missing or damaged.
        """
        payload = record.payload
        if record.pointer is not None:
            async with self._limiter:
                payload = await self._reader.fetch(record.pointer)
        try:
            if state_type is not None:
                state = self._codec.decode_as(payload or b"", state_type)
            else:
                (state,) = self._codec.decode_events(payload or b"")
        except UndecodableEventError as exc:
            raise exc.located(record.aggregate_id, record.version) from exc
        return Snapshot(
            aggregate_id=record.aggregate_id,
            version=record.version,
            schema=record.schema,
            state=state,
            timestamp=from_us(record.timestamp_us),
        )

    async def change_set(self, record: ChangeSetRecord, *, lenient: bool = False) -> ChangeSet:
        """The change set; with ``lenient``, one that cannot be read whole comes back with
        what could not be decoded as :class:`RawEvent` carrying the ``error`` (see
        :meth:`_unreadable`) instead of raising :class:`IntegrityError`."""
        if lenient:
            try:
                return await self.change_set(record)
            except IntegrityError as exc:
                return await self._unreadable(record, exc)
        if record.pointer is None:
            assert record.payload is not None
            return self._build(record, record.payload)
        async with self._limiter:
            payload = await self._reader.fetch(record.pointer)
        return self._build(record, payload)

    async def _unreadable(self, record: ChangeSetRecord, error: IntegrityError) -> ChangeSet:
        """A change set that failed to decode, as well as it can be read: its events with
        the undecodable ones raw; or, when the payload itself cannot be read (object
        missing or damaged, malformed bytes), one ``RawEvent(type="", data=None,
        version=0, error=...)``."""
        events: tuple[Any, ...] = (RawEvent(type="", data=None, version=0, error=str(error)),)
        metadata: dict[str, Any] = {}
        if isinstance(error, UndecodableEventError):  # the payload reads: decode it leniently
            payload = record.payload
            if record.pointer is not None:
                async with self._limiter:
                    payload = await self._reader.fetch(record.pointer)
            events = self._codec.decode_events(payload or b"", lenient=True)
            metadata = self._codec.decode_metadata(record.metadata)
        return ChangeSet(
            aggregate_id=record.aggregate_id,
            version=record.version,
            commit_id=record.commit_id,
            timestamp=from_us(record.timestamp_us),
            events=events,
            metadata=metadata,
            event_count=record.event_count,
        )

    async def change_sets(
        self, records: Sequence[ChangeSetRecord], *, lenient: bool = False
    ) -> list[ChangeSet]:
        """Decode in order; offloaded payloads are fetched concurrently (bounded).

        With ``lenient``, see :meth:`change_set`. The first failure, in order, is raised.
        """
        decoded, failure = await self.change_sets_in_order(records, lenient=lenient)
        if failure is not None:
            raise failure
        return decoded

    async def change_sets_in_order(
        self, records: Sequence[ChangeSetRecord], *, lenient: bool = False
    ) -> tuple[list[ChangeSet], Exception | None]:
        """The change sets before the first that fails, in order, and that failure (None:
        none did). Offloaded payloads are fetched concurrently (bounded); a failure
        cancels only the records after it (those before it are still wanted)."""
        if all(record.pointer is None for record in records):
            return await self._inline_in_order(records, lenient=lenient)
        results: list[ChangeSet | Exception | None] = [None] * len(records)
        scopes = [anyio.CancelScope() for _ in records]

        async def decode(index: int, record: ChangeSetRecord) -> None:
            with scopes[index]:
                try:
                    results[index] = await self.change_set(record, lenient=lenient)
                except Exception as exc:
                    results[index] = exc
                    for later in scopes[index + 1 :]:
                        later.cancel()

        async with anyio.create_task_group() as group:
            for index, record in enumerate(records):
                group.start_soon(decode, index, record)
        decoded: list[ChangeSet] = []
        for result in results:
            if not isinstance(result, ChangeSet):  # a failure, or cancelled after one
                return decoded, result
            decoded.append(result)
        return decoded, None

    async def _inline_in_order(
        self, records: Sequence[ChangeSetRecord], *, lenient: bool
    ) -> tuple[list[ChangeSet], Exception | None]:
        decoded: list[ChangeSet] = []
        for record in records:
            try:
                if lenient:
                    decoded.append(await self.change_set(record, lenient=True))
                else:
                    decoded.append(self._build(record, record.payload or b""))
            except Exception as exc:
                return decoded, exc
        return decoded, None

    def _build(self, record: ChangeSetRecord, payload: bytes) -> ChangeSet:
        try:
            events = self._codec.decode_events(payload)
        except UndecodableEventError as exc:
            raise exc.located(record.aggregate_id, record.version) from exc
        return ChangeSet(
            aggregate_id=record.aggregate_id,
            version=record.version,
            commit_id=record.commit_id,
            timestamp=from_us(record.timestamp_us),
            events=events,
            metadata=self._codec.decode_metadata(record.metadata),
            event_count=record.event_count,
        )
