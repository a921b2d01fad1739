"""What the store hands back: heads, change sets, histories, and the ANY marker."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, final

import msgspec

__all__ = [
    "ANY",
    "AggregateHead",
    "AggregateHistory",
    "AnyVersion",
    "Append",
    "ChangeSet",
    "RawEvent",
    "Snapshot",
    "SweepReport",
    "VerifyProblem",
    "VerifyReport",
]


@final
class AnyVersion:
    """Type of :data:`ANY`: append without checking the aggregate's version."""

    _instance: AnyVersion | None = None

    def __new__(cls) -> AnyVersion:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ANY"

    def __reduce__(self) -> str:
        return "ANY"


#: Pass as ``expected_version`` to append whatever the aggregate's version is.
ANY: Final[AnyVersion] = AnyVersion()


class RawEvent(msgspec.Struct, frozen=True):
    """An event this store does not decode to a type: its type is not registered, it
    was stored at a newer ``version`` than the registered one, or an upcaster failed.

    ``type`` is the stored type name, ``data`` the decoded body (dicts, lists, scalars),
    ``version`` the schema version it was stored with (1 for events stored before
    versions existed). ``error`` says why a registered type's event is raw (an upcaster
    failed; with ``on_undecodable="raw"``, why it did not decode); it is ``None`` for
    unregistered types and newer versions. Appending a RawEvent writes it back under its
    type and version (``error`` is not stored).
    """

    type: str
    data: Any
    version: int = 1
    error: str | None = None


class ChangeSet(msgspec.Struct, frozen=True, kw_only=True):
    """The events one command produced, stored atomically as one version of an aggregate."""

    aggregate_id: str
    version: int
    commit_id: str
    timestamp: datetime
    events: tuple[Any, ...]
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    #: How many events the change set holds. Equal to ``len(events)`` except for the
    #: change set returned by an append from an iterator, whose events were streamed
    #: and not kept (``events == ()``), and for one a subscription with
    #: ``on_undecodable="raw"`` delivers whose payload could not be read (``events`` is
    #: then one ``RawEvent`` saying why).
    event_count: int = -1

    def __post_init__(self) -> None:
        if self.event_count < 0:
            msgspec.structs.force_setattr(self, "event_count", len(self.events))


class Append(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of :meth:`EventStore.append_many`: the arguments of one ``append``."""

    aggregate_id: str
    events: Any
    expected_version: int | AnyVersion
    aggregate_type: str | None = None
    metadata: Mapping[str, Any] | None = None
    commit_id: str | None = None


class AggregateHead(msgspec.Struct, frozen=True, kw_only=True):
    """The little the store keeps about an aggregate besides its change sets."""

    aggregate_id: str
    aggregate_type: str | None
    version: int
    last_commit_id: str
    event_count: int
    created_at: datetime
    updated_at: datetime


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """An aggregate's state at ``version``, made with state schema ``schema``."""

    aggregate_id: str
    version: int
    schema: str
    state: Any
    timestamp: datetime


class AggregateHistory(msgspec.Struct, frozen=True, kw_only=True):
    """An aggregate's head and its change sets in version order (possibly a range).

    When loaded with a snapshot schema, ``snapshot`` is the newest usable snapshot and
    ``change_sets`` holds only the change sets after it.
    """

    head: AggregateHead
    change_sets: tuple[ChangeSet, ...]
    snapshot: Snapshot | None = None

    @property
    def aggregate_id(self) -> str:
        return self.head.aggregate_id

    @property
    def version(self) -> int:
        """The aggregate's current version: pass it as the next ``expected_version``."""
        return self.head.version

    @property
    def events(self) -> list[Any]:
        """Every event of the loaded change sets, in order (after the snapshot, if any)."""
        return [event for change_set in self.change_sets for event in change_set.events]


class SweepReport(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`EventStore.sweep_orphans` did."""

    objects_scanned: int
    objects_deleted: tuple[str, ...]
    uploads_aborted: int
    #: Objects under a legacy key (naming no table) left alone: ``legacy_keys=False``.
    legacy_objects_kept: int = 0


class VerifyProblem(msgspec.Struct, frozen=True):
    """One thing :meth:`EventStore.verify` found wrong.

    ``kind`` is one of ``gap``, ``head``, ``snapshot``, ``marker``, ``feed-gap``,
    ``feed-entry``, ``object-missing``, ``object-size``, ``object-hash``, ``malformed``,
    ``not-found``; ``where`` names the place (``order-1@3``, ``feed shard 2 position 7``);
    ``aggregate_id`` and ``version`` are set when the problem is an aggregate's.
    """

    kind: str
    where: str
    message: str
    aggregate_id: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`EventStore.verify` checked and found.

    ``unreferenced`` lists object keys no change set or snapshot points to (left by a
    crashed writer or an append in flight; not problems: ``sweep_orphans`` removes the
    old ones). ``counts`` says how much was checked (``items``, ``aggregates``,
    ``change_sets``, ``snapshots``, ``feed_entries``, ``objects_checked``).
    """

    problems: tuple[VerifyProblem, ...]
    unreferenced: tuple[str, ...]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems
