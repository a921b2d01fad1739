"""DynamoDB's size limits, checked before an append is sent.

The emulator does not enforce the 4 MB transaction limit, so the store does, for
every backend alike. How many bytes an item takes is the backend's to say
(:meth:`Backend.change_set_size`, :meth:`Backend.companion_size`); the in-memory
backend answers as DynamoDB counts, so the limits are the same everywhere.
"""

from __future__ import annotations

from .._backends.protocol import Backend
from .._config import DYNAMODB_ITEM_LIMIT, DYNAMODB_TRANSACTION_LIMIT
from .._errors import ChangeSetTooLargeError
from .plan import AppendRequest

__all__ = ["check_sizes"]

#: The largest version and timestamp a change set can carry, so the sizes counted are
#: upper bounds whatever the version and time of the commit.
_MAX_VERSION = 2**53
_MAX_TIMESTAMP_US = 2**62


def check_sizes(requests: list[AppendRequest], backend: Backend, feed: bool) -> None:
    """Each change set item under 400 KB and the transaction under 4 MB.

    Raises:
        ChangeSetTooLargeError: an item or the whole transaction is over its limit.
    """
    total = 0
    for request in requests:
        record = request.record(version=_MAX_VERSION, timestamp_us=_MAX_TIMESTAMP_US)
        size = backend.change_set_size(record)
        if size > DYNAMODB_ITEM_LIMIT:
            raise ChangeSetTooLargeError("the change set item", size, DYNAMODB_ITEM_LIMIT)
        total += size + backend.companion_size(record, request.aggregate_type, feed)
    if total > DYNAMODB_TRANSACTION_LIMIT:
        raise ChangeSetTooLargeError("the transaction", total, DYNAMODB_TRANSACTION_LIMIT)
