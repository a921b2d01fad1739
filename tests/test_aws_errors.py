"""translate_errors: the one place botocore and aiohttp errors become eventstore errors."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from eventstore_async import (
    AccessDeniedError,
    EventStoreError,
    InvalidInputError,
    SchemaMissingError,
    StorageError,
    StorageUnavailableError,
)
from eventstore_async._backends.aws.errors import (
    ERROR_CODES,
    error_code,
    translate_client_error,
    translate_errors,
)


def _client_error(code: str, message: str = "m", operation: str = "Query") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def _translated(exc: BaseException, operation: str = "Query") -> StorageError:
    with pytest.raises(StorageError) as caught, translate_errors(operation):
        raise exc
    assert caught.value.__cause__ is exc
    assert caught.value.operation == operation
    return caught.value


# -- ClientError by code ----------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), sorted(ERROR_CODES.items()))
def test_every_known_code_maps_to_its_class(code: str, expected: type[StorageError]) -> None:
    original = _client_error(code, "the message")
    error = _translated(original)
    assert type(error) is expected
    assert (error.code, error.reason) == (code, None)  # AWS's answer: its code, no reason
    assert "the message" in str(error)
    assert "Query" in str(error)


def test_error_codes_only_name_storage_error_subclasses() -> None:
    assert ERROR_CODES
    for cls in ERROR_CODES.values():
        assert issubclass(cls, StorageError)
        assert cls is not StorageError


def test_unknown_code_is_a_plain_storage_error() -> None:
    original = _client_error("ValidationException", "One or more parameter values were invalid")
    error = _translated(original, "TransactWriteItems")
    assert type(error) is StorageError
    assert error.code == "ValidationException"
    assert error.operation == "TransactWriteItems"
    assert "One or more parameter values were invalid" in str(error)


def test_code_lookup_is_exact() -> None:
    # A near miss is not silently treated as throttling.
    error = _translated(_client_error("throttlingexception"))
    assert type(error) is StorageError


def test_client_error_without_a_code() -> None:
    original = ClientError({"Error": {}}, "GetItem")
    assert error_code(original) == "Unknown"
    error = _translated(original, "GetItem")
    assert type(error) is StorageError
    assert (error.code, error.reason) == (None, None)  # AWS answered, with no code
    assert str(error)  # falls back to the ClientError's text


def test_client_error_without_a_message_keeps_some_text() -> None:
    original = ClientError({"Error": {"Code": "ThrottlingException"}}, "Query")
    error = translate_client_error(original, "Query")
    assert isinstance(error, StorageUnavailableError)
    assert "ThrottlingException" in str(error)


def test_translate_client_error_builds_without_raising() -> None:
    error = translate_client_error(_client_error("NoSuchBucket"), "PutObject")
    assert isinstance(error, SchemaMissingError)
    assert (error.code, error.reason, error.operation) == ("NoSuchBucket", None, "PutObject")


def test_translated_errors_are_event_store_errors() -> None:
    error = _translated(_client_error("AccessDenied"))
    assert isinstance(error, EventStoreError)


# -- codes the library must know --------------------------------------------------------

REQUIRED_CODES: dict[str, type[StorageError]] = {
    # missing resources: the table (DynamoDB) or bucket (S3) is not there
    "ResourceNotFoundException": SchemaMissingError,
    "TableNotFoundException": SchemaMissingError,
    "NoSuchBucket": SchemaMissingError,
    # credentials and permissions (DynamoDB, then S3, then STS-style)
    "AccessDeniedException": AccessDeniedError,
    "UnrecognizedClientException": AccessDeniedError,
    "InvalidSignatureException": AccessDeniedError,
    "MissingAuthenticationTokenException": AccessDeniedError,
    "ExpiredTokenException": AccessDeniedError,
    "AccessDenied": AccessDeniedError,
    "InvalidAccessKeyId": AccessDeniedError,
    "SignatureDoesNotMatch": AccessDeniedError,
    "ExpiredToken": AccessDeniedError,
    "InvalidClientTokenId": AccessDeniedError,
    # throttled: DynamoDB
    "ProvisionedThroughputExceededException": StorageUnavailableError,
    "ThrottlingException": StorageUnavailableError,
    "RequestLimitExceeded": StorageUnavailableError,
    "LimitExceededException": StorageUnavailableError,
    "TransactionInProgressException": StorageUnavailableError,
    # throttled: S3 and generic
    "SlowDown": StorageUnavailableError,
    "Throttling": StorageUnavailableError,
    # unavailable / server side
    "InternalServerError": StorageUnavailableError,
    "ServiceUnavailable": StorageUnavailableError,
    "ServiceUnavailableException": StorageUnavailableError,
    "InternalError": StorageUnavailableError,
    "InternalFailure": StorageUnavailableError,
    "RequestTimeout": StorageUnavailableError,
    "RequestTimeoutException": StorageUnavailableError,
    # bare HTTP statuses botocore uses as the code when the body has none
    "500": StorageUnavailableError,
    "502": StorageUnavailableError,
    "503": StorageUnavailableError,
    "504": StorageUnavailableError,
}


def test_required_codes_are_known() -> None:
    missing = sorted(code for code in REQUIRED_CODES if code not in ERROR_CODES)
    assert missing == [], f"ERROR_CODES lacks {missing}"


@pytest.mark.parametrize(("code", "expected"), sorted(REQUIRED_CODES.items()))
def test_required_codes_map_to_the_right_class(code: str, expected: type[StorageError]) -> None:
    assert ERROR_CODES.get(code) is expected


# Real DynamoDB/S3 authentication failures with no mapping: they surface as a plain
# StorageError, so a caller catching AccessDeniedError misses them.
MISSING_AUTH_CODES = [
    "IncompleteSignatureException",  # DynamoDB, HTTP 400: signature not to AWS standards
    "RequestTimeTooSkewed",  # S3, HTTP 403: the client's clock is off
    "InvalidToken",  # S3, HTTP 400: malformed or invalid session token
    "AllAccessDisabled",  # S3, HTTP 403: all access to the resource disabled
]


@pytest.mark.parametrize("code", MISSING_AUTH_CODES)
def test_missing_auth_codes_map_to_access_denied(code: str) -> None:
    assert isinstance(_translated(_client_error(code)), AccessDeniedError)


# -- transport and credential errors ----------------------------------------------------

TRANSPORT_ERRORS: list[BaseException] = [
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
    aiohttp.ClientConnectionError("connection refused"),
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError("response payload is not completed"),
    TimeoutError(),
]


@pytest.mark.parametrize("original", TRANSPORT_ERRORS, ids=lambda e: type(e).__name__)
def test_transport_errors_are_unavailable(original: BaseException) -> None:
    error = _translated(original, "TransactWriteItems")
    assert type(error) is StorageUnavailableError
    assert (error.code, error.reason) == (None, type(original).__name__)  # no answer came
    assert str(error)


@pytest.mark.parametrize(
    "original",
    [NoCredentialsError(), PartialCredentialsError(provider="env", cred_var="AWS_SECRET")],
    ids=lambda e: type(e).__name__,
)
def test_credential_errors_are_access_denied(original: BaseException) -> None:
    error = _translated(original, "GetItem")
    assert type(error) is AccessDeniedError
    assert (error.code, error.reason) == (None, type(original).__name__)


@pytest.mark.parametrize(
    "original",
    [ParamValidationError(report="bad"), NoRegionError()],
    ids=lambda e: type(e).__name__,
)
def test_other_botocore_errors_are_storage_errors(original: BaseException) -> None:
    error = _translated(original)
    assert type(error) is StorageError
    assert (error.code, error.reason) == (None, type(original).__name__)


# -- what passes through untouched ------------------------------------------------------


@pytest.mark.parametrize(
    "original",
    [
        asyncio.CancelledError(),
        KeyboardInterrupt(),
        ValueError("ours"),
        InvalidInputError("events", "bad"),
        StorageUnavailableError("already ours", code="X", operation="Query"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_exceptions_pass_through_untouched(original: BaseException) -> None:
    with pytest.raises(type(original)) as caught, translate_errors("Query"):
        raise original
    assert caught.value is original
    assert caught.value.__cause__ is None


def test_cancellation_in_a_running_task_is_not_translated() -> None:
    async def call() -> None:
        with translate_errors("Query"):
            await asyncio.sleep(3600)

    async def main() -> Any:
        task = asyncio.ensure_future(call())
        await asyncio.sleep(0)
        task.cancel()
        return await asyncio.gather(task, return_exceptions=True)

    (outcome,) = asyncio.run(main())
    assert type(outcome) is asyncio.CancelledError


def test_no_error_means_no_translation() -> None:
    with translate_errors("Query"):
        result = 1 + 1
    assert result == 2
