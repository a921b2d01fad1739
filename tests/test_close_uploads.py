"""Closing the store stops the uploads in flight: nothing is written after close, and the
append cut short says that nothing was written."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import boto3
import pytest

from eventstore_async import EventStore, StoreClosedError
from eventstore_async._backends.memory import MemoryBackend, MemoryObjects

from .conftest import StoreFactory, backend_of

pytestmark = pytest.mark.anyio

EVENT_BYTES = 64 * 1024
#: Events sent before the store closes: more than one 5 MiB part, so the multipart
#: upload has started and sent a part.
BEFORE_CLOSE = 100
#: Where the stream ends, if the store keeps reading it after close.
LAST = 250


class Source:
    """An event stream: quick until the upload is under way, then slow, as a caller
    streaming from a slow producer."""

    def __init__(self) -> None:
        self.under_way = anyio.Event()
        self.sent = 0

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while self.sent < LAST:
            if self.sent >= BEFORE_CLOSE:
                self.under_way.set()
                await anyio.sleep(0.02)
            self.sent += 1
            yield {"n": self.sent, "blob": self.sent.to_bytes(4, "big") * (EVENT_BYTES // 4)}


def stored_objects(store: EventStore, emulator_url: str | None) -> tuple[list[str], int]:
    """Object keys and unfinished multipart uploads in the store's bucket (read directly)."""
    if emulator_url is None:
        backend = backend_of(store)
        assert isinstance(backend, MemoryBackend) and isinstance(backend.objects, MemoryObjects)
        return sorted(backend.objects.objects), len(backend.objects.uploads)
    s3 = boto3.client(
        "s3",
        endpoint_url=emulator_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    bucket = store.config.bucket_name
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted(entry["Key"] for entry in listed), len(uploads)


async def test_aclose_stops_an_upload_in_flight(
    make_store: StoreFactory,
    backend_name: str,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if backend_name == "endpoint":
        pytest.skip("reads the bucket directly")
    url = request.getfixturevalue("emulator_url") if backend_name == "emulator" else None
    store = await make_store(upload_concurrency=1)
    source = Source()
    outcome: list[BaseException] = []

    async def append() -> None:
        try:
            await store.append("big-1", source.events(), expected_version=0)
        except Exception as exc:
            outcome.append(exc)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        async with anyio.create_task_group() as group:
            group.start_soon(append)
            await source.under_way.wait()
            with anyio.fail_after(15):
                await store.aclose(grace_seconds=0.2)
            sent_at_close = source.sent
        gc.collect()

    (error,) = outcome
    assert isinstance(error, StoreClosedError), repr(error)
    assert "nothing was written" in str(error)
    assert source.sent <= sent_at_close + 1  # the upload stopped reading at close
    assert stored_objects(store, url) == ([], 0)  # no object, the multipart upload aborted
    assert "Unclosed client session" not in caplog.text
