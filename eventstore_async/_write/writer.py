"""Writing checked appends: encode (and offload), check sizes, commit, clean up.

:class:`ChangeSetWriter` serves ``append`` and ``append_many`` alike: the entries'
events are encoded one after another (large ones streamed to S3), the transaction's
sizes are checked, and the :class:`Appender` commits it. When that fails, or is
cancelled, the objects uploaded for it are deleted unless a stored change set may
point to them (:func:`may_be_referenced`); those are left to ``sweep_orphans``.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import anyio

from .._backends.protocol import Backend
from .._config import StoreConfig
from .._errors import UPLOAD_TOO_SLOW, CommitOutcomeUnknownError, StorageUnavailableError
from .._models import ChangeSet
from .._offload.payload import EncodedPayload, Offloader
from .._read.decode import ChangeSetDecoder
from .append import Appender, AppendProgress, Committed
from .batch import AppendHeader, naming
from .plan import AppendRequest
from .sizes import check_sizes

__all__ = ["ChangeSetWriter", "may_be_referenced"]


class ChangeSetWriter:
    def __init__(
        self,
        appender: Appender,
        backend: Backend,
        offloader: Offloader,
        decoder: ChangeSetDecoder,
        config: StoreConfig,
    ) -> None:
        self._appender = appender
        self._backend = backend
        self._offloader = offloader
        self._decoder = decoder
        self._config = config

    async def commit(self, headers: list[AppendHeader], events: list[Any]) -> list[ChangeSet]:
        """Encode (and offload) every entry's events, then commit them in one transaction.

        Raises:
            ChangeSetTooLargeError: an item or the transaction is over DynamoDB's limit.
            StorageUnavailableError: encoding with uploads took longer than
                ``max_upload_seconds`` (``reason`` ``"UploadTooSlow"``); nothing was
                committed, so a retry is safe.
            Others: as ``EventStore.append``.
        """
        encoded: list[EncodedPayload] = []
        progress = AppendProgress()
        try:
            await self._encode_all(headers, events, encoded)
            requests = [h.request(e) for h, e in zip(headers, encoded, strict=True)]
            check_sizes(requests, self._backend, feed=self._config.feed_shards > 0)
            expected = [h.expected for h in headers]
            committed = await self._appender.append(requests, expected, progress)
        except BaseException as exc:
            if not may_be_referenced(exc, progress):
                await self._discard_uploaded(encoded)
            raise
        return [
            await self._result(request, done)
            for request, done in zip(requests, committed, strict=True)
        ]

    async def _encode_all(
        self, headers: list[AppendHeader], events: list[Any], encoded: list[EncodedPayload]
    ) -> None:
        """Encode the entries one after another into ``encoded`` (which, on a failure,
        holds what was already uploaded), within ``max_upload_seconds`` in all.

        The bound keeps the invariant the sweep relies on: an object's age when its
        change set commits is at most ``commit_window_seconds``. Every object of this
        commit is started after ``started``; encoding ends at most ``max_upload_seconds``
        later; then the append's deadline, and one request sent just before it
        (``connect_timeout + read_timeout``), bound the time to the commit.
        """
        started = anyio.current_time()
        batch = len(headers) > 1
        for index, (header, entry_events) in enumerate(zip(headers, events, strict=True)):
            with naming(f"appends[{index}]." if batch else ""):
                encoded.append(await self._offloader.encode(header.aggregate_id, entry_events))
        self._check_encode_time(encoded, anyio.current_time() - started)

    def _check_encode_time(self, encoded: list[EncodedPayload], seconds: float) -> None:
        """Refuse to commit objects whose encoding took longer than ``max_upload_seconds``
        (counted from before the first entry), so no sweep can have deleted one."""
        limit = self._config.max_upload_seconds
        if seconds > limit and any(payload.pointer is not None for payload in encoded):
            raise StorageUnavailableError(
                f"encoding and uploading the change sets took {seconds:.1f} s, over "
                f"max_upload_seconds ({limit:g} s); nothing was committed",
                reason=UPLOAD_TOO_SLOW,
                operation="PutObject",
            )

    async def _discard_uploaded(self, encoded: list[EncodedPayload]) -> None:
        """Delete the objects of an append that did not land. Shielded, so a cancelled
        append cleans up too; an object that cannot be deleted (the store may be
        closing) is left to the sweep rather than hide the append's own error."""
        with anyio.CancelScope(shield=True):
            for payload in encoded:
                if payload.pointer is not None:
                    with suppress(Exception):
                        await self._offloader.discard(payload.pointer.key)

    async def _result(self, request: AppendRequest, committed: Committed) -> ChangeSet:
        """The change set stored for ``request``: ours, or the one an earlier attempt
        with this commit id stored (whose object, not ours, is the one kept)."""
        earlier = committed.earlier
        if earlier is None:
            return request.change_set(committed.version, committed.timestamp_us)
        ours = request.pointer
        if ours is not None and (earlier.pointer is None or earlier.pointer.key != ours.key):
            with anyio.CancelScope(shield=True):
                await self._offloader.discard(ours.key)
        return await self._decoder.change_set(earlier)


def may_be_referenced(error: BaseException, progress: AppendProgress) -> bool:
    """Whether a stored change set may point to the objects of a failed append: a
    transaction carrying them was sent and its outcome never settled, or the caller is
    told the outcome is unknown. Otherwise the append definitely did not land: it
    failed (or was cancelled) before anything was sent (validation, encoding, sizes,
    uploads), or its transaction was refused (ConcurrencyError,
    AggregateTypeMismatchError, a refused or still-conflicting transaction...)."""
    return progress.in_doubt or isinstance(error, CommitOutcomeUnknownError)
