"""The fast path for DynamoDB's data-plane calls: the same requests at a fraction of the CPU.

Stock aiobotocore spends most of a call's CPU on machinery this store never varies
(event hooks, the endpoint rules, serialising from the model, a User-Agent built per
call) and, on reads, on botocore's response parser (``base64`` of every ``B`` value in
Python). :class:`FastDynamoDB` sends ``TransactWriteItems``, ``Query``, ``GetItem`` and
``BatchGetItem`` itself and hands every other call to the stock client::

    kept from aiobotocore / botocore (their objects, called as they are)
        credentials      the client's request signer's credential object; refreshed by
                         it (``get_frozen_credentials``) before every attempt
        endpoint         the client's endpoint-rule resolver, once per operation
        retries          aiobotocore's standard-mode handler (conditions, backoff, quota,
                         ``max_attempts``); a retry re-sends the same body, re-signed
        errors           every non-2xx answer goes through botocore's JSON parser and
                         raises the client's modeled ``ClientError`` subclass
        transport        aiohttp failures become the botocore exceptions aiobotocore raises
        HTTP settings    a copy of the client's aiohttp session settings (pool, keep-alive,
                         timeouts, TLS verification and CA bundle)
    replaced
        request body     msgspec JSON (equal as JSON to botocore's; not byte-equal:
                         botocore writes ``", "`` separators and ``\\uXXXX`` escapes)
        SigV4            a cached signing key; the headers botocore's ``SigV4Auth`` makes
        success answers  msgspec's decode, then blobs base64-decoded (by msgspec) and
                         unmodeled or null members dropped, following botocore's model
                         of the output: botocore's dict

:meth:`FastDynamoDB.read` hands a success answer's raw body to a reader of the caller's
instead (the store reads its ``Query`` pages straight into records, ``item_reader.py``);
when the reader declines, botocore's dict comes back as from the method.

``tests/test_wire.py`` holds the golden tests: the requests are botocore's and the
answers parse to botocore's values. The path is used only with the aiobotocore and
botocore versions those tests ran against (:data:`TESTED_AIOBOTOCORE`,
:data:`TESTED_BOTOCORE`); with any other version, or a client set up in a way it does
not reproduce (a proxy, another retry mode, another signer...), :func:`fast_dynamodb`
returns the stock client and logs why, once, at INFO.

Known differences from the stock client, none visible to this store: the
``User-Agent`` is the client's string computed once (with the fixed ``user_agent`` this
store configures, the stock client's string too); client event hooks do not run for
these four operations; the body is not byte-identical (see above); a single-type
attribute value holding ``null`` (``{"S": null}``, never sent by DynamoDB) is kept as
it came where botocore drops it (checking costs ~100 us per 150 KB answer). The
endpoint is resolved once per operation: this store's table is never an ARN (the
config refuses ``:``), so it does not vary with the parameters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import logging
import re
import socket
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiobotocore
import aiohttp
import botocore
import botocore.parsers
import msgspec
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.retries.standard import (
    AioRetryHandler,
    AioRetryPolicy,
    AioStandardRetryConditions,
)
from aiohttp.http_exceptions import BadStatusLine
from botocore.auth import SigV4Auth, _host_from_url
from botocore.awsrequest import prepare_request_dict
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from botocore.handlers import add_recursion_detection_header
from botocore.retries import quota
from botocore.retries.standard import (
    DEFAULT_MAX_ATTEMPTS,
    ExponentialBackoff,
    RetryEventAdapter,
    RetryQuotaChecker,
)
from yarl import URL

__all__ = [
    "TESTED_AIOBOTOCORE",
    "TESTED_BOTOCORE",
    "BodyReader",
    "FastDynamoDB",
    "botocore_item",
    "fallback_reason",
    "fast_dynamodb",
]

logger = logging.getLogger(__name__)

#: Inclusive version ranges the golden tests ran against: aiobotocore 2.25.1 with the
#: two ends of the botocore range it accepts (1.40.46 and 1.40.61; the patch releases
#: between change service models, not the code used here).
TESTED_AIOBOTOCORE = ((2, 25, 1), (2, 25, 1))
TESTED_BOTOCORE = ((1, 40, 46), (1, 40, 61))

#: The operations sent here (botocore name -> client method).
FAST_OPERATIONS = {
    "TransactWriteItems": "transact_write_items",
    "Query": "query",
    "GetItem": "get_item",
    "BatchGetItem": "batch_get_item",
}

_CONTENT_TYPE = "application/x-amz-json-1.0"
_ATTRIBUTE_TYPES = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_logged_reasons: set[str] = set()


# -- when the fast path applies -------------------------------------------------------------


def _version(text: str) -> tuple[int, ...] | None:
    match = _VERSION.fullmatch(text)
    return tuple(int(part) for part in match.groups()) if match else None


def _in_range(text: str, tested: tuple[tuple[int, ...], tuple[int, ...]]) -> bool:
    version = _version(text)
    return version is not None and tested[0] <= version <= tested[1]


def _range_text(tested: tuple[tuple[int, ...], tuple[int, ...]]) -> str:
    low, high = (".".join(map(str, v)) for v in tested)
    return low if low == high else f"{low} to {high}"


def fallback_reason(
    client: Any, *, aiobotocore_version: str | None = None, botocore_version: str | None = None
) -> str | None:
    """Why the fast path cannot stand in for this client, or ``None`` when it can."""
    aio = aiobotocore.__version__ if aiobotocore_version is None else aiobotocore_version
    boto = botocore.__version__ if botocore_version is None else botocore_version
    if not _in_range(aio, TESTED_AIOBOTOCORE):
        return f"aiobotocore {aio} is untested (tested: {_range_text(TESTED_AIOBOTOCORE)})"
    if not _in_range(boto, TESTED_BOTOCORE):
        return f"botocore {boto} is untested (tested: {_range_text(TESTED_BOTOCORE)})"
    config = client.meta.config
    if config.retries.get("mode") != "standard":
        return f"retry mode {config.retries.get('mode')!r} (the fast path does 'standard')"
    if config.signature_version not in (None, "v4"):
        return f"signature version {config.signature_version!r}"
    if config.endpoint_discovery_enabled is True:
        return "endpoint discovery is on"
    http = client._endpoint.http_session
    if type(http) is not AIOHTTPSession:
        return f"HTTP session {type(http).__name__} (the fast path copies AIOHTTPSession's)"
    if http._proxy_config.proxy_url_for(client.meta.endpoint_url):
        return "a proxy is configured for the endpoint"
    return None


def _log_once(reason: str) -> None:
    if reason not in _logged_reasons:
        _logged_reasons.add(reason)
        logger.info("DynamoDB calls use the stock aiobotocore client: %s", reason)


async def fast_dynamodb(client: Any, stack: contextlib.AsyncExitStack) -> Any:
    """A :class:`FastDynamoDB` over ``client``, or ``client`` itself when it cannot be.

    The fast path's aiohttp session is closed by ``stack``.
    """
    reason = fallback_reason(client)
    if reason is not None:
        _log_once(reason)
        return client
    # The client's own session object, copied before first use: the same connector
    # settings, timeouts and TLS context, and a pool of its own that ``stack`` closes.
    http = copy.copy(client._endpoint.http_session)
    http._exit_stack = contextlib.AsyncExitStack()
    http._sessions = {}
    stack.push_async_callback(http.close)
    session = await http._get_session(None)
    return FastDynamoDB(client, session)


# -- SigV4 ----------------------------------------------------------------------------------


class _Signer:
    """SigV4 for one endpoint: the ``Authorization`` botocore's ``SigV4Auth`` computes.

    Signed headers are botocore's for a JSON POST: content-type, host, x-amz-date,
    x-amz-security-token (with a session token) and x-amz-target. The signing key is
    derived once per secret key and day.
    """

    __slots__ = ("_host", "_key", "_key_for", "_path", "_scope_tail", "_second", "_stamp")

    def __init__(self, host: str, path: str, region: str, service: str) -> None:
        self._host = host
        self._path = path
        self._scope_tail = f"/{region}/{service}/aws4_request"
        self._key_for: tuple[str, str] | None = None
        self._key = b""
        self._second = -1
        self._stamp = ""

    def timestamp(self, now: float | None = None) -> str:
        second = int(time.time() if now is None else now)
        if second != self._second:
            self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
            self._second = second
        return self._stamp

    def _signing_key(self, secret: str, day: str) -> bytes:
        if self._key_for != (secret, day):
            key = hmac.digest(f"AWS4{secret}".encode(), day.encode(), "sha256")
            for part in self._scope_tail[1:].split("/"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._key, self._key_for = key, (secret, day)
        return self._key

    def sign(
        self, headers: dict[str, str], target: str, body: bytes, credentials: Any, stamp: str
    ) -> None:
        """Add ``X-Amz-Date``, ``X-Amz-Security-Token`` and ``Authorization`` to headers."""
        token = credentials.token
        headers["X-Amz-Date"] = stamp
        if token:
            headers["X-Amz-Security-Token"] = token
            token_line = f"x-amz-security-token:{' '.join(token.split())}\n"
            signed = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        else:
            token_line = ""
            signed = "content-type;host;x-amz-date;x-amz-target"
        canonical = (
            f"POST\n{self._path}\n\ncontent-type:{_CONTENT_TYPE}\nhost:{self._host}\n"
            f"x-amz-date:{stamp}\n{token_line}x-amz-target:{target}\n\n{signed}\n"
            f"{hashlib.sha256(body).hexdigest()}"
        )
        day = stamp[:8]
        scope = day + self._scope_tail
        to_sign = (
            f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        key = self._signing_key(credentials.secret_key, day)
        signature = hmac.digest(key, to_sign.encode(), "sha256").hex()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )


# -- answers: botocore's parsed shape from msgspec's generic decode ---------------------------
#
# Typed Structs for the output shapes (then ``msgspec.to_builtins``) are faster on one
# answer, but allocate three times the objects: at 32 loads in flight the garbage
# collector then runs ten times as often and the whole load costs more (measured).
# So: msgspec's plain decode (one dict per attribute value, most never tracked by the
# collector), then blobs decoded in place and unmodeled members dropped, as botocore.

_Conform = Callable[[Any], Any]

#: Reads a success answer's body into what the caller wants, or ``None``: botocore's dict.
#: It must not raise (decline with ``None`` instead); it is not given ``ResponseMetadata``.
BodyReader = Callable[[bytes], Any]


class _Unsupported(Exception):
    """An output shape this module does not reproduce (the operation stays stock)."""


def _blob(value: Any) -> bytes:
    """botocore's ``base64.b64decode``; msgspec's is ~5x faster on valid input."""
    try:
        return msgspec.convert(value, bytes)
    except msgspec.ValidationError:  # not strict base64: botocore's decoder decides
        return base64.b64decode(value)


def botocore_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item as JSON-decoded (``{name: attribute value}``), as botocore parses it
    (in place)."""
    return _attribute_map(item)


