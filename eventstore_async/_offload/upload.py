"""Streaming upload with bounded memory: one PutObject, or a concurrent multipart upload.

The body arrives as an async iterator of chunks of any size. It is cut into parts
of ``part_size`` bytes; at most ``concurrency`` parts are in flight, and the next is
not assembled until one finishes, so memory stays near ``(concurrency + 1) * part_size``
whatever the object's size. A failure or cancellation aborts the multipart upload.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from .._backends.protocol import ObjectStore
from .._errors import StorageError, StoreClosedError

__all__ = ["Uploaded", "upload"]

# Hash big parts in a worker thread (hashlib releases the GIL) to keep the loop free.
_THREAD_HASH_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Uploaded:
    size: int
    sha256: str


class _Digest:
    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    async def update(self, data: bytes) -> None:
        self.size += len(data)
        if len(data) >= _THREAD_HASH_BYTES:
            await anyio.to_thread.run_sync(self._hash.update, data)
        else:
            self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


async def upload(
    objects: ObjectStore,
    key: str,
    chunks: AsyncIterator[bytes],
    *,
    part_size: int,
    concurrency: int,
) -> Uploaded:
    """Write ``chunks`` to ``key`` (never over an existing object); size and hash."""
    digest = _Digest()
    parts = _parts(chunks, part_size, digest)
    first = await anext(parts, b"")
    second = await anext(parts, None)
    if second is None:
        await objects.put(key, first)
    else:
        await _multipart(objects, key, _chain(first, second, parts), concurrency)
    return Uploaded(size=digest.size, sha256=digest.hexdigest())


async def _parts(
    chunks: AsyncIterator[bytes], part_size: int, digest: _Digest
) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for chunk in chunks:
        buffer.extend(chunk)
        while len(buffer) >= part_size:
            with memoryview(buffer) as view:
                part = bytes(view[:part_size])  # one copy: the part leaves the buffer
            del buffer[:part_size]
            await digest.update(part)
            yield part
    if buffer or digest.size == 0:
        part = bytes(buffer)
        await digest.update(part)
        yield part


async def _chain(first: bytes, second: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    yield second
    async for part in rest:
        yield part


async def _multipart(
    objects: ObjectStore, key: str, parts: AsyncIterator[bytes], concurrency: int
) -> None:
    upload_id = await objects.start_multipart(key)
    try:
        etags = await _upload_parts(objects, key, upload_id, parts, concurrency)
        await objects.complete_multipart(key, upload_id, etags)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await abort_quietly(objects, key, upload_id)
        raise


async def _upload_parts(
    objects: ObjectStore, key: str, upload_id: str, parts: AsyncIterator[bytes], concurrency: int
) -> list[str]:
    etags: dict[int, str] = {}
    failures: list[Exception] = []
    slots = anyio.Semaphore(concurrency)

    async def send(number: int, body: bytes, scope: anyio.CancelScope) -> None:
        try:
            etags[number] = await objects.upload_part(key, upload_id, number, body)
        except Exception as exc:  # the first failure stops the upload and is raised as is
            failures.append(exc)
            scope.cancel()
        finally:
            slots.release()

    count = 0
    async with anyio.create_task_group() as group:
        async for body in parts:
            await slots.acquire()  # no new part is held until one is sent
            count += 1
            group.start_soon(send, count, body, group.cancel_scope)
    if failures:
        raise failures[0]
    return [etags[number] for number in range(1, count + 1)]


async def abort_quietly(objects: ObjectStore, key: str, upload_id: str) -> None:
    """Abort; if that fails too, the bucket's lifecycle rule and the sweep clean up."""
    with contextlib.suppress(StorageError, StoreClosedError):
        await objects.abort_multipart(key, upload_id)
