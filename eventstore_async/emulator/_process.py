"""Client side of the embedded emulator: start, probe, reset and stop the server subprocess.

Nothing here imports moto: the server runs in its own interpreter
(``python -m eventstore_async.emulator``), so its global lock, its memory and its threads
never touch the caller's process or event loop.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import urlsplit

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 30.0

# Cheap and always served by moto's own API app; with model tracking off it is tiny.
_READY_PATH = "/moto-api/data.json"
_RESET_PATH = "/moto-api/reset"
_URL_LINE_MAX = 1024
_STDERR_TAIL_BYTES = 4096
_READY_RETRY_DELAY = 0.05


class Emulator:
    """Run moto's DynamoDB + S3 emulation in a subprocess for the duration of a block.

    ::

        async with Emulator() as emu:
            client = session.client("dynamodb", endpoint_url=emu.endpoint_url, ...)

    The server serialises requests (so ``TransactWriteItems`` is atomic), keeps no
    per-instance bookkeeping, and exits by itself if this process dies (its stdin
    reaches EOF). Leaving the block stops it (SIGTERM, then SIGKILL after
    ``stop_timeout`` seconds), shielded from cancellation.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = DEFAULT_HOST,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        data_dir: str | os.PathLike[str] | None = None,
        compact_journal_bytes: int | None = None,
    ) -> None:
        """Configure the emulator; ``port=0`` lets the OS pick a free port.

        ``data_dir``: keep the state in this directory across restarts (see
        ``python -m eventstore_async.emulator --help``); None keeps it in memory only.
        ``compact_journal_bytes``: the journal size at which a running emulator compacts
        its data dir (None: the server's default, 64 MiB).
        """
        self.port = port
        self.host = host
        self.data_dir = data_dir
        self.compact_journal_bytes = compact_journal_bytes
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._process: Process | None = None
        self._stderr: IO[bytes] | None = None
        self._endpoint_url: str | None = None

    @property
    def endpoint_url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:54321`` (only while running)."""
        if self._endpoint_url is None:
            raise RuntimeError("the emulator is not running")
        return self._endpoint_url

    @property
    def pid(self) -> int | None:
        """The server process id, or None when not running."""
        return None if self._process is None else self._process.pid

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the server and wait until it answers HTTP requests.

        Raises RuntimeError (with the tail of the server's stderr) if it does not print
        its URL and answer within ``startup_timeout`` seconds.
        """
        if self._process is not None:
            raise RuntimeError("the emulator is already running")
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in aclose()
        try:
            process = await anyio.open_process(
                emulator_command(
                    self.port,
                    host=self.host,
                    stop_on_stdin_eof=True,
                    data_dir=self.data_dir,
                    compact_journal_bytes=self.compact_journal_bytes,
                ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=_child_env(),
            )
        except BaseException:
            stderr.close()
            raise
        self._process, self._stderr = process, stderr
        try:
            with anyio.fail_after(self.startup_timeout):
                url = await self._read_url(process)
                await _wait_ready(url)
        except Exception as exc:
            returncode = process.returncode
            await self._stop(keep_stderr=True)
            message = _startup_failure_message(exc, returncode, stderr)
            stderr.close()
            self._stderr = None
            raise RuntimeError(message) from exc
        except BaseException:
            await self.aclose()
            raise
        self._endpoint_url = url

    async def aclose(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and release its pipes; idempotent."""
        await self._stop(keep_stderr=False)

    async def reset(self) -> None:
        """Drop every table, bucket and object (``POST /moto-api/reset``)."""
        with anyio.fail_after(DEFAULT_REQUEST_TIMEOUT):
            status, body = await _http_request(self.endpoint_url, "POST", _RESET_PATH)
        if status != 200:
            raise RuntimeError(f"emulator reset failed: HTTP {status}: {body[:200]!r}")

    def stderr_tail(self, max_bytes: int = _STDERR_TAIL_BYTES) -> str:
        """The last ``max_bytes`` the server wrote to stderr (for debugging failures)."""
        return "" if self._stderr is None else _read_tail(self._stderr, max_bytes)

    @staticmethod
    async def _read_url(process: Process) -> str:
        assert process.stdout is not None
        stdout = BufferedByteReceiveStream(process.stdout)
        try:
            line = await stdout.receive_until(b"\n", _URL_LINE_MAX)
        except (anyio.IncompleteRead, anyio.DelimiterNotFound) as exc:
            raise RuntimeError("the emulator did not print its URL") from exc
        return _parse_url_line(line)

    async def _stop(self, *, keep_stderr: bool) -> None:
        process, self._process, self._endpoint_url = self._process, None, None
        try:
            if process is not None:
                with anyio.CancelScope(shield=True):
                    if process.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            process.terminate()
                        with anyio.move_on_after(self.stop_timeout):
                            await process.wait()
                        if process.returncode is None:
                            with contextlib.suppress(ProcessLookupError):
                                process.kill()
                    # Closes stdin/stdout and reaps the process (no zombie).
                    await process.aclose()
        finally:
            if not keep_stderr and self._stderr is not None:
                self._stderr.close()
                self._stderr = None


@contextlib.contextmanager
def run_emulator(
    port: int = 0,
    *,
    host: str = DEFAULT_HOST,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    data_dir: str | os.PathLike[str] | None = None,
) -> Iterator[str]:
    """Synchronous form of :class:`Emulator` for non-async code; yields the endpoint URL.

    ::

        with run_emulator() as endpoint_url:
            ...
    """
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            emulator_command(port, host=host, stop_on_stdin_eof=True, data_dir=data_dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_child_env(),
        )
        try:
            try:
                url = _sync_start(proc, startup_timeout)
            except Exception as exc:
                returncode = proc.poll()
                _sync_stop(proc, stop_timeout)
                raise RuntimeError(_startup_failure_message(exc, returncode, stderr)) from exc
            yield url
        finally:
            _sync_stop(proc, stop_timeout)


def emulator_command(
    port: int = 0,
    *,
    host: str = DEFAULT_HOST,
    stop_on_stdin_eof: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
    compact_journal_bytes: int | None = None,
) -> list[str]:
    """The command line that starts the emulator server with this interpreter."""
    command = [sys.executable, "-m", "eventstore_async.emulator", "--host", host]
    command += ["--port", str(port)]
    if stop_on_stdin_eof:
        command.append("--stop-on-stdin-eof")
    if compact_journal_bytes is not None:
        command += ["--compact-journal-bytes", str(compact_journal_bytes)]
    if data_dir is not None:
        command += ["--data-dir", os.fspath(data_dir)]
    return command


def _child_env() -> dict[str, str]:
    """This process's environment, plus our package root on PYTHONPATH if needed."""
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    site_dirs = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in site_dirs:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


def _parse_url_line(line: bytes) -> str:
    url = line.decode("ascii", "replace").strip()
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise RuntimeError(f"the emulator printed an unexpected first line: {url!r}")
    return url


def _read_tail(file: IO[bytes], max_bytes: int) -> str:
    file.seek(0, os.SEEK_END)
    file.seek(max(0, file.tell() - max_bytes))
    return file.read().decode("utf-8", "replace")


def _startup_failure_message(exc: BaseException, returncode: int | None, stderr: IO[bytes]) -> str:
    reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
    status = "was still running" if returncode is None else f"exit code {returncode}"
    tail = _read_tail(stderr, _STDERR_TAIL_BYTES).rstrip() or "(empty)"
    return f"emulator failed to start: {reason} ({status}); stderr tail:\n{tail}"


def _parse_http_response(data: bytes) -> tuple[int, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise RuntimeError(f"malformed HTTP response from the emulator: {data[:100]!r}")
    return int(status_line[1]), body


async def _http_request(endpoint_url: str, method: str, path: str) -> tuple[int, bytes]:
    """One tiny HTTP/1.1 request (no body, ``Connection: close``) with anyio sockets."""
    parts = urlsplit(endpoint_url)
    assert parts.hostname is not None and parts.port is not None
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    async with await anyio.connect_tcp(parts.hostname, parts.port) as stream:
        await stream.send(request.encode("ascii"))
        chunks = [chunk async for chunk in stream]
    return _parse_http_response(b"".join(chunks))


async def _wait_ready(endpoint_url: str) -> None:
    """Retry a cheap GET until the server answers 200 (the caller bounds the time)."""
    while True:
        try:
            status, _ = await _http_request(endpoint_url, "GET", _READY_PATH)
        except OSError:
            status = 0
        if status == 200:
            return
        await anyio.sleep(_READY_RETRY_DELAY)


def _sync_start(proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline(_URL_LINE_MAX)))
    reader.start()
    reader.join(timeout)
    if reader.is_alive():  # killing the server ends the blocked readline
        proc.kill()
        reader.join()
        raise TimeoutError("no URL line in time")
    if not lines or not lines[0].endswith(b"\n"):
        raise RuntimeError("the emulator did not print its URL")
    url = _parse_url_line(lines[0])
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the emulator did not answer HTTP in time")
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=remaining)
        try:
            conn.request("GET", _READY_PATH)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return url
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(_READY_RETRY_DELAY)


def _sync_stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()
