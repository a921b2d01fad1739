"""Seams for tests: the storage an :class:`EventStore` talks to, swappable.

``EventStore(config, backend=...)`` runs the store over any object that implements
:class:`Backend` instead of the DynamoDB + S3 backend it would build from ``config``.
It is meant for tests (and tools) that need to watch or disturb the storage: wrap a
backend to fail a commit on cue, or read what a store wrote::

    from eventstore_async import EventStore, StoreConfig
    from eventstore_async.testing import memory_backend

    config = StoreConfig(table_name="orders", bucket_name="orders")
    backend = memory_backend(config)
    async with EventStore(config, backend=backend) as store:
        await store.append("order-1", [{"placed": True}], expected_version=0)
    assert (await backend.get_head("order-1")).version == 1

Two stores given one backend share their storage, as two stores on one table do.
``EventStore.in_memory(...)`` is the short form when the test needs no handle on the
backend. The :class:`Backend` methods speak the library's internal records; their
shapes may change between minor releases, the seam itself does not.
"""

from __future__ import annotations

from ._backends.aws.dynamodb import DynamoDBBackend
from ._backends.memory import MemoryBackend, MemoryObjects, memory_backend
from ._backends.protocol import Backend, ObjectStore

__all__ = [
    "Backend",
    "DynamoDBBackend",
    "MemoryBackend",
    "MemoryObjects",
    "ObjectStore",
    "memory_backend",
]
