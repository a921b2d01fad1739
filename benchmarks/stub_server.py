"""A DynamoDB-protocol stub: canned answers, so a benchmark measures the client alone.

``python -m benchmarks.stub_server [--port N] [--latency-ms MS] [--cpu N]`` prints its
endpoint URL as the first line of stdout and serves HTTP/1.1 with keep-alive until
SIGTERM/SIGINT (or EOF on stdin, with ``--stop-on-stdin-eof``). It answers by the
``X-Amz-Target`` header and never checks signatures:

- ``TransactWriteItems`` -> ``{}`` (every append succeeds, whatever its version)
- ``GetItem`` -> the head of a 100-change-set aggregate
- ``Query`` -> that head and its 100 change sets (~1 KB payloads made by the real
  codec, items made by the real item mapping), one page, no ``LastEvaluatedKey``
- ``DescribeTable`` / ``CreateTable`` -> an ACTIVE table
- ``StubCounts`` (not DynamoDB) -> how many requests of each operation it has answered,
  so a benchmark can count the requests one operation sends

Bodies are built once at startup. A plain ``asyncio.Protocol`` keeps the server's own
cost per request small; it runs pinned to its own core (``--cpu``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from benchmarks.workloads import history_items
from eventstore_async._backends.aws.dynamodb import TABLE_KEYS

__all__ = ["StubProtocol", "canned_bodies", "main"]

_TARGET_PREFIX = b"dynamodb_20120810."
_CONTENT_TYPE = b"application/x-amz-json-1.0"
_MAX_HEAD_BYTES = 64 * 1024
_TABLE_OPS = {b"describetable": "Table", b"createtable": "TableDescription"}
_COUNTS = b"stubcounts"


def canned_bodies() -> dict[bytes, bytes]:
    """Response body by lower-cased operation name."""
    items = history_items()
    query = {"Items": items, "Count": len(items), "ScannedCount": len(items)}
    return {
        b"transactwriteitems": b"{}",
        b"getitem": msgspec.json.encode({"Item": items[0]}),
        b"query": msgspec.json.encode(query),
    }


def _table_body(operation: bytes, request_body: bytes) -> bytes:
    try:
        name = msgspec.json.decode(request_body).get("TableName", "bench")
    except (msgspec.DecodeError, AttributeError):
        name = "bench"
    table: dict[str, Any] = {
        "TableName": name,
        "TableStatus": "ACTIVE",
        **TABLE_KEYS,
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
        "ItemCount": 0,
        "TableSizeBytes": 0,
    }
    return msgspec.json.encode({_TABLE_OPS[operation]: table})


def _response(status: bytes, body: bytes, keep_alive: bool) -> bytes:
    head = (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: " + _CONTENT_TYPE + b"\r\n"
        b"x-amzn-RequestId: stub\r\n"
        b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + (b"" if keep_alive else b"Connection: close\r\n")
        + b"\r\n"
    )
    return head + body


class StubProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parse requests as they arrive, answer from the cans."""

    def __init__(
        self, bodies: dict[bytes, bytes], latency: float, counts: Counter[str] | None = None
    ) -> None:
        self._bodies = bodies
        self._latency = latency
        self._counts = Counter[str]() if counts is None else counts
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and self._handle_one():
            pass

    def _handle_one(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD_BYTES:
                self._send(_response(b"431 Too Large", b"{}", keep_alive=False), close=True)
            return False
        headers = _parse_headers(bytes(self._buffer[:end]))
        length = int(headers.get(b"content-length", b"0"))
        if len(self._buffer) < end + 4 + length:
            return False
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        keep_alive = headers.get(b"connection", b"").lower() != b"close"
        self._answer(headers.get(b"x-amz-target", b""), body, keep_alive)
        return True

    def _answer(self, target: bytes, request_body: bytes, keep_alive: bool) -> None:
        operation = target.lower().removeprefix(_TARGET_PREFIX)
        if operation == _COUNTS:
            self._send(
                _response(b"200 OK", msgspec.json.encode(self._counts), keep_alive),
                close=not keep_alive,
            )
            return
        self._counts[operation.decode(errors="replace")] += 1
        body = self._bodies.get(operation)
        status = b"200 OK"
        if body is None and operation in _TABLE_OPS:
            body = _table_body(operation, request_body)
        if body is None:
            status = b"400 Bad Request"
            body = msgspec.json.encode(
                {
                    "__type": "com.amazon.coral.service#UnknownOperationException",
                    "message": f"the stub does not serve {target.decode(errors='replace')}",
                }
            )
        self._send(_response(status, body, keep_alive), close=not keep_alive)

    def _send(self, data: bytes, *, close: bool) -> None:
        if self._latency > 0:
            asyncio.get_running_loop().call_later(self._latency, self._write, data, close)
        else:
            self._write(data, close)

    def _write(self, data: bytes, close: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._transport.write(data)
        if close:
            self._transport.close()


def _parse_headers(head: bytes) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return headers


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stub_server",
        description="DynamoDB-protocol stub with canned responses (prints its URL first).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay before each answer (default 0)"
    )
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this core")
    parser.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="also exit when stdin reaches EOF (the parent process went away)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    bodies = canned_bodies()
    latency = args.latency_ms / 1000.0
    counts = Counter[str]()
    server = await loop.create_server(
        lambda: StubProtocol(bodies, latency, counts), args.host, args.port, backlog=1024
    )
    port = server.sockets[0].getsockname()[1]
    print(f"http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if args.stop_on_stdin_eof:
        _stop_on_stdin_eof(loop, stop.set)
    async with server:
        await stop.wait()


def _stop_on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """Exit with the parent: it holds our stdin open and its death closes it."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return

    def on_readable() -> None:
        if not os.read(fd, 4096):
            loop.remove_reader(fd)
            stop()

    loop.add_reader(fd, on_readable)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
