"""Decoding a page of a shard's change sets in feed order, up to the first that fails.

The reader fetches a page ahead of the consumer, so a change set that cannot be read
(undecodable, its offloaded object missing or damaged, not stored) is met before the
healthy change sets ahead of it are delivered. Raising there would withhold them: the
consumer would stop before change sets it could have projected. So a page is decoded
into the change sets before the first failure, in order, and that failure, which the
reader raises once it has delivered them: at the poison's own turn in the shard.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from .._errors import StorageUnavailableError
from .._models import ChangeSet
from .._read.decode import ChangeSetDecoder
from .._records import ChangeSetRecord

__all__ = ["Decoded", "decode_in_order"]

#: The change sets before the first one that failed, and that failure (None: none did).
Decoded = tuple[list[ChangeSet], Exception | None]


async def decode_in_order(
    decoder: ChangeSetDecoder, records: Sequence[ChangeSetRecord], *, lenient: bool
) -> Decoded:
    """Decode ``records`` (offloaded ones fetched concurrently, bounded by the decoder).

    Raises:
        StorageUnavailableError: the first failure in order is one that a retry of the
            page may mend (nothing of the page has been delivered).
    """
    if all(record.pointer is None for record in records):
        decoded, failure = await _one_by_one(decoder, records, lenient=lenient)
    else:
        decoded, failure = await _concurrently(decoder, records, lenient=lenient)
    if isinstance(failure, StorageUnavailableError):
        raise failure
    return decoded, failure


async def _one_by_one(
    decoder: ChangeSetDecoder, records: Sequence[ChangeSetRecord], *, lenient: bool
) -> Decoded:
    decoded: list[ChangeSet] = []
    for record in records:
        try:
            decoded.append(await decoder.change_set(record, lenient=lenient))
        except Exception as exc:
            return decoded, exc
    return decoded, None


async def _concurrently(
    decoder: ChangeSetDecoder, records: Sequence[ChangeSetRecord], *, lenient: bool
) -> Decoded:
    """Each record in a task of its own; a failure cancels only the records after it
    (those before it are still wanted)."""
    results: list[ChangeSet | Exception | None] = [None] * len(records)
    scopes = [anyio.CancelScope() for _ in records]

    async def decode(index: int, record: ChangeSetRecord) -> None:
        with scopes[index]:
            try:
                results[index] = await decoder.change_set(record, lenient=lenient)
            except Exception as exc:
                results[index] = exc
                for later in scopes[index + 1 :]:
                    later.cancel()

    async with anyio.create_task_group() as group:
        for index, record in enumerate(records):
            group.start_soon(decode, index, record)
    decoded: list[ChangeSet] = []
    for result in results:
        if not isinstance(result, ChangeSet):  # a failure, or cancelled after one
            return decoded, result
        decoded.append(result)
    return decoded, None
