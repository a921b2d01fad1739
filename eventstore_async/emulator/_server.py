"""Server side of the embedded emulator: moto's DynamoDB + S3 behind a safe WSGI wrapper.

This module runs only inside the emulator subprocess (``python -m eventstore_async.emulator``).
It is the only place in the package that imports moto and werkzeug.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Protocol

from eventstore_async.emulator._state import DEFAULT_COMPACT_BYTES

if TYPE_CHECKING:
    from eventstore_async.emulator._datadir import DataDir
    from eventstore_async.emulator._state import EmulatorState

# WSGI types, spelled out so this module does not depend on typeshed's private _typeshed.wsgi.
Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

DEFAULT_HOST = "127.0.0.1"
# Response headers the HTTP server itself always sends (http.server's send_response).
_SERVER_OWNED_HEADERS = frozenset({"server", "date"})


class SerializedWSGIApp:
    """Run every request of the wrapped WSGI app under one global lock.

    Why: moto's in-memory backends are not thread-safe, and its ``TransactWriteItems``
    is only "atomic" by deep-copying the table before applying the actions and restoring
    that copy when a condition fails (``_moto_patches`` replaces the copy with an undo
    record, which is only safe under this lock). With werkzeug's threaded server, two requests in
    flight at once therefore lose each other's writes (a failed transaction restores a
    copy taken before another thread's successful write), leave version gaps, and
    sometimes die with HTTP 500 "dictionary changed size during iteration". Serialising
    the requests makes the emulator behave like one consistent store again.

    The response body is materialised (the app iterator is drained and closed) *inside*
    the lock: WSGI apps may compute their body lazily while it is being iterated, and
    that iteration would otherwise touch the backends outside the lock. The request body
    is read *before* taking the lock, so a slow client never holds up the others; the
    response is written to the socket after the lock is released, for the same reason.

    It also drops the ``Server`` and ``Date`` headers the app sets: the HTTP server always
    sends its own, and moto's extra ``Server: amazon.com`` makes a duplicate that strict
    HTTP parsers reject (aiohttp, hence aiobotocore, under ``python -X dev`` or
    ``PYTHONASYNCIODEBUG=1``: "400, message: Duplicate 'Server' header found").

    ``observer.served(...)`` is called inside the lock after each request, before its
    response is sent (``EmulatorState``: request tokens, the journal).
    """

    def __init__(self, app: WSGIApp, observer: RequestObserver | None = None) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._observer = observer

    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        request_body = _buffer_request_body(environ)
        statuses: list[str] = []

        def start_without_server_headers(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            statuses.append(status)
            headers = [(k, v) for k, v in headers if k.lower() not in _SERVER_OWNED_HEADERS]
            return start_response(status, headers, exc_info)

        with self._lock:
            body = drain(self.app(environ, start_without_server_headers))
            if self._observer is not None:
                status = int(statuses[-1].split(None, 1)[0]) if statuses else 500
                self._observer.served(environ, request_body, status, b"".join(body))
            return body


class RequestObserver(Protocol):
    """Told about every request the emulator served, inside its lock."""

    def served(self, environ: Environ, request_body: bytes, status: int, body: bytes) -> None:
        """Called after the app answered and before the answer is sent."""


def drain(result: Iterable[bytes]) -> list[bytes]:
    """Materialise a WSGI response body and close the app's iterator."""
    try:
        return list(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _buffer_request_body(environ: Environ) -> bytes:
    """Read the whole request body from the socket into memory (moto does so anyway)."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    data: bytes
    if environ.get("wsgi.input_terminated"):
        # Chunked request: werkzeug's de-chunking stream ends at the last chunk.
        data = stream.read()
    else:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        # Never read past Content-Length: the raw socket stream would block.
        data = stream.read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(data)
    return data


def disable_model_tracking() -> None:
    """Stop moto from keeping a reference to every model instance it ever creates.

    ``moto.core.common_models.BaseModel.__new__`` appends each new instance to
    ``cls.instances_tracked`` (only used by the ``/moto-api/data.json`` dashboard and by
    S3's reset to dispose of temp files). Every DynamoDB item is a model (and moto's own
    ``TransactWriteItems`` deep-copies whole tables), so the lists grow without bound
    and pin all that memory. The replacement allocates
    exactly like the original (``super(BaseModel, cls).__new__``) but records nothing.
    """
    from moto.core.common_models import BaseModel
    from moto.core.model_instances import reset_model_data

    def _untracked_new(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
        return super(BaseModel, cls).__new__(cls)

    BaseModel.__new__ = staticmethod(_untracked_new)  # type: ignore[method-assign]
    reset_model_data()
    # Untracked S3 keys that are dropped without dispose() close their temp file in
    # __del__ and warn; that is the intended clean-up here, not a leak.
    warnings.filterwarnings(
        "ignore", message="S3 key was not disposed of in time", category=ResourceWarning
    )


def build_app(
    data_dir: Path | None = None, compact_bytes: int | None = DEFAULT_COMPACT_BYTES
) -> SerializedWSGIApp:
    """Build moto's multi-service WSGI app (DynamoDB, S3, ...) behind the global lock.

    With ``data_dir`` the state kept there (snapshot, then journal) is restored first,
    and every change is journaled from then on (``_datadir``); ``compact_bytes`` is when
    to compact (``EmulatorState``). Raises UntestedMotoError (from ``_moto_patches``)
    when the installed moto is not one the emulator's changes to it were tested with,
    and DataDirError when the data dir cannot be used.
    """
    from eventstore_async.emulator._datadir import DataDir
    from eventstore_async.emulator._moto_patches import apply_patches, check_moto_version
    from eventstore_async.emulator._state import EmulatorState

    moto_version = check_moto_version()
    opened = None if data_dir is None else DataDir(data_dir, moto_version)
    state = EmulatorState(opened, compact_bytes)
    apply_patches(state.tokens)
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    disable_model_tracking()
    app = DomainDispatcherApplication(create_backend_app)
    started = time.perf_counter()
    restored = state.restore(app)
    if opened is not None:
        _report_restore(opened, restored, started, state)
    return SerializedWSGIApp(app, state)


def _report_restore(opened: DataDir, replayed: int, started: float, state: EmulatorState) -> None:
    """Compact after the restore if due, and say on stderr what both took."""
    generation, restored = opened.generation, time.perf_counter()
    compacted = state.compact_after_restore(replayed)
    message = (
        f"restored {opened.directory}: snapshot generation {generation} and {replayed} "
        f"journaled requests in {restored - started:.2f} s"
    )
    if compacted:
        message += (
            f"; compacted into snapshot generation {opened.generation} in "
            f"{time.perf_counter() - restored:.2f} s"
        )
    print(message, file=sys.stderr)


def format_url(host: str, port: int) -> str:
    """Return the ``http://host:port`` endpoint URL (IPv6 hosts in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _reserve_stdout() -> IO[str]:
    """Keep the real stdout for the URL line only; send everything else to stderr.

    moto ``print()``s a few diagnostics; they must not end up after the URL line, and a
    parent that has read that line must not have to keep draining the pipe. After the
    URL is written the returned stream is closed, so the parent sees EOF on stdout.
    """
    try:
        out_fd = sys.stdout.fileno()
        err_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real file descriptors
        return sys.stdout
    sys.stdout.flush()
    url_stream = os.fdopen(os.dup(out_fd), "w", encoding="ascii")
    os.dup2(err_fd, out_fd)
    return url_stream


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line of ``python -m eventstore_async.emulator``."""
    parser = argparse.ArgumentParser(
        prog="python -m eventstore_async.emulator",
        description=(
            "Serve moto's DynamoDB and S3 emulation over HTTP (requests serialised for "
            "correct transactions). Prints the endpoint URL as the first and only line "
            "of stdout, then serves until SIGINT/SIGTERM."
        ),
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to bind; 0 picks a free one (default)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep tables, items and objects in this directory across restarts (a journal "
        "fsync-ed before each write is acknowledged, compacted into a snapshot); default: "
        "memory only",
    )
    parser.add_argument(
        "--compact-journal-bytes",
        type=_positive_int,
        default=DEFAULT_COMPACT_BYTES,
        help="with --data-dir: snapshot the state and start an empty journal when the "
        "journal passes this size (and at start-up when it holds any write); default "
        "%(default)s",
    )
    parser.add_argument(
        "--no-compact",
        action="store_true",
        help="with --data-dir: never compact; start-up replays the whole history",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="also shut down when stdin reaches EOF (i.e. the parent process went away)",
    )
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator server until SIGINT/SIGTERM; return the process exit code."""
    args = parse_args(argv)

    # The signal handler only sets a flag: it runs in the main thread at an arbitrary
    # point, so it must not take locks (threading.Event.set would) or raise.
    stopping = False
    stop_event = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    url_stream = _reserve_stdout()
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)
    # The server's warning filters are its own business, whatever the parent's environment
    # says (PYTHONWARNINGS=error would turn a moto DeprecationWarning into an HTTP 500).
    warnings.simplefilter("default" if args.verbose else "ignore")

    from eventstore_async.emulator._journal import DataDirError
    from eventstore_async.emulator._moto_patches import UntestedMotoError

    try:
        app = build_app(args.data_dir, None if args.no_compact else args.compact_journal_bytes)
    except (UntestedMotoError, DataDirError, OSError) as exc:
        print(f"eventstore_async.emulator: {exc}", file=sys.stderr)
        return 2
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    serve_thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name="emulator-http",
        daemon=True,
    )
    serve_thread.start()

    if args.stop_on_stdin_eof:

        def _watch_stdin() -> None:
            try:
                while os.read(sys.stdin.fileno(), 65536):
                    pass
            except (AttributeError, OSError, ValueError):  # no usable stdin: stop as well
                pass
            stop_event.set()

        threading.Thread(target=_watch_stdin, name="emulator-stdin", daemon=True).start()

    url_stream.write(format_url(args.host, server.server_port) + "\n")
    url_stream.flush()
    if url_stream is not sys.stdout:
        url_stream.close()

    while not stopping and not stop_event.is_set() and serve_thread.is_alive():
        stop_event.wait(0.1)
    crashed = not serve_thread.is_alive()  # serve_forever raised (already reported)

    server.shutdown()
    server.server_close()
    serve_thread.join()
    return 1 if crashed else 0
