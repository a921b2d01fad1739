"""Commit markers: where a guarded append's commit id landed.

A guarded append (``ANY``, or a repository's command) also writes a marker item,
``(aggregate id, marker_sort_key(commit id))`` holding the version it landed at, in the
same transaction; a second append with that commit id fails on it. Reading the marker
tells whether a command landed without knowing at which version.
"""

from __future__ import annotations

from .._backends.protocol import Backend
from .._records import MarkerRecord, marker_sort_key

__all__ = ["landed_version"]


async def landed_version(backend: Backend, aggregate_id: str, commit_id: str) -> int | None:
    """The version a guarded append with ``commit_id`` landed at, or None (one read)."""
    record = await backend.get(aggregate_id, marker_sort_key(commit_id))
    if isinstance(record, MarkerRecord) and record.commit_id == commit_id:
        return record.version
    return None
