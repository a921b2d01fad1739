"""The one place where botocore and aiohttp errors become eventstore errors.

``translate_errors(operation)`` wraps every AWS call. A ``ClientError`` is mapped by
its error code; transport failures (connection refused, timeouts, dropped
connections) become :class:`StorageUnavailableError`. The original is kept as
``__cause__``. Cancellation is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from ..._errors import (
    AccessDeniedError,
    SchemaMissingError,
    StorageError,
    StorageUnavailableError,
)

__all__ = ["ERROR_CODES", "error_code", "translate_client_error", "translate_errors"]

#: AWS error codes with a more specific class than :class:`StorageError`.
ERROR_CODES: dict[str, type[StorageError]] = {
    # the table or bucket is not there
    "ResourceNotFoundException": SchemaMissingError,
    "NoSuchBucket": SchemaMissingError,
    "TableNotFoundException": SchemaMissingError,
    # credentials and permissions
    "AccessDenied": AccessDeniedError,
    "AccessDeniedException": AccessDeniedError,
    "UnrecognizedClientException": AccessDeniedError,
    "InvalidSignatureException": AccessDeniedError,
    "SignatureDoesNotMatch": AccessDeniedError,
    "InvalidAccessKeyId": AccessDeniedError,
    "ExpiredToken": AccessDeniedError,
    "ExpiredTokenException": AccessDeniedError,
    "MissingAuthenticationTokenException": AccessDeniedError,
    "InvalidClientTokenId": AccessDeniedError,
    "IncompleteSignatureException": AccessDeniedError,
    "RequestTimeTooSkewed": AccessDeniedError,
    "InvalidToken": AccessDeniedError,
    "AllAccessDisabled": AccessDeniedError,
    # still failing after botocore's retries: transient, safe to retry later
    "ProvisionedThroughputExceededException": StorageUnavailableError,
    "ThrottlingException": StorageUnavailableError,
    "Throttling": StorageUnavailableError,
    "RequestLimitExceeded": StorageUnavailableError,
    "LimitExceededException": StorageUnavailableError,
    "TransactionInProgressException": StorageUnavailableError,
    "InternalServerError": StorageUnavailableError,
    "InternalFailure": StorageUnavailableError,
    "InternalError": StorageUnavailableError,
    "ServiceUnavailable": StorageUnavailableError,
    "ServiceUnavailableException": StorageUnavailableError,
    "SlowDown": StorageUnavailableError,
    "RequestTimeout": StorageUnavailableError,
    "RequestTimeoutException": StorageUnavailableError,
    "500": StorageUnavailableError,
    "502": StorageUnavailableError,
    "503": StorageUnavailableError,
    "504": StorageUnavailableError,
}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def translate_client_error(
    exc: ClientError, operation: str, *, table: str | None = None, bucket: str | None = None
) -> StorageError:
    """The eventstore error for AWS's answer ``exc``: its code (None when the answer
    carried none); a missing resource is named (``table`` for DynamoDB calls,
    ``bucket`` for S3 calls) with how to create it."""
    sent = exc.response.get("Error", {}).get("Code")
    code = str(sent) if sent else None
    kind = ERROR_CODES.get(code or "", StorageError)
    message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    if kind is SchemaMissingError:
        if code == "NoSuchBucket" or (bucket is not None and table is None):
            resource, name = "bucket", bucket or exc.response.get("Error", {}).get("BucketName")
        else:
            resource, name = "table", table
        return SchemaMissingError.of(resource, name, code=code, operation=operation, detail=message)
    return kind(message, code=code, operation=operation)


@contextmanager
def translate_errors(
    operation: str, *, table: str | None = None, bucket: str | None = None
) -> Iterator[None]:
    """Run an AWS call; raise its failure as an :class:`StorageError` subclass.

    ``table`` or ``bucket`` names what the call addresses, for :class:`SchemaMissingError`.
    An answer from AWS keeps its error code (``.code``); a failure with no answer (the
    transport, credentials, the client) is named by its exception (``.reason``).
    """
    try:
        yield
    except ClientError as exc:
        raise translate_client_error(exc, operation, table=table, bucket=bucket) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise AccessDeniedError(str(exc), reason=type(exc).__name__, operation=operation) from exc
    except SSLError as exc:  # a certificate problem does not go away by retrying
        raise StorageError(str(exc), reason="SSLError", operation=operation) from exc
    except (BotoConnectionError, HTTPClientError, aiohttp.ClientError, TimeoutError) as exc:
        raise StorageUnavailableError(
            str(exc) or type(exc).__name__, reason=type(exc).__name__, operation=operation
        ) from exc
    except BotoCoreError as exc:
        raise StorageError(str(exc), reason=type(exc).__name__, operation=operation) from exc
