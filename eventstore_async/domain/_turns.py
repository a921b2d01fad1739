"""Turn-taking: commands on one aggregate inside one process run one at a time.

Without it, two tasks deciding on the same cached state would both append at the same
version and one would always lose (a conflict costing a Query and a second decide).
Locks are made on demand and dropped when nobody holds or waits for them, so memory
follows the aggregates in use, not all aggregates ever touched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio

__all__ = ["Turns"]


class _Turn:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.users = 0


class Turns:
    """Per-aggregate locks of one store."""

    def __init__(self) -> None:
        self._turns: dict[str, _Turn] = {}

    @asynccontextmanager
    async def hold(self, aggregate_ids: Iterable[str]) -> AsyncIterator[None]:
        """Wait for the turn of every aggregate (taken in sorted order, so two commands
        on overlapping sets never wait for each other), and hold them inside."""
        ids = sorted(set(aggregate_ids))
        turns = [self._enter(aggregate_id) for aggregate_id in ids]
        try:
            async with AsyncExitStack() as stack:
                for turn in turns:
                    await stack.enter_async_context(turn.lock)
                yield
        finally:
            for aggregate_id in ids:
                self._leave(aggregate_id)

    def __len__(self) -> int:
        return len(self._turns)

    def _enter(self, aggregate_id: str) -> _Turn:
        turn = self._turns.get(aggregate_id)
        if turn is None:
            turn = self._turns[aggregate_id] = _Turn()
        turn.users += 1
        return turn

    def _leave(self, aggregate_id: str) -> None:
        turn = self._turns[aggregate_id]
        turn.users -= 1
        if not turn.users:
            del self._turns[aggregate_id]