def _attribute_map(item: dict[str, Any]) -> dict[str, Any]:
    """An item or key (``{name: attribute value}``), in place."""
    for value in item.values():
        if len(value) == 1:  # the common cases first, as cheaply as possible
            if "S" in value or "N" in value:
                continue
            if "B" in value:
                value["B"] = _blob(value["B"])
                continue
        _attribute_value(value)
    return item


def _attribute_value(value: dict[str, Any]) -> dict[str, Any]:
    """One attribute value, in place: ``B``/``BS`` to bytes, ``L``/``M`` recursively."""
    for kind, data in list(value.items()):
        if data is None or kind not in _ATTRIBUTE_TYPES:
            del value[kind]  # botocore keeps modeled, non-null members only
        elif kind == "B":
            value[kind] = _blob(data)
        elif kind == "BS":
            value[kind] = [_blob(element) for element in data]
        elif kind == "L":
            for element in data:
                _attribute_value(element)
        elif kind == "M":
            _attribute_map(data)
    return value


def _conformer(shape: Any) -> _Conform | None:
    """What botocore's JSON parser does to a decoded value of ``shape``; ``None``: nothing.

    A value it cannot handle raises (then botocore's own parser decides).

    Raises:
        _Unsupported: the shape holds something this module does not reproduce.
    """
    if shape.name == "AttributeValue":
        if set(shape.members) != _ATTRIBUTE_TYPES:
            raise _Unsupported("AttributeValue has other members")
        return _attribute_value
    kind = shape.type_name
    if kind == "structure":
        return _structure(shape)
    if kind == "list":
        member = _conformer(shape.member)
        return None if member is None else _each(member)
    if kind == "map":
        if shape.value.name == "AttributeValue":
            _conformer(shape.value)
            return _attribute_map
        value = _conformer(shape.value)
        return None if value is None else _each_value(value)
    if kind == "blob":
        return _blob
    if kind in ("string", "integer", "long", "double", "float", "boolean"):
        return None  # JSON scalars: botocore returns them as json.loads does
    raise _Unsupported(f"{shape.name} ({kind})")


