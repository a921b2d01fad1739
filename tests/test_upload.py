"""The upload pipeline against an object store that fails or stalls on cue."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import anyio
import pytest

from eventstore_async import StorageError
from eventstore_async._backends.memory import MemoryObjects
from eventstore_async._offload.upload import upload

pytestmark = pytest.mark.anyio

PART = 1000


class Watched(MemoryObjects):
    """Counts parts in flight; fails the given part; can hold parts until released."""

    def __init__(self, fail_part: int | None = None) -> None:
        super().__init__()
        self.fail_part = fail_part
        self.in_flight = 0
        self.most_in_flight = 0
        self.aborted = 0

    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await anyio.sleep(0.001 * (number % 3))  # parts finish out of order
            if number == self.fail_part:
                raise StorageError("injected", code="InternalError", operation="UploadPart")
            return await super().upload_part(key, upload_id, number, body)
        finally:
            self.in_flight -= 1

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self.aborted += 1
        await super().abort_multipart(key, upload_id)


async def chunks(total: int, size: int = 300) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield bytes((start + i) % 251 for i in range(min(size, total - start)))


async def test_parts_in_flight_never_exceed_the_concurrency() -> None:
    objects = Watched()
    result = await upload(objects, "k", chunks(PART * 20 + 17), part_size=PART, concurrency=3)
    body = objects.objects["k"][0]
    assert result.size == len(body) == PART * 20 + 17
    assert body == b"".join([chunk async for chunk in chunks(PART * 20 + 17)])
    assert 1 < objects.most_in_flight <= 3


async def test_a_failed_part_aborts_the_upload() -> None:
    objects = Watched(fail_part=2)
    with pytest.raises(StorageError, match="injected"):
        await upload(objects, "k", chunks(PART * 6), part_size=PART, concurrency=2)
    assert objects.aborted == 1
    assert objects.uploads == {} and objects.objects == {}


async def test_cancellation_mid_upload_aborts_it() -> None:
    objects = Watched()
    started = anyio.Event()

    async def slow_source() -> AsyncIterator[bytes]:
        yield b"x" * PART * 2
        started.set()
        await anyio.sleep_forever()
        yield b""

    async with anyio.create_task_group() as group:
        group.start_soon(
            functools.partial(upload, part_size=PART, concurrency=2), objects, "k", slow_source()
        )
        await started.wait()
        group.cancel_scope.cancel()
    assert objects.aborted == 1
    assert objects.uploads == {} and objects.objects == {}


async def test_small_body_is_one_put_and_never_overwrites() -> None:
    objects = Watched()
    await upload(objects, "k", chunks(PART - 1), part_size=PART, concurrency=2)
    assert objects.uploads == {} and len(objects.objects["k"][0]) == PART - 1
    with pytest.raises(StorageError) as exists:
        await upload(objects, "k", chunks(10), part_size=PART, concurrency=2)
    assert exists.value.code == "PreconditionFailed"
