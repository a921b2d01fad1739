"""Oversized change sets: encode as a stream, offload to S3, read back verified.

Writing: events (a sequence, an iterator or an async iterator) are encoded one at a
time. While the payload stays under ``offload_threshold_bytes`` it is kept and stored
inline; past it (when a bucket is configured) the bytes so far and the rest of the
stream go to S3 through ``upload.py`` and the change set stores a pointer (key, size,
SHA-256, compression). Memory never holds more than the threshold plus the upload's
parts in flight.

Reading: a pointer's object is downloaded, its size and SHA-256 checked before
anything is decoded (:class:`IntegrityError` otherwise), then decompressed and decoded.
An object that is not there at all raises :class:`PayloadMissingError`, an
``IntegrityError`` that a snapshot load can tell apart: a concurrent snapshot save may
delete the object of a snapshot the load has just read (see ``_read/load.py``).
:meth:`PayloadReader.iter_events` spools the object to a temporary file instead, so a
change set of any size is checked, then yielded one event at a time.

Object keys name the table and the aggregate (see ``keys``).
"""

from __future__ import annotations

import hashlib
import tempfile
import zlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import IO, Any

import anyio

from .._backends.protocol import ObjectStore
from .._capacity import note_offload
from .._closing import WriteGate
from .._codec import FORMAT_FRAMED_VERSIONED, FRAME_HEADER_BYTES, EventCodec, FrameDecoder
from .._config import DYNAMODB_ITEM_LIMIT, StoreConfig
from .._errors import (
    UPLOAD_TOO_SLOW,
    ChangeSetTooLargeError,
    IntegrityError,
    InvalidInputError,
    StorageError,
    StorageUnavailableError,
    StoreClosedError,
)
from .._records import ObjectPointer
from .keys import object_key
from .upload import upload

__all__ = [
    "EncodedPayload",
    "Offloader",
    "PayloadMissingError",
    "PayloadReader",
]

_CHUNK = 1024 * 1024
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
# Bytes of a change set item besides payload and metadata: key names, commit id,
# numbers, and an aggregate id of up to 512 bytes.
ITEM_OVERHEAD = 1024


@dataclass(frozen=True, slots=True)
class EncodedPayload:
    """A change set's payload, ready for the transaction."""

    events: tuple[Any, ...]  # kept for the returned ChangeSet; () when streamed to S3
    event_count: int
    payload: bytes | None  # inline bytes, or None when offloaded
    pointer: ObjectPointer | None
    digest: str  # of the events' envelopes, whatever the format (see ``array_digest``)


class PayloadMissingError(IntegrityError):
    """The object a pointer names is not in the bucket (as opposed to a corrupt one).

    Callers see an :class:`IntegrityError` (this class is not exported); the snapshot
    load catches it to re-read the head when a concurrent save deleted the object it
    was about to read.
    """

    def __init__(self, key: str) -> None:
        super().__init__(f"offloaded payload {key!r} is missing")
        self.key = key


class _Frames:
    """Appends events as frames, counting them and hashing their envelopes.

    ``header`` is the payload's first byte (``EventCodec.framed_header``): whether the
    frames carry versions.
    """

    def __init__(self, codec: EventCodec, header: bytes) -> None:
        self._codec = codec
        self.header = header
        self._versioned = header[0] == FORMAT_FRAMED_VERSIONED
        self._digest = hashlib.sha256()
        self.count = 0

    def add(self, buffer: bytearray, event: Any) -> None:
        start = len(buffer) + FRAME_HEADER_BYTES
        self._codec.append_frame(buffer, self.count, event, versioned=self._versioned)
        with memoryview(buffer) as view:
            self._digest.update(view[start:])
        self.count += 1

    def digest(self) -> str:
        return self._digest.hexdigest()[:DIGEST_CHARS]


#: Hex characters of a payload digest kept (128 bits).
DIGEST_CHARS = 32
#: The MessagePack array headers the codec writes before the envelopes (by first byte;
#: fixarray otherwise): array 16, array 32.
_ARRAY_HEADERS = {0xDC: 3, 0xDD: 5}


def array_digest(payload: bytes) -> str:
    """The digest of an inline (``0x01``, ``0x03``) payload's events: SHA-256 of their
    envelopes, as :class:`_Frames` hashes a framed payload's, so the same events have
    the same digest in either layout."""
    with memoryview(payload) as view:
        body = view[1:]
        start = _ARRAY_HEADERS.get(body[0], 1)
        return hashlib.sha256(body[start:]).hexdigest()[:DIGEST_CHARS]