def _structure(shape: Any) -> _Conform:
    if shape.is_document_type or getattr(shape, "is_tagged_union", False):
        raise _Unsupported(shape.name)
    members = tuple(
        (name, member.serialization.get("name", name), _conformer(member))
        for name, member in shape.members.items()
    )

    def conform(value: dict[str, Any]) -> dict[str, Any]:
        parsed = {}
        for name, json_name, member in members:
            raw = value.get(json_name)
            if raw is not None:  # botocore leaves out null members
                parsed[name] = raw if member is None else member(raw)
        return parsed

    return conform


def _each(member: _Conform) -> _Conform:
    return lambda values: [member(value) for value in values]


def _each_value(member: _Conform) -> _Conform:
    return lambda values: {key: member(value) for key, value in values.items()}


# -- HTTP -------------------------------------------------------------------------------------


class _HttpResponse:
    """What botocore's retry checks and parser read from an HTTP answer."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body

    @property
    def content(self) -> Awaitable[bytes]:  # aiobotocore's AioAWSResponse awaits it
        return _ready(self.body)

    def as_dict(self) -> dict[str, Any]:
        return {"status_code": self.status_code, "headers": self.headers, "body": self.body}


async def _ready(value: bytes) -> bytes:
    return value


_CLOSED = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, BadStatusLine)


def _transport_error(exc: Exception, url: str) -> Exception:
    """aiohttp's failure as the botocore exception aiobotocore's ``AIOHTTPSession`` raises."""
    error: Exception
    if isinstance(exc, aiohttp.ClientSSLError):
        error = SSLError(endpoint_url=url, error=exc)
    elif isinstance(exc, _CLOSED):
        error = ConnectionClosedError(error=exc, request=None, endpoint_url=url)
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        if str(exc).lower().startswith("connect"):
            error = ConnectTimeoutError(endpoint_url=url, error=exc)
        else:
            error = ReadTimeoutError(endpoint_url=url, error=exc)
    elif isinstance(exc, aiohttp.ClientConnectionError | socket.gaierror):
        error = EndpointConnectionError(endpoint_url=url, error=exc)
    elif isinstance(exc, TimeoutError):
        error = ReadTimeoutError(endpoint_url=url, error=exc)
    else:
        error = HTTPClientError(error=exc)
    return error


# -- the client -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Operation:
    """One operation, resolved once: where it goes, how it is signed and parsed."""

    name: str
    model: Any
    target: str
    url: URL
    endpoint_url: str
    host: str
    signer: _Signer | None  # None: this operation stays on the stock client
    conform: _Conform | None  # None: botocore's parser reads its answers
    idempotent: tuple[str, ...]


class FastDynamoDB:
    """The DynamoDB client the backend talks to: four calls here, the rest stock.

    ``transact_write_items``, ``query``, ``get_item`` and ``batch_get_item`` take the
    client's keyword arguments and return (or raise) what the stock client does;
    every other attribute is the stock client's.
    """

    def __init__(self, client: Any, session: aiohttp.ClientSession) -> None:
        self._client = client
        self._session = session
        self._credentials = client._request_signer._credentials
        self._user_agent = client._user_agent_creator.to_string()
        self._service = client.meta.service_model
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder().decode
        self._parser = botocore.parsers.create_parser("json")
        config = client.meta.config
        self._max_attempts = config.retries.get("total_max_attempts") or DEFAULT_MAX_ATTEMPTS
        self._quota = RetryQuotaChecker(quota.RetryQuota())
        self._retry = AioRetryHandler(
            retry_policy=AioRetryPolicy(
                retry_checker=AioStandardRetryConditions(max_attempts=self._max_attempts),
                retry_backoff=ExponentialBackoff(),
            ),
            retry_event_adapter=RetryEventAdapter(),
            retry_quota=self._quota,
        )
        self._operations: dict[str, _Operation] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"FastDynamoDB({self._client.meta.endpoint_url!r})"

    async def transact_write_items(self, **params: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call("TransactWriteItems", params)
        return answer

    async def query(self, **params: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call("Query", params)
        return answer

    async def get_item(self, **params: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call("GetItem", params)
        return answer

    async def batch_get_item(self, **params: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call("BatchGetItem", params)
        return answer

    async def read(self, name: str, params: dict[str, Any], reader: BodyReader) -> Any:
        """Call ``name`` as its method does, with the success answer's body given to
        ``reader`` first: what it returns comes back instead of botocore's dict.

        When ``reader`` returns ``None``, or the operation stays on the stock client,
        botocore's dict comes back, as from the method.
        """
        return await self._call(name, params, reader)

    async def _call(
        self, name: str, params: dict[str, Any], reader: BodyReader | None = None
    ) -> Any:
        operation = self._operations.get(name)
        if operation is None:
            operation = self._operations[name] = await self._resolve(name, params)
        if operation.signer is None:
            method = getattr(self._client, FAST_OPERATIONS[name])
            return await method(**params)
        for member in operation.idempotent:  # botocore's generate_idempotent_uuid
            if member not in params:
                params[member] = str(uuid.uuid4())
        return await self._send(operation, self._encode(params), reader)

    async def _resolve(self, name: str, params: dict[str, Any]) -> _Operation:
        """The client's endpoint and signing context for ``name`` (as ``_make_api_call``)."""
        model = self._service.operation_model(name)
        context: dict[str, Any] = {
            "client_region": self._client.meta.region_name,
            "client_config": self._client.meta.config,
            "has_streaming_input": model.has_streaming_input,
            "auth_type": model.resolved_auth_type,
            "unsigned_payload": model.unsigned_payload,
            "auth_options": self._service.metadata.get("auth"),
        }
        endpoint_url, extra_headers, _ = await self._client._resolve_endpoint_ruleset(
            model, dict(params), context
        )
        request: dict[str, Any] = {"url_path": "/", "query_string": "", "headers": {}}
        prepare_request_dict(request, endpoint_url=endpoint_url)
        url: str = request["url"]
        signing = context.get("signing", {})
        region = signing.get("region", self._client._request_signer._region_name)
        service = signing.get("signing_name", self._client._request_signer._signing_name)
        path = SigV4Auth(None, service, region)._normalize_url_path(URL(url).raw_path)
        reason = None
        try:
            conform = _conformer(model.output_shape)
        except _Unsupported as exc:
            conform, reason = None, f"{name}: output shape {exc} is not reproduced"
        if context.get("auth_type") not in ("v4", None):
            reason = f"{name}: auth type {context.get('auth_type')!r}"
        if extra_headers or "?" in url:
            reason = f"{name}: the endpoint rules add headers or a query string"
        if self._client._endpoint.http_session._proxy_config.proxy_url_for(url):
            reason = f"{name}: a proxy is configured for {url}"
        if reason is not None:
            _log_once(reason)
        return _Operation(
            name=name,
            model=model,
            target=f"{self._service.metadata['targetPrefix']}.{name}",
            url=URL(url, encoded=True),
            endpoint_url=url,
            host=_host_from_url(url),
            signer=None if reason else _Signer(_host_from_url(url), path, region, service),
            conform=conform,
            idempotent=tuple(model.idempotent_members),
        )

    # -- one call: attempts, retries, answers ----------------------------------------------

    async def _send(
        self, operation: _Operation, body: bytes, reader: BodyReader | None = None
    ) -> Any:
        """Attempts until success or the retry handler gives up (aiobotocore's loop)."""
        endpoint = self._client._endpoint
        context: dict[str, Any] = {"client_config": self._client.meta.config}
        attempt = 1
        endpoint._update_retries_context(context, attempt)
        while True:
            http, caught = await self._attempt(operation, body, context["retries"])
            if http is not None and http.status_code < 300 and not _crc32_mismatch(http):
                read = reader(http.body) if reader is not None and http.body else None
                parsed = self._parsed(operation, http, attempt) if read is None else read
                self._quota.release_retry_quota(context, http)
                return parsed
            answer = None if http is None else (http, self._parsed(operation, http, attempt))
            delay = await self._retry.needs_retry(
                response=answer,
                attempts=attempt,
                caught_exception=caught,
                operation=operation.model,
                request_dict={"context": context},
            )
            if delay is None:
                return self._final(operation, answer, caught, context)
            await asyncio.sleep(delay)  # as aiobotocore's endpoint
            attempt += 1
            endpoint._update_retries_context(context, attempt, answer)

    def _final(
        self,
        operation: _Operation,
        answer: tuple[_HttpResponse, dict[str, Any]] | None,
        caught: Exception | None,
        context: dict[str, Any],
    ) -> dict[str, Any]:
        """The last attempt's outcome, returned or raised as the stock client does."""
        if answer is None:
            assert caught is not None
            raise caught
        http, parsed = answer
        if http.status_code < 300:  # a checksum mismatch, out of attempts: botocore's answer
            self._quota.release_retry_quota(context, http)
            return parsed
        error_class = self._client.exceptions.from_code(parsed.get("Error", {}).get("Code"))
        raise error_class(parsed, operation.name)

    async def _attempt(
        self, operation: _Operation, body: bytes, retries: dict[str, Any]
    ) -> tuple[_HttpResponse | None, Exception | None]:
        """One signed request: its answer, or the transport failure (never both)."""
        headers = await self._headers(operation, body, retries)
        try:
            return await self._post(operation, body, headers), None
        except Exception as exc:  # as the stock endpoint: the retry handler decides
            return None, exc

    async def _headers(
        self, operation: _Operation, body: bytes, retries: dict[str, Any]
    ) -> dict[str, str]:
        """Signed with the credentials of the moment (a failure to get them is raised)."""
        credentials = self._credentials
        if credentials is None:
            raise NoCredentialsError()
        frozen = await credentials.get_frozen_credentials()
        assert operation.signer is not None
        signer = operation.signer
        headers = {
            "X-Amz-Target": operation.target,
            "Content-Type": _CONTENT_TYPE,
            "User-Agent": self._user_agent,
            "Host": operation.host,
            "Accept-Encoding": "identity",
        }
        signer.sign(headers, operation.target, body, frozen, signer.timestamp())
        add_recursion_detection_header({"headers": headers})  # X-Amzn-Trace-Id in Lambda
        headers["amz-sdk-invocation-id"] = retries["invocation-id"]
        headers["amz-sdk-request"] = "; ".join(
            f"{key}={retries[key]}" for key in ("ttl", "attempt", "max") if key in retries
        )
        return headers

    async def _post(
        self, operation: _Operation, body: bytes, headers: dict[str, str]
    ) -> _HttpResponse:
        try:
            async with self._session.post(operation.url, data=body, headers=headers) as response:
                content = await response.read()
                return _HttpResponse(
                    response.status,
                    {k.decode().lower(): v.decode() for k, v in response.raw_headers},
                    content,
                )
        except Exception as exc:
            raise _transport_error(exc, operation.endpoint_url) from exc

    def _parsed(self, operation: _Operation, http: _HttpResponse, attempt: int) -> dict[str, Any]:
        if http.status_code < 300:
            parsed = self._fast_parse(operation, http.body)
            if parsed is None:  # not plain JSON of the expected shape: as botocore does
                parsed = self._parser.parse(http.as_dict(), operation.model.output_shape)
            else:
                parsed["ResponseMetadata"] = _metadata(http)
        else:
            parsed = self._error(operation, http)
        metadata = parsed["ResponseMetadata"]
        metadata["RetryAttempts"] = attempt - 1
        if attempt >= self._max_attempts:  # botocore's MaxAttemptsChecker, on any answer
            metadata["MaxAttemptsReached"] = True
        return parsed

    def _fast_parse(self, operation: _Operation, body: bytes) -> dict[str, Any] | None:
        """msgspec's decode of a 2xx body, or ``None`` when botocore's parser must decide
        (an empty body, not JSON, or a value not of the modeled kind)."""
        if not body or operation.conform is None:
            return None
        try:
            raw = self._decode(body)
            return operation.conform(raw) if isinstance(raw, dict) else None
        except Exception:
            return None

    def _error(self, operation: _Operation, http: _HttpResponse) -> dict[str, Any]:
        """botocore's error parse, with the error shape's modeled fields added."""
        response = http.as_dict()
        parsed: dict[str, Any] = self._parser.parse(response, operation.model.output_shape)
        code = parsed.get("Error", {}).get("Code")
        shape = self._service.shape_for_error_code(code) if code is not None else None
        if shape is not None:
            parsed.update(self._parser.parse(response, shape))
        return parsed


def _metadata(http: _HttpResponse) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    request_id = http.headers.get("x-amzn-requestid")
    if request_id is not None:
        metadata["RequestId"] = request_id
    metadata["HTTPStatusCode"] = http.status_code
    metadata["HTTPHeaders"] = http.headers
    return metadata


def _crc32_mismatch(http: _HttpResponse) -> bool:
    """DynamoDB's ``x-amz-crc32`` check (botocore's ``RetryDDBChecksumError``)."""
    checksum = http.headers.get("x-amz-crc32")
    if checksum is None:
        return False
    return (zlib.crc32(http.body) & 0xFFFFFFFF) != int(checksum)
