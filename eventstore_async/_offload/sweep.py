"""Remove offloaded objects no change set references (left by crashed writers).

An object is only a candidate once it is older than the grace period, which must
cover the longest an append can take between starting its upload and committing
(``StoreConfig.commit_window_seconds``): an in-flight append's object is never
touched. Each candidate's aggregate is then read (one Query per aggregate, pointer
attributes only) and unreferenced objects are deleted. Multipart uploads started
before the cut-off are aborted too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .._backends.protocol import Backend, ObjectStore
from .._models import SweepReport
from .payload import aggregate_of_key
from .upload import abort_quietly

__all__ = ["sweep_orphans"]


async def sweep_orphans(
    backend: Backend, objects: ObjectStore, prefix: str, older_than: timedelta
) -> SweepReport:
    cutoff = datetime.now(UTC) - older_than
    scanned, candidates = await _old_objects(objects, prefix, cutoff)
    deleted: list[str] = []
    for aggregate_id, keys in candidates.items():
        referenced = await backend.referenced_objects(aggregate_id)
        for key in keys:
            if key not in referenced:
                await objects.delete(key)
                deleted.append(key)
    aborted = await _abort_old_uploads(objects, prefix, cutoff)
    return SweepReport(
        objects_scanned=scanned, objects_deleted=tuple(deleted), uploads_aborted=aborted
    )


async def _old_objects(
    objects: ObjectStore, prefix: str, cutoff: datetime
) -> tuple[int, dict[str, list[str]]]:
    scanned = 0
    candidates: dict[str, list[str]] = {}
    async for info in objects.list(prefix):
        scanned += 1
        aggregate_id = aggregate_of_key(prefix, info.key)
        if info.last_modified < cutoff and aggregate_id is not None:
            candidates.setdefault(aggregate_id, []).append(info.key)
    return scanned, candidates


async def _abort_old_uploads(objects: ObjectStore, prefix: str, cutoff: datetime) -> int:
    old = [upload async for upload in objects.list_uploads(prefix) if upload.initiated < cutoff]
    for upload in old:
        await abort_quietly(objects, upload.key, upload.upload_id)
    return len(old)
