"""A fault-injecting HTTP/1.1 reverse proxy for DynamoDB and S3 traffic.

It sits between an AWS client and the emulator (or any endpoint), forwards each
request unchanged (method, path, ``Host`` and the other headers, body: signatures stay
valid, and moto does not check them anyway) and injects faults, each kind with its own
probability, drawn from ``random.Random(seed)``::

    async with FaultProxy(emulator_url, rates=rates_for(0.08), seed=7) as proxy:
        config = StoreConfig(endpoint_url=proxy.url, ...)

Fault kinds (:data:`FAULT_KINDS`):

- ``reset_before``: connection reset before forwarding; the request never arrives.
- ``reset_after``: the request is forwarded (and committed), then the connection is
  reset: the response is lost.
- ``delay_forward``: held for ``delay`` seconds (set it beyond the client's read
  timeout), then forwarded; the request may land after the client gave up on it.
- ``delay_drop``: held for ``delay`` seconds, then the connection is closed unforwarded.
- ``http_500`` / ``http_503``: an AWS error response, not forwarded (DynamoDB JSON
  ``InternalServerError`` / ``ServiceUnavailable``; S3 XML ``InternalError`` /
  ``ServiceUnavailable``).
- ``throttle``: DynamoDB ``ProvisionedThroughputExceededException``,
  ``ThrottlingException`` or ``RequestLimitExceeded`` (HTTP 400), S3 ``SlowDown``
  (HTTP 503); not forwarded.
- ``transaction_conflict``: ``TransactWriteItems`` only: ``TransactionCanceledException``
  with one ``TransactionConflict`` reason per action (HTTP 400), not forwarded.
- ``truncate``: forwarded; the response headers announce the full ``Content-Length``
  but only part of the body is sent before the connection closes.

Replay: request number ``n`` (counted from 1 in arrival order) gets a fault that depends
only on ``seed``, ``n`` and which kinds apply to it (``transaction_conflict`` applies to
``TransactWriteItems`` only). With one client issuing requests one at a time a run
replays exactly; with concurrent clients the arrival order, and so which request gets
which fault, varies. Every injected fault is logged (logger ``tests.chaos.proxy``,
level INFO) with its request number and kept in :attr:`FaultProxy.events`.

``emulate_request_tokens=True`` adds what moto lacks: DynamoDB's ``ClientRequestToken``
idempotency for ``TransactWriteItems`` (a token that already succeeded returns success
again without writing when the parameters are the same, and
``IdempotentParameterMismatchException`` when they differ).

Command line: ``python -m tests.chaos.proxy --upstream URL --seed N --rate 0.05`` prints
its URL on the first line and serves until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import random
import signal
import socket
import struct
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aiohttp
from yarl import URL

__all__ = [
    "DEFAULT_WEIGHTS",
    "FAULT_KINDS",
    "FaultEvent",
    "FaultProxy",
    "ProxyRequest",
    "rates_for",
]

logger = logging.getLogger("tests.chaos.proxy")

RESET_BEFORE = "reset_before"
RESET_AFTER = "reset_after"
DELAY_FORWARD = "delay_forward"
DELAY_DROP = "delay_drop"
HTTP_500 = "http_500"
HTTP_503 = "http_503"
THROTTLE = "throttle"
TRANSACTION_CONFLICT = "transaction_conflict"
TRUNCATE = "truncate"

#: Every fault kind, in the order the seeded draw walks them.
FAULT_KINDS: tuple[str, ...] = (
    RESET_BEFORE,
    RESET_AFTER,
    DELAY_FORWARD,
    DELAY_DROP,
    HTTP_500,
    HTTP_503,
    THROTTLE,
    TRANSACTION_CONFLICT,
    TRUNCATE,
)

#: Relative weights used by :func:`rates_for`. Lost responses (``reset_after``,
#: ``truncate``) are what idempotency is for, so they get the most; delays cost a
#: client a whole read timeout each, so they get the least.
DEFAULT_WEIGHTS: Mapping[str, float] = {
    RESET_BEFORE: 1.0,
    RESET_AFTER: 2.0,
    DELAY_FORWARD: 0.5,
    DELAY_DROP: 0.5,
    HTTP_500: 1.0,
    HTTP_503: 0.5,
    THROTTLE: 1.5,
    TRANSACTION_CONFLICT: 1.5,
    TRUNCATE: 1.5,
}

DYNAMODB_THROTTLE_CODES = (
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
)

_DYNAMODB_PREFIX = "com.amazonaws.dynamodb.v20120810#"
_DYNAMODB_CONTENT_TYPE = "application/x-amz-json-1.0"
_MOTO_API = "/moto-api/"
# Hop-by-hop headers (RFC 9110 7.6.1) plus the framing headers this proxy rewrites.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "content-length",
    }
)
_HEADER_LIMIT = 1 << 20


def rates_for(total: float, weights: Mapping[str, float] = DEFAULT_WEIGHTS) -> dict[str, float]:
    """Split ``total`` (a probability) over the fault kinds in proportion to ``weights``."""
    if not 0.0 <= total <= 1.0:
        raise ValueError(f"total fault rate must be within [0, 1], got {total}")
    scale = sum(weights.values())
    return {kind: total * weight / scale for kind, weight in weights.items()}


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """One HTTP request as the proxy received it (body de-chunked)."""

    number: int
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    @property
    def service(self) -> str:
        """``"dynamodb"`` (JSON protocol, ``X-Amz-Target``) or ``"s3"``."""
        target = self.header("X-Amz-Target") or ""
        return "dynamodb" if target.startswith("DynamoDB_") else "s3"

    @property
    def operation(self) -> str:
        """The DynamoDB operation name, or ``S3:<METHOD>`` for S3."""
        target = self.header("X-Amz-Target")
        if target and target.startswith("DynamoDB_"):
            return target.rpartition(".")[2]
        return f"S3:{self.method}"


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One injected fault: request number, what it hit, what was done."""

    number: int
    service: str
    operation: str
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