class Offloader:
    """Turns the events argument of an append into an inline payload or an S3 object."""

    def __init__(
        self,
        codec: EventCodec,
        objects: ObjectStore | None,
        config: StoreConfig,
        gate: WriteGate | None = None,
    ) -> None:
        self._codec = codec
        self._objects = objects
        self._config = config
        self._gate = gate or WriteGate()
        self._threshold = config.offload_threshold_bytes if objects else DYNAMODB_ITEM_LIMIT

    async def encode(self, aggregate_id: str, events: Any) -> EncodedPayload:
        """Encode (and, when large, upload) the events.

        Raises:
            InvalidInputError: no events, or an event that cannot be encoded.
            ChangeSetTooLargeError: too large for one item and no bucket is configured.
            StorageError: the upload failed (nothing is left behind).
            StorageUnavailableError: the upload took longer than ``max_upload_seconds``
                (``reason`` ``"UploadTooSlow"``); nothing was committed.
        """
        if isinstance(events, Sequence) and not isinstance(events, str | bytes | bytearray):
            return await self._encode_sequence(aggregate_id, tuple(events))
        if isinstance(events, AsyncIterable):
            return await self._encode_stream(aggregate_id, aiter(events))
        if isinstance(events, Iterable) and not isinstance(events, str | bytes | bytearray | dict):
            return await self._encode_stream(aggregate_id, _as_async(iter(events)))
        raise InvalidInputError(
            "events",
            f"must be a list, tuple, iterator or async iterator of events, "
            f"not {type(events).__name__}",
        )

    async def _encode_sequence(self, aggregate_id: str, events: tuple[Any, ...]) -> EncodedPayload:
        if not events:
            raise InvalidInputError("events", "must hold at least one event")
        payload = self._codec.encode_events(events)
        if len(payload) <= self._threshold:
            return EncodedPayload(events, len(events), payload, None, array_digest(payload))
        self._require_bucket(len(payload))
        frames = _Frames(self._codec, self._codec.framed_header(events))
        pointer = await self._upload(aggregate_id, self._frames(events, frames))
        return EncodedPayload(events, len(events), None, pointer, frames.digest())

    async def _encode_stream(self, aggregate_id: str, events: AsyncIterator[Any]) -> EncodedPayload:
        frames = _Frames(self._codec, self._codec.framed_header())
        buffer = bytearray(frames.header)
        kept: list[Any] = []
        async for event in events:
            frames.add(buffer, event)
            kept.append(event)
            if len(buffer) > self._threshold:
                self._require_bucket(len(buffer))
                kept.clear()  # from here on the events are streamed, not kept
                chunks = self._continue_frames(buffer, events, frames)
                pointer = await self._upload(aggregate_id, chunks)
                return EncodedPayload((), frames.count, None, pointer, frames.digest())
        if not frames.count:
            raise InvalidInputError("events", "must hold at least one event")
        return EncodedPayload(tuple(kept), frames.count, bytes(buffer), None, frames.digest())

    def _require_bucket(self, size: int) -> None:
        if self._objects is None:
            raise ChangeSetTooLargeError(
                "the change set payload (no bucket_name is configured to offload it)",
                size,
                DYNAMODB_ITEM_LIMIT,
            )

    async def _frames(self, events: tuple[Any, ...], frames: _Frames) -> AsyncIterator[bytes]:
        buffer = bytearray(frames.header)
        for event in events:
            frames.add(buffer, event)
            if len(buffer) >= _CHUNK:
                yield bytes(buffer)
                buffer.clear()
                await anyio.lowlevel.checkpoint()
        yield bytes(buffer)

    async def _continue_frames(
        self, first: bytearray, events: AsyncIterator[Any], frames: _Frames
    ) -> AsyncIterator[bytes]:
        yield bytes(first)
        buffer = bytearray()
        async for event in events:
            frames.add(buffer, event)
            if len(buffer) >= _CHUNK:
                yield bytes(buffer)
                buffer.clear()
        if buffer:
            yield bytes(buffer)

    async def _upload(self, aggregate_id: str, chunks: AsyncIterator[bytes]) -> ObjectPointer:
        assert self._objects is not None
        key = object_key(self._config.key_prefix, self._config.table_name, aggregate_id)
        compression = self._config.compression
        body = _compressed(chunks) if compression == "zlib" else chunks
        started = anyio.current_time()
        with self._gate.upload():  # closing the store stops it, and it cleans up
            try:
                uploaded = await upload(
                    self._objects,
                    key,
                    body,
                    part_size=self._config.part_size_bytes,
                    concurrency=self._config.upload_concurrency,
                )
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.discard(key)  # a single PutObject may have landed
                raise
        pointer = ObjectPointer(key, uploaded.size, uploaded.sha256, compression)
        note_offload()
        await self._check_upload_time(pointer, anyio.current_time() - started)
        return pointer

    async def _check_upload_time(self, pointer: ObjectPointer, seconds: float) -> None:
        """An upload slower than ``max_upload_seconds`` is not committed, so the sweep's
        grace period (which counts from the object's start) always covers a commit.
        Transient like a timeout (``StorageUnavailableError``): nothing was committed
        and the object is deleted (or left to the sweep), so the caller may retry."""
        if seconds > self._config.max_upload_seconds:
            await self.discard(pointer.key)
            raise StorageUnavailableError(
                f"the upload took {seconds:.0f} s, over max_upload_seconds "
                f"({self._config.max_upload_seconds:.0f} s); nothing was committed",
                reason=UPLOAD_TOO_SLOW,
                operation="PutObject",
            )

    async def discard(self, key: str) -> None:
        """Delete an object no change set references; failures are left to the sweep."""
        if self._objects is None:
            return
        with suppress(StorageError, StoreClosedError):  # closed: left to the sweep
            await self._objects.delete(key)


