"""Saving a filtered subscription's checkpoint past entries its filter skipped.

A skipped entry is never projected, so no ``project()`` saves the checkpoint past it:
only a later one does, for a change set that matches. At the feed's head nothing may
match for a long time, and ``wait_for`` a skipped change set (or the consumer's
restart) would wait on that. So when a shard's reader finds nothing new after skipped
entries (``Delivery.at_head``, sent on each empty poll), the consumer, waiting for its
next change set, saves the checkpoint past them itself, under two conditions:

- only for a shard whose delivered change sets are all saved (by ``project()`` or
  ``checkpoint()``): a change set handed out but not saved stays unsaved, so it is
  delivered again after a crash (at least once, as always);
- at most once per :data:`SKIPPED_SAVE_SECONDS` (per subscription; per shard in a
  consumer group): a feed where most entries are skipped costs at most one
  checkpoint write a second, however many entries it skips; a save throttled away is
  made at a later empty poll (``max_poll_interval`` apart at most).
"""

from __future__ import annotations

import math

import anyio

__all__ = ["SKIPPED_SAVE_SECONDS", "SkippedSaves", "past_skipped"]

#: The least time between two saves that move a checkpoint only past skipped entries.
SKIPPED_SAVE_SECONDS = 1.0


class SkippedSaves:
    """When a save past skipped entries may be made: one per interval at most."""

    def __init__(self, interval: float = SKIPPED_SAVE_SECONDS) -> None:
        self._interval = interval
        self._next = -math.inf

    def take(self) -> bool:
        """True (and the next one an interval away) if a save may be made now."""
        now = anyio.current_time()
        if now < self._next:
            return False
        self._next = now + self._interval
        return True


def past_skipped(
    delivered: tuple[int, ...], saved: tuple[int, ...], last_change_set: tuple[int, ...]
) -> tuple[int, ...]:
    """Per shard, the position a save past skipped entries may record: the delivered
    one when every change set delivered is saved (``saved`` at or past the last change
    set's position), else the saved one."""
    return tuple(
        position if kept >= last else kept
        for position, kept, last in zip(delivered, saved, last_change_set, strict=True)
    )