FaultScript = Callable[[ProxyRequest], str | None]


class FaultProxy:
    """A seeded fault-injecting reverse proxy; an async context manager.

    Args:
        upstream_url: where requests go, e.g. the emulator's ``http://127.0.0.1:PORT``.
        rates: probability of each fault kind per request it applies to (their sum
            at most 1); see :func:`rates_for`. ``None``: no faults.
        seed: seeds the ``random.Random`` that picks the faults.
        delay: seconds a ``delay_*`` fault holds a request (beyond the client's read
            timeout).
        script: optional ``request -> kind | None``; when given it decides instead of
            the random draw (the draw still happens, so numbering stays comparable).
        emulate_request_tokens: emulate DynamoDB's ``ClientRequestToken`` idempotency.
        drain_timeout: on close, seconds to wait for requests still being handled
            (delayed ones) so none reaches the upstream after the proxy is closed.
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        rates: Mapping[str, float] | None = None,
        seed: int = 0,
        delay: float = 2.0,
        host: str = "127.0.0.1",
        port: int = 0,
        script: FaultScript | None = None,
        emulate_request_tokens: bool = False,
        drain_timeout: float | None = None,
    ) -> None:
        self._rates = _checked_rates(rates or {})
        self._upstream = upstream_url.rstrip("/")
        self._rng = random.Random(seed)
        self.seed = seed
        self.delay = delay
        self._host = host
        self._port = port
        self._script = script
        self._emulate_tokens = emulate_request_tokens
        self._drain_timeout = delay + 30.0 if drain_timeout is None else drain_timeout
        self._server: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._handlers: dict[asyncio.Task[None], bool] = {}  # task -> busy with a request
        self._closing = False
        self._tokens: dict[str, tuple[str, _Response]] = {}
        self._url: str | None = None
        #: Requests received (``/moto-api/`` excluded).
        self.requests = 0
        #: Injected faults by kind.
        self.faults: Counter[str] = Counter()
        #: Injected faults by ``kind:detail`` (throttling code, operation...).
        self.details: Counter[str] = Counter()
        #: Requests received by operation.
        self.operations: Counter[str] = Counter()
        #: Every injected fault, in order.
        self.events: list[FaultEvent] = []
        #: ClientRequestToken emulation: replays answered from the cache, and mismatches.
        self.token_replays = 0
        self.token_mismatches = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The proxy's base URL, e.g. ``http://127.0.0.1:54321`` (while running)."""
        if self._url is None:
            raise RuntimeError("the proxy is not running")
        return self._url

    @property
    def faulted(self) -> int:
        """How many requests got a fault."""
        return sum(self.faults.values())

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
        if self._server is not None:
            raise RuntimeError("the proxy is already running")
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(limit=128),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
        )
        try:
            self._server = await asyncio.start_server(
                self._serve_connection, self._host, self._port, limit=_HEADER_LIMIT
            )
        except BaseException:
            await self._session.close()
            self._session = None
            raise
        port = self._server.sockets[0].getsockname()[1]
        self._url = f"http://{self._host}:{port}"

    async def aclose(self) -> None:
        """Stop accepting, let requests in hand finish (bounded), close everything."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing = True
        server.close()
        for task, busy in list(self._handlers.items()):
            if not busy:
                task.cancel()
        pending = set(self._handlers)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._drain_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._url = None

    def summary(self) -> dict[str, object]:
        """The counters, JSON-ready."""
        return {
            "seed": self.seed,
            "requests": self.requests,
            "faulted": self.faulted,
            "faults": dict(sorted(self.faults.items())),
            "details": dict(sorted(self.details.items())),
            "operations": dict(sorted(self.operations.items())),
            "token_replays": self.token_replays,
            "token_mismatches": self.token_mismatches,
        }

    # -- connections ----------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = False
        try:
            while not self._closing:
                request = await _read_request(reader, writer, self._next_number)
                if request is None:
                    return
                self._handlers[task] = True
                keep_alive = await self._handle(request, writer)
                self._handlers[task] = False
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ValueError as exc:  # malformed request
            logger.warning("malformed request: %s", exc)
        finally:
            self._handlers.pop(task, None)
            if not writer.transport.is_closing():  # a truncation already closed it
                writer.transport.abort()

    def _next_number(self, target: str) -> int:
        if target.startswith(_MOTO_API):
            return 0
        self.requests += 1
        return self.requests

    async def _handle(self, request: ProxyRequest, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection must end."""
        if request.number == 0:  # emulator control API: never faulted
            return await self._pass_through(request, writer)
        self.operations[request.operation] += 1
        kind, detail_draw = self._decide(request)
        if kind is None:
            return await self._pass_through(request, writer)
        return await self._inject(kind, detail_draw, request, writer)

    def _decide(self, request: ProxyRequest) -> tuple[str | None, float]:
        draw, detail_draw = self._rng.random(), self._rng.random()
        if self._script is not None:
            return self._script(request), detail_draw
        threshold = 0.0
        for kind in FAULT_KINDS:
            rate = self._rates.get(kind, 0.0)
            if rate <= 0.0 or not _applies(kind, request):
                continue
            threshold += rate
            if draw < threshold:
                return kind, detail_draw
        return None, detail_draw

    def _record(self, request: ProxyRequest, kind: str, detail: str) -> None:
        self.faults[kind] += 1
        self.details[f"{kind}:{detail}"] += 1
        event = FaultEvent(request.number, request.service, request.operation, kind, detail)
        self.events.append(event)
        logger.info(
            "request %d %s %s: %s (%s)", event.number, event.service, event.operation, kind, detail
        )

    async def _pass_through(self, request: ProxyRequest, writer: asyncio.StreamWriter) -> bool:
        response = await self._upstream_response(request)
        return await _send(writer, request, response)

    async def _inject(
        self, kind: str, detail_draw: float, request: ProxyRequest, writer: asyncio.StreamWriter
    ) -> bool:
        if kind == RESET_BEFORE:
            self._record(request, kind, request.operation)
            _reset(writer)
            return False
        if kind == DELAY_DROP:
            self._record(request, kind, f"{self.delay}s")
            await asyncio.sleep(self.delay)
            return False
        if kind == DELAY_FORWARD:
            self._record(request, kind, f"{self.delay}s")
            await asyncio.sleep(self.delay)
            return await self._pass_through(request, writer)
        if kind in (RESET_AFTER, TRUNCATE):
            return await self._lose_response(kind, request, writer)
        response, detail = _error_response(kind, detail_draw, request)
        self._record(request, kind, detail)
        return await _send(writer, request, response)

    async def _lose_response(
        self, kind: str, request: ProxyRequest, writer: asyncio.StreamWriter
    ) -> bool:
        response = await self._upstream_response(request)
        body = b"" if request.method == "HEAD" else response.body
        if kind == TRUNCATE and len(body) >= 2:
            self._record(request, kind, f"{len(body) // 2}/{len(body)} bytes")
            writer.write(_render(request, response)[: -(len(body) - len(body) // 2)])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return False
        # Nothing to truncate (empty body): the response is lost all the same.
        self._record(request, RESET_AFTER, f"{response.status}")
        _reset(writer)
        return False

    # -- upstream -------------------------------------------------------------------------

    async def _upstream_response(self, request: ProxyRequest) -> _Response:
        if self._emulate_tokens and request.operation == "TransactWriteItems":
            return await self._with_request_token(request)
        return await self._forward(request)

    async def _with_request_token(self, request: ProxyRequest) -> _Response:
        try:
            params = json.loads(request.body)
        except ValueError:
            return await self._forward(request)
        token = params.get("ClientRequestToken")
        if not isinstance(token, str):
            return await self._forward(request)
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        known = self._tokens.get(token)
        if known is not None:
            if known[0] != digest:
                self.token_mismatches += 1
                logger.info(
                    "request %d: ClientRequestToken %s reused with new parameters",
                    request.number,
                    token,
                )
                return _dynamodb_error(
                    400,
                    "IdempotentParameterMismatchException",
                    "The request uses the same client token as a previous, but non-identical "
                    "request.",
                )
            self.token_replays += 1
            return known[1]
        response = await self._forward(request)
        if response.status == 200:
            self._tokens[token] = (digest, response)
        return response

    async def _forward(self, request: ProxyRequest) -> _Response:
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
        url = URL(self._upstream + request.target, encoded=True)
        try:
            async with self._session.request(
                request.method,
                url,
                headers=headers,
                data=request.body if request.body else None,
                allow_redirects=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            ) as upstream:
                body = await upstream.read()
                raw = tuple(
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in upstream.raw_headers
                )
                return _Response(upstream.status, upstream.reason or "", raw, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("request %d: upstream failed: %r", request.number, exc)
            return _Response(502, "Bad Gateway", (("Content-Type", "text/plain"),), b"bad gateway")


# -- HTTP framing --------------------------------------------------------------------------


async def _read_request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    number_for: Callable[[str], int],
) -> ProxyRequest | None:
    """Read one request; None on a clean end of stream between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    fields = {name.lower(): value for name, value in headers}
    if fields.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = int(fields.get("content-length", "0") or "0")
        body = await reader.readexactly(length) if length else b""
    return ProxyRequest(number_for(target), method, target, tuple(headers), body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _render(request: ProxyRequest, response: _Response) -> bytes:
    head_only = request.method == "HEAD"
    lines = [f"HTTP/1.1 {response.status} {response.reason or 'Status'}"]
    length: str | None = None
    for name, value in response.headers:
        lowered = name.lower()
        if lowered == "content-length":
            length = value
        if lowered not in _HOP_BY_HOP:
            lines.append(f"{name}: {value}")
    if head_only:
        if length is not None:
            lines.append(f"Content-Length: {length}")
    elif response.status >= 200 and response.status not in (204, 304):
        lines.append(f"Content-Length: {len(response.body)}")
    if _wants_close(request):
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


def _wants_close(request: ProxyRequest) -> bool:
    return (request.header("Connection") or "").lower() == "close"


async def _send(writer: asyncio.StreamWriter, request: ProxyRequest, response: _Response) -> bool:
    try:
        writer.write(_render(request, response))
        await writer.drain()
    except ConnectionError:
        return False
    return not _wants_close(request)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), not an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- canned AWS errors ---------------------------------------------------------------------


def _applies(kind: str, request: ProxyRequest) -> bool:
    if kind == TRANSACTION_CONFLICT:
        return request.operation == "TransactWriteItems"
    return True


def _error_response(kind: str, draw: float, request: ProxyRequest) -> tuple[_Response, str]:
    dynamodb = request.service == "dynamodb"
    if kind == HTTP_500:
        if dynamodb:
            return _dynamodb_error(500, "InternalServerError", "Internal server error"), "500"
        return _s3_error(500, "InternalError", "We encountered an internal error."), "500"
    if kind == HTTP_503:
        if dynamodb:
            return _dynamodb_error(503, "ServiceUnavailable", "Service unavailable"), "503"
        return _s3_error(503, "ServiceUnavailable", "Please reduce your request rate."), "503"
    if kind == THROTTLE:
        if dynamodb:
            code = DYNAMODB_THROTTLE_CODES[int(draw * len(DYNAMODB_THROTTLE_CODES))]
            return _dynamodb_error(
                400, code, "Rate of requests exceeds the allowed throughput"
            ), code
        return _s3_error(503, "SlowDown", "Please reduce your request rate."), "SlowDown"
    if kind == TRANSACTION_CONFLICT:
        count = _transact_item_count(request)
        return _transaction_conflict(count), f"{count} actions"
    raise AssertionError(f"not an error fault: {kind}")


def _transact_item_count(request: ProxyRequest) -> int:
    try:
        items = json.loads(request.body).get("TransactItems", [])
    except (ValueError, AttributeError):
        return 1
    return len(items) if isinstance(items, list) and items else 1


def _dynamodb_error(status: int, code: str, message: str, **extra: object) -> _Response:
    body = json.dumps({"__type": _DYNAMODB_PREFIX + code, "message": message, **extra})
    headers = (
        ("Content-Type", _DYNAMODB_CONTENT_TYPE),
        ("x-amzn-RequestId", uuid.uuid4().hex.upper()),
    )
    reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}
    return _Response(status, reason.get(status, "Error"), headers, body.encode())


def _transaction_conflict(count: int) -> _Response:
    reasons = [
        {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
    ] * count
    codes = ", ".join(["TransactionConflict"] * count)
    return _dynamodb_error(
        400,
        "TransactionCanceledException",
        f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
        CancellationReasons=reasons,
    )


def _s3_error(status: int, code: str, message: str) -> _Response:
    request_id = uuid.uuid4().hex[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId></Error>"
    )
    headers = (("Content-Type", "application/xml"), ("x-amz-request-id", request_id))
    reason = {
        500: "Internal Server Error",
        503: "Slow Down" if code == "SlowDown" else "Service Unavailable",
    }
    return _Response(status, reason.get(status, "Error"), headers, body.encode())


def _checked_rates(rates: Mapping[str, float]) -> dict[str, float]:
    unknown = set(rates) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
    if any(rate < 0 for rate in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault rates must be >= 0 and sum to at most 1, got {dict(rates)}")
    return dict(rates)


# -- command line --------------------------------------------------------------------------


def _parse_rates(text: str) -> dict[str, float]:
    rates: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        kind, _, value = part.partition("=")
        rates[kind.strip()] = float(value)
    return rates


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.proxy",
        description="Fault-injecting HTTP proxy for DynamoDB/S3. Prints its URL, then serves.",
    )
    parser.add_argument("--upstream", required=True, help="endpoint to forward to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rate", type=float, default=0.05, help="total fault rate, split by DEFAULT_WEIGHTS"
    )
    parser.add_argument(
        "--rates", default=None, help="explicit rates, e.g. reset_after=0.05,throttle=0.02"
    )
    parser.add_argument("--delay", type=float, default=2.0, help="seconds a delay fault holds")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--emulate-request-tokens",
        action="store_true",
        help="emulate DynamoDB ClientRequestToken idempotency (moto lacks it)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each fault")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    rates = _parse_rates(args.rates) if args.rates else rates_for(args.rate)
    proxy = FaultProxy(
        args.upstream,
        rates=rates,
        seed=args.seed,
        delay=args.delay,
        host=args.host,
        port=args.port,
        emulate_request_tokens=args.emulate_request_tokens,
        drain_timeout=args.delay + 1.0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with proxy:
        print(proxy.url, flush=True)
        await stop.wait()
    print(json.dumps(proxy.summary(), indent=2), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
