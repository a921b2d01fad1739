"""Remove offloaded objects no change set references (left by crashed writers).

An object is only a candidate once it is older than the grace period, which must
cover the longest an append can take between starting its upload and committing
(``StoreConfig.commit_window_seconds``): an in-flight append's object is never
touched. Only keys under this store's table name are candidates (several tables may
share a bucket, see ``keys``); legacy keys, which name no table, only when the
caller says the prefix is this table's alone. Each candidate's aggregate is then read
(one Query per aggregate, pointer attributes only) and unreferenced objects are
deleted. Multipart uploads of this table started before the cut-off are aborted too.

S3 reports ``LastModified`` (and an upload's ``Initiated``) rounded down to the second,
so a stamp may be up to a second earlier than the write: a stamp counts as old only
when it is a whole second before the cut-off, and an object is never judged older
than it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .._backends.protocol import Backend, ObjectStore
from .._models import SweepReport
from .keys import KeyOwner, owner_of_key
from .upload import abort_quietly

__all__ = ["STAMP_RESOLUTION", "SweepScope", "is_older", "sweep_orphans"]


#: How much earlier than the write S3's stamps may be (they are whole seconds).
STAMP_RESOLUTION = timedelta(seconds=1)


def is_older(stamp: datetime, cutoff: datetime) -> bool:
    """Whether an object stamped ``stamp`` was surely written before ``cutoff``."""
    return stamp + STAMP_RESOLUTION <= cutoff


@dataclass(frozen=True, slots=True)
class SweepScope:
    """Which keys a sweep may delete: this table's under ``prefix``, and legacy keys
    (which name no table) only when ``legacy_keys``."""

    prefix: str
    table: str
    legacy_keys: bool
    #: Only report what would be deleted and aborted.
    dry_run: bool = False

    def owner(self, key: str) -> KeyOwner | None:
        return owner_of_key(self.prefix, self.table, key)

    def may_delete(self, owner: KeyOwner | None) -> bool:
        return owner is not None and (self.legacy_keys or not owner.legacy)


@dataclass(slots=True)
class _Listing:
    scanned: int = 0
    legacy_kept: int = 0


async def sweep_orphans(
    backend: Backend, objects: ObjectStore, scope: SweepScope, older_than: timedelta
) -> SweepReport:
    cutoff = datetime.now(UTC) - older_than
    listing = _Listing()
    candidates = await _old_objects(objects, scope, cutoff, listing)
    deleted: list[str] = []
    for aggregate_id, keys in candidates.items():
        referenced = await backend.referenced_objects(aggregate_id)
        for key in keys:
            if key not in referenced:
                if not scope.dry_run:
                    await objects.delete(key)
                deleted.append(key)
    aborted = await _abort_old_uploads(objects, scope, cutoff)
    return SweepReport(
        objects_scanned=listing.scanned,
        objects_deleted=tuple(deleted),
        uploads_aborted=aborted,
        legacy_objects_kept=listing.legacy_kept,
    )


async def _old_objects(
    objects: ObjectStore, scope: SweepScope, cutoff: datetime, listing: _Listing
) -> dict[str, list[str]]:
    candidates: dict[str, list[str]] = {}
    async for info in objects.list(scope.prefix):
        listing.scanned += 1
        owner = scope.owner(info.key)
        if owner is not None and owner.legacy and not scope.legacy_keys:
            listing.legacy_kept += 1
        elif is_older(info.last_modified, cutoff) and scope.may_delete(owner):
            assert owner is not None
            candidates.setdefault(owner.aggregate_id, []).append(info.key)
    return candidates


async def _abort_old_uploads(objects: ObjectStore, scope: SweepScope, cutoff: datetime) -> int:
    old = [
        upload
        async for upload in objects.list_uploads(scope.prefix)
        if is_older(upload.initiated, cutoff) and scope.may_delete(scope.owner(upload.key))
    ]
    for upload in [] if scope.dry_run else old:
        await abort_quietly(objects, upload.key, upload.upload_id)
    return len(old)
