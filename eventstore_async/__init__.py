"""eventstore_async: an asyncio event store on AWS DynamoDB, with S3 for big change sets.

The whole public API::

    from eventstore_async import EventStore, StoreConfig, ANY, ConcurrencyError

    async with EventStore(StoreConfig(table_name="events")) as store:
        change_set = await store.append("order-1", [OrderPlaced(...)], expected_version=0)
        history = await store.load("order-1")
"""

from ._config import StoreConfig
from ._errors import (
    AccessDeniedError,
    AggregateNotFoundError,
    AggregateTypeMismatchError,
    ChangeSetNotFoundError,
    ChangeSetTooLargeError,
    CommitOutcomeUnknownError,
    ConcurrencyError,
    EventStoreError,
    EvolveError,
    IdempotencyMismatchError,
    IntegrityError,
    InvalidInputError,
    LeaseLostError,
    SchemaMissingError,
    ShardLeaseLostError,
    SnapshotOutcomeUnknownError,
    StorageError,
    StorageUnavailableError,
    StoreClosedError,
    SubscriptionBusyError,
    SubscriptionError,
)
from ._feed.groups import GroupSubscription
from ._feed.subscription import Subscription
from ._models import (
    ANY,
    AggregateHead,
    AggregateHistory,
    AnyVersion,
    Append,
    ChangeSet,
    RawEvent,
    Snapshot,
    SweepReport,
    VerifyProblem,
    VerifyReport,
)
from ._store import EventStore
from ._types import EventType
from .domain import Aggregate, Decider, Loaded, Outcome, Repository, applies

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AccessDeniedError",
    "Aggregate",
    "AggregateHead",
    "AggregateHistory",
    "AggregateNotFoundError",
    "AggregateTypeMismatchError",
    "AnyVersion",
    "Append",
    "ChangeSet",
    "ChangeSetNotFoundError",
    "ChangeSetTooLargeError",
    "CommitOutcomeUnknownError",
    "ConcurrencyError",
    "Decider",
    "EventStore",
    "EventStoreError",
    "EventType",
    "EvolveError",
    "GroupSubscription",
    "IdempotencyMismatchError",
    "IntegrityError",
    "InvalidInputError",
    "LeaseLostError",
    "Loaded",
    "Outcome",
    "RawEvent",
    "Repository",
    "SchemaMissingError",
    "ShardLeaseLostError",
    "Snapshot",
    "SnapshotOutcomeUnknownError",
    "StorageError",
    "StorageUnavailableError",
    "StoreClosedError",
    "StoreConfig",
    "Subscription",
    "SubscriptionBusyError",
    "SubscriptionError",
    "SweepReport",
    "VerifyProblem",
    "VerifyReport",
    "applies",
]