async def _as_async(events: Iterable[Any]) -> AsyncIterator[Any]:
    for event in events:
        yield event


async def _compressed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(1)
    async for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


class PayloadReader:
    """Reads offloaded payloads back: verified before a single event is decoded."""

    def __init__(self, codec: EventCodec, objects: ObjectStore | None) -> None:
        self._codec = codec
        self._objects = objects

    async def fetch(self, pointer: ObjectPointer) -> bytes:
        """The decompressed payload, after its size and hash were checked.

        Raises:
            PayloadMissingError: the object is not there.
            IntegrityError: it does not match the pointer or does not decompress.
        """
        objects = self._require_objects()
        digest = hashlib.sha256()
        parts: list[bytes] = []
        async with aclosing(self._get(objects, pointer)) as chunks:
            async for chunk in chunks:
                digest.update(chunk)
                parts.append(chunk)
        body = b"".join(parts)
        _verify(pointer, len(body), digest.hexdigest())
        return _decompress(body) if pointer.compression == "zlib" else body

    async def iter_events(self, pointer: ObjectPointer) -> AsyncGenerator[Any, None]:
        """Yield the events one at a time, memory bounded, after checking the object."""
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            await self._spool(pointer, spool)
            decoder = FrameDecoder(self._codec)
            decompressor = zlib.decompressobj() if pointer.compression == "zlib" else None
            while chunk := await anyio.to_thread.run_sync(spool.read, _CHUNK):
                for data in _inflate(decompressor, chunk):
                    for event in decoder.feed(data):
                        yield event
            decoder.close()

    async def _spool(self, pointer: ObjectPointer, spool: IO[bytes]) -> None:
        objects = self._require_objects()
        digest = hashlib.sha256()
        size = 0
        async with aclosing(self._get(objects, pointer)) as chunks:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                await anyio.to_thread.run_sync(spool.write, chunk)
        _verify(pointer, size, digest.hexdigest())
        spool.seek(0)

    async def _get(
        self, objects: ObjectStore, pointer: ObjectPointer
    ) -> AsyncGenerator[bytes, None]:
        try:
            async with aclosing(objects.get(pointer.key)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except StorageError as exc:
            if exc.code in {"NoSuchKey", "404"}:
                raise PayloadMissingError(pointer.key) from exc
            raise

    def _require_objects(self) -> ObjectStore:
        if self._objects is None:
            raise IntegrityError("a change set is offloaded to S3 but no bucket_name is configured")
        return self._objects


def _verify(pointer: ObjectPointer, size: int, sha256: str) -> None:
    if size != pointer.size or sha256 != pointer.sha256:
        raise IntegrityError(
            f"offloaded payload {pointer.key!r} does not match its pointer "
            f"(size {size} vs {pointer.size}, sha256 {sha256[:12]} vs {pointer.sha256[:12]})"
        )


def _inflate(decompressor: Any, chunk: bytes) -> Iterable[bytes]:
    """Decompress a chunk in slices of at most 1 MiB (a small chunk may inflate a lot)."""
    if decompressor is None:
        yield chunk
        return
    try:
        data = chunk
        while data:
            yield decompressor.decompress(data, _CHUNK)
            data = decompressor.unconsumed_tail
    except zlib.error as exc:
        raise IntegrityError(f"offloaded payload does not decompress: {exc}") from exc


def _decompress(body: bytes) -> bytes:
    try:
        return zlib.decompress(body)
    except zlib.error as exc:
        raise IntegrityError(f"offloaded payload does not decompress: {exc}") from exc
