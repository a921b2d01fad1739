"""The checks of an append and of a batch that need no encoding of the events.

``append`` and ``append_many`` run them before anything is encoded or uploaded, so a
bad entry anywhere in a batch is refused with nothing written. What passes is an
:class:`AppendHeader`: the checked arguments, waiting for their encoded events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .._codec import EventCodec
from .._config import MAX_METADATA_BYTES
from .._errors import InvalidInputError
from .._feed.positions import shard_of
from .._models import ANY, AnyVersion, Append
from .._offload.payload import EncodedPayload
from .._records import MAX_TRANSACTION_ACTIONS
from .._validation import (
    check_aggregate_id,
    check_aggregate_type,
    check_commit_id,
    check_events,
    check_expected_version,
    check_metadata,
)
from .plan import AppendRequest

__all__ = ["AppendHeader", "check_append", "check_batch", "naming"]


@dataclass(frozen=True, slots=True)
class AppendHeader:
    """The checked arguments of an append, before its events are encoded."""

    aggregate_id: str
    expected: int | AnyVersion
    aggregate_type: str | None
    commit_id: str
    metadata: dict[str, Any]
    metadata_bytes: bytes | None
    marked: bool = False  # a command: write the commit marker at an explicit version too

    def request(self, encoded: EncodedPayload) -> AppendRequest:
        return AppendRequest(
            aggregate_id=self.aggregate_id,
            events=encoded.events,
            event_count=encoded.event_count,
            payload=encoded.payload,
            pointer=encoded.pointer,
            metadata=self.metadata,
            metadata_bytes=self.metadata_bytes,
            aggregate_type=self.aggregate_type,
            commit_id=self.commit_id,
            guarded=self.marked or self.expected is ANY,
            exact=self.expected is not ANY,
            digest=encoded.digest,
        )


def check_append(
    codec: EventCodec,
    aggregate_id: Any,
    events: Any,
    expected_version: Any,
    aggregate_type: Any,
    metadata: Any,
    commit_id: Any,
    *,
    marked: bool = False,
) -> AppendHeader:
    """Every check of an append that needs no encoding of its events (a new commit id
    when none is given; the metadata is encoded here, to check its size). ``marked``:
    also write the commit marker (see :class:`AppendHeader`).

    Raises:
        InvalidInputError: an argument is not acceptable.
    """
    aggregate_id = check_aggregate_id(aggregate_id)
    expected = check_expected_version(expected_version)
    aggregate_type = check_aggregate_type(aggregate_type)
    commit_id = check_commit_id(commit_id) or uuid.uuid4().hex
    checked_metadata = check_metadata(metadata)
    metadata_bytes = None
    if checked_metadata:
        metadata_bytes = codec.encode_metadata(checked_metadata)
        if len(metadata_bytes) > MAX_METADATA_BYTES:
            raise InvalidInputError(
                "metadata", f"encodes to {len(metadata_bytes)} bytes, over {MAX_METADATA_BYTES}"
            )
    check_events(events)
    return AppendHeader(
        aggregate_id=aggregate_id,
        expected=expected,
        aggregate_type=aggregate_type,
        commit_id=commit_id,
        metadata=dict(checked_metadata or {}),
        metadata_bytes=metadata_bytes,
        marked=marked,
    )


def check_batch(
    codec: EventCodec, appends: Any, feed_shards: int, *, marked: bool = False
) -> list[AppendHeader]:
    """Each entry of ``append_many`` checked as by :func:`check_append` (its argument
    named ``appends[i].<name>``), then the batch as a whole. With ``marked`` (the
    commands of a repository) every entry also writes its commit marker.

    Raises:
        InvalidInputError: not a non-empty sequence of Append, a bad entry, an
            aggregate named twice, or over DynamoDB's 100 actions per transaction.
    """
    if not isinstance(appends, Sequence) or isinstance(appends, str | bytes):
        raise InvalidInputError("appends", "must be a list or tuple of Append")
    if not appends:
        raise InvalidInputError("appends", "must hold at least one Append")
    headers: list[AppendHeader] = []
    for index, append in enumerate(appends):
        if not isinstance(append, Append):
            raise InvalidInputError(f"appends[{index}]", "must be an Append")
        with naming(f"appends[{index}]."):
            headers.append(
                check_append(
                    codec,
                    append.aggregate_id,
                    append.events,
                    append.expected_version,
                    append.aggregate_type,
                    append.metadata,
                    append.commit_id,
                    marked=marked,
                )
            )
    _check_distinct(headers)
    _check_actions(headers, feed_shards)
    return headers


def _check_distinct(headers: list[AppendHeader]) -> None:
    seen: dict[str, int] = {}
    for index, header in enumerate(headers):
        if header.aggregate_id in seen:
            raise InvalidInputError(
                f"appends[{index}].aggregate_id",
                f"{header.aggregate_id!r} is also appends[{seen[header.aggregate_id]}]: "
                "one transaction can change an aggregate once",
            )
        seen[header.aggregate_id] = index


def _check_actions(headers: list[AppendHeader], feed_shards: int) -> None:
    """Two actions per append (head, change set), three with a commit marker (ANY, or
    marked)."""
    actions = sum(3 if header.marked or header.expected is ANY else 2 for header in headers)
    feed = ""
    if feed_shards:  # an entry per append and a counter move per shard touched
        shards = {shard_of(header.aggregate_id, feed_shards) for header in headers}
        feed_actions = len(headers) + len(shards)
        actions += feed_actions
        feed = f" ({feed_actions} of them for the feed)"
    if actions > MAX_TRANSACTION_ACTIONS:
        raise InvalidInputError(
            "appends", f"needs {actions} DynamoDB actions{feed}, over the limit of 100"
        )


@contextmanager
def naming(prefix: str) -> Iterator[None]:
    """Name a batch entry in the argument of an InvalidInputError (``appends[3].events``)."""
    try:
        yield
    except InvalidInputError as exc:
        if not prefix:
            raise
        raise InvalidInputError(prefix + exc.argument, exc.problem) from None
