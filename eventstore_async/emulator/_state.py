"""What the emulator keeps beside moto: request tokens, and its data dir.

:class:`EmulatorState` observes every request the server serves (inside its lock): a
reset forgets the tokens and empties the data dir; a successful request that changed
something is journaled (with ``--data-dir``), and when the journal has grown past
``compact_bytes`` the state is compacted into a new snapshot. :meth:`EmulatorState.restore`
loads the snapshot and replays the journal at start-up;
:meth:`EmulatorState.compact_after_restore` then compacts when the journal held anything,
so the next start-up reads one snapshot instead of the whole history.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from eventstore_async.emulator import _moto_state
from eventstore_async.emulator._datadir import DataDir
from eventstore_async.emulator._journal import (
    DataDirError,
    Record,
    changes_state,
    record_of,
    replay,
)
from eventstore_async.emulator._tokens import RequestTokens

Environ = dict[str, Any]
WSGIApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]

RESET_PATH = "/moto-api/reset"
# moto's environ key for the original spelling of header names (moto.core.request)
PRESERVED_HEADERS_KEY = "moto.preserved_header_names"
#: Compact a running emulator's journal when it passes this size (64 MiB).
DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024


class ReplayClock:
    """Wall-clock time, or a record's time while that record is replayed."""

    def __init__(self) -> None:
        self.pinned: float | None = None

    def __call__(self) -> float:
        return time.time() if self.pinned is None else self.pinned

    def pin(self, at: float | None) -> None:
        self.pinned = at


class EmulatorState:
    """Request tokens and, with a data dir, its journal and snapshot; see the module docstring.

    ``compact_bytes``: compact when the journal passes this size while serving, and at
    start-up when it holds any record; None never compacts (the journal keeps the whole
    history, as before snapshots existed).
    """

    def __init__(
        self, data_dir: DataDir | None = None, compact_bytes: int | None = DEFAULT_COMPACT_BYTES
    ) -> None:
        self.clock = ReplayClock()
        self.tokens = RequestTokens(clock=self.clock)
        self.data_dir = data_dir
        self.compact_bytes = compact_bytes
        # the journal size that triggers the next compaction (further after a failed one)
        self._compact_at = compact_bytes or 0

    def served(self, environ: Environ, request_body: bytes, status: int, body: bytes) -> None:
        """Forget everything on a reset; journal a successful change; compact when due."""
        if environ.get("PATH_INFO") == RESET_PATH and environ.get("REQUEST_METHOD") == "POST":
            self.tokens.clear()
            if self.data_dir is not None:
                self.data_dir.compact(_moto_state.capture(self.tokens))  # the empty state
            return
        if self.data_dir is not None and 200 <= status < 300 and changes_state(environ):
            self.data_dir.append(record_of(environ, request_body, body, PRESERVED_HEADERS_KEY))
            if self.compact_bytes is not None and self.data_dir.journal.size > self._compact_at:
                self._compact_while_serving(self.compact_bytes)

    def restore(self, app: WSGIApp) -> int:
        """Load the snapshot and replay the journal through ``app`` (before serving).

        Returns how many journal records were replayed. Raises DataDirError when the
        data dir is not this emulator's, is damaged or does not replay.
        """
        data_dir = self.data_dir
        if data_dir is None:
            return 0
        body = data_dir.snapshot_body()
        if body is not None:
            try:
                _moto_state.restore(body, self.tokens)
            except ValueError as exc:
                raise DataDirError(f"{data_dir.directory}: {exc}") from exc
        return replay(
            data_dir.records(),
            data_dir.journal.path,
            lambda record, env: _serve(app, record, env),
            self.clock.pin,
        )

    def compact_after_restore(self, replayed: int) -> bool:
        """Compact when ``replayed`` records were replayed; True if it did.

        Also finishes a compaction a crash cut short. Raises OSError when the disk fails.
        """
        if self.data_dir is None:
            return False
        if self.compact_bytes is not None and replayed and self.compact():
            return True
        if self.data_dir.journal_included:
            self.data_dir.start_new_journal()
        return False

    def _compact_while_serving(self, compact_bytes: int) -> None:
        """Compact; a failure does not fail the request that was already journaled.

        After a failure the next try waits for another ``compact_bytes`` of journal.
        """
        assert self.data_dir is not None
        try:
            compacted = self.compact()
        except OSError as exc:
            print(f"eventstore_async.emulator: compaction failed: {exc!r}", file=sys.stderr)
            compacted = False
        self._compact_at = compact_bytes + (0 if compacted else self.data_dir.journal.size)

    def compact(self) -> bool:
        """Snapshot the state and start an empty journal; False if moto's state cannot be.

        Raises OSError when the disk fails (see ``DataDir.compact``).
        """
        assert self.data_dir is not None
        try:
            body = _moto_state.capture(self.tokens)
        except _moto_state.StateNotCaptured as exc:
            print(f"eventstore_async.emulator: {exc}; keeping the journal", file=sys.stderr)
            return False
        self.data_dir.compact(body)
        return True


def _serve(app: WSGIApp, record: Record, environ: dict[str, str]) -> tuple[int, bytes]:
    """Run one journaled request through the WSGI app in-process."""
    env: Environ = {k: v for k, v in environ.items() if k != "HTTP_TRANSFER_ENCODING"}
    env.update(
        {
            "CONTENT_LENGTH": str(len(record.body)),
            "wsgi.input": io.BytesIO(record.body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
    )
    if record.preserved is not None:
        env[PRESERVED_HEADERS_KEY] = dict(record.preserved)
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        statuses.append(status)
        return lambda data: None

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(statuses[-1].split(None, 1)[0]) if statuses else 500, body
