"""Closing stops the writes: no upload runs, and no transaction is sent, after close.

``aclose`` first gives operations in flight their grace period. Then it closes the
:class:`WriteGate`: uploads still running are cancelled (a multipart upload is aborted
and a landed object deleted, both shielded, while the clients are still open), and no
upload or append transaction starts any more. An append stopped this way never sent
its transaction, so it raises :class:`StoreClosedError`, which says nothing was
written; only a transaction already sent when the clients close has an unknown outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

from ._errors import StoreClosedError

__all__ = ["WriteGate"]


class WriteGate:
    """Shared by a store's writers: open until the store closes."""

    def __init__(self) -> None:
        self._closed = False
        self._uploads: set[anyio.CancelScope] = set()
        self._stopped = anyio.Event()

    def check(self, what: str) -> None:
        """Raise :class:`StoreClosedError` if the store closed before ``what`` started.

        Raises:
            StoreClosedError: the gate is closed; nothing of ``what`` was written.
        """
        if self._closed:
            raise StoreClosedError(f"the store closed before {what}; nothing was written")

    @contextmanager
    def upload(self) -> Iterator[None]:
        """Run an upload that closing the gate cancels.

        Raises:
            StoreClosedError: the gate closed before or during the upload (its cleanup
                ran inside: nothing of it is left).
        """
        self.check("the upload started")
        scope = anyio.CancelScope()
        self._uploads.add(scope)
        try:
            with scope:
                yield
        finally:
            self._uploads.discard(scope)
            if self._closed and not self._uploads:
                self._stopped.set()
        if scope.cancelled_caught:
            raise StoreClosedError(
                "the store closed during the upload, which was stopped; nothing was written"
            )

    async def close(self, cleanup_seconds: float) -> None:
        """Refuse new uploads and transactions, cancel the uploads running, and wait
        (at most ``cleanup_seconds``) until each has aborted and deleted what it wrote."""
        self._closed = True
        if not self._uploads:
            return
        for scope in self._uploads:
            scope.cancel()
        with anyio.move_on_after(cleanup_seconds):
            await self._stopped.wait()
