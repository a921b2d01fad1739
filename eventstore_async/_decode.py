"""Storage records to the public models."""

from __future__ import annotations

from ._codec import EventCodec
from ._models import AggregateHead, ChangeSet
from ._records import ChangeSetRecord, HeadRecord
from ._timeutil import from_us

__all__ = ["to_change_set", "to_head"]


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


def to_change_set(codec: EventCodec, record: ChangeSetRecord) -> ChangeSet:
    return ChangeSet(
        aggregate_id=record.aggregate_id,
        version=record.version,
        commit_id=record.commit_id,
        timestamp=from_us(record.timestamp_us),
        events=codec.decode_events(record.payload),
        metadata=codec.decode_metadata(record.metadata),
    )
