"""What the emulator keeps beside moto: request tokens, and the journal of a data dir.

:class:`EmulatorState` observes every request the server serves (inside its lock): a
reset forgets the tokens and empties the journal; a successful request that changed
something is journaled (with ``--data-dir``). :meth:`EmulatorState.restore` replays the
journal through the app at start-up.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from eventstore_async.emulator._journal import Journal, Record, changes_state, record_of, replay
from eventstore_async.emulator._tokens import RequestTokens

Environ = dict[str, Any]
WSGIApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]

RESET_PATH = "/moto-api/reset"
# moto's environ key for the original spelling of header names (moto.core.request)
PRESERVED_HEADERS_KEY = "moto.preserved_header_names"


class ReplayClock:
    """Wall-clock time, or a record's time while that record is replayed."""

    def __init__(self) -> None:
        self.pinned: float | None = None

    def __call__(self) -> float:
        return time.time() if self.pinned is None else self.pinned

    def pin(self, at: float | None) -> None:
        self.pinned = at


class EmulatorState:
    """Request tokens and, with a data dir, the journal; see the module docstring."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.clock = ReplayClock()
        self.tokens = RequestTokens(clock=self.clock)
        self.journal = journal

    def served(self, environ: Environ, request_body: bytes, status: int, body: bytes) -> None:
        """Forget everything on a reset; journal a successful change."""
        if environ.get("PATH_INFO") == RESET_PATH and environ.get("REQUEST_METHOD") == "POST":
            self.tokens.clear()
            if self.journal is not None:
                self.journal.clear()
            return
        if self.journal is not None and 200 <= status < 300 and changes_state(environ):
            self.journal.append(record_of(environ, request_body, body, PRESERVED_HEADERS_KEY))

    def restore(self, app: WSGIApp) -> int:
        """Replay the journal through ``app`` (before serving); return how many records.

        Raises DataDirError when the journal is not this emulator's or does not replay.
        """
        if self.journal is None:
            return 0
        return replay(self.journal, lambda record, env: _serve(app, record, env), self.clock.pin)


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
