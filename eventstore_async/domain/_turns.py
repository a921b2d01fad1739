"""Turn-taking: commands on one aggregate inside one process run one at a time.

Without it, two tasks deciding on the same cached state would both append at the same
version and one would always lose (a conflict costing a Query and a second decide).
Turns are made on demand and dropped when nobody holds or waits for them, so memory
follows the aggregates in use, not all aggregates ever touched. Taking a free turn does
not yield to the event loop (the command awaits its request anyway): on the hot path of
a cached command it costs a dictionary lookup, not a lock's checkpoints.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from types import TracebackType

import anyio

__all__ = ["Turns"]


class _Turn:
    """Who holds one aggregate's turn, and who waits for it (first come, first served)."""

    __slots__ = ("busy", "users", "waiters")

    def __init__(self) -> None:
        self.busy = False
        self.users = 0  # holding or waiting
        self.waiters: deque[anyio.Event] = deque()


class Turns:
    """Per-aggregate turns of one store."""

    def __init__(self) -> None:
        self._turns: dict[str, _Turn] = {}

    def hold(self, aggregate_ids: Iterable[str]) -> _Holding:
        """``async with turns.hold(ids):`` waits for the turn of every aggregate (taken
        in sorted order, so two commands on overlapping sets never wait for each other)
        and holds them inside."""
        return _Holding(self, sorted(set(aggregate_ids)))

    def __len__(self) -> int:
        return len(self._turns)

    async def take(self, aggregate_id: str) -> None:
        turn = self._turns.get(aggregate_id)
        if turn is None:
            turn = self._turns[aggregate_id] = _Turn()
        turn.users += 1
        if not turn.busy:
            turn.busy = True
            return
        handed = anyio.Event()
        turn.waiters.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():  # handed the turn as the wait was cancelled: pass it on
                self.give(aggregate_id)
            else:
                turn.waiters.remove(handed)
                self._leave(aggregate_id, turn)
            raise

    def give(self, aggregate_id: str) -> None:
        """Hand the turn to the next waiter, or free it."""
        turn = self._turns[aggregate_id]
        if turn.waiters:
            turn.waiters.popleft().set()  # still busy: the waiter owns it now
        else:
            turn.busy = False
        self._leave(aggregate_id, turn)

    def _leave(self, aggregate_id: str, turn: _Turn) -> None:
        turn.users -= 1
        if not turn.users:
            del self._turns[aggregate_id]


class _Holding:
    """The turns of some aggregates, held inside ``async with``."""

    __slots__ = ("_ids", "_taken", "_turns")

    def __init__(self, turns: Turns, aggregate_ids: list[str]) -> None:
        self._turns = turns
        self._ids = aggregate_ids
        self._taken: list[str] = []

    async def __aenter__(self) -> None:
        try:
            for aggregate_id in self._ids:
                await self._turns.take(aggregate_id)
                self._taken.append(aggregate_id)
        except BaseException:
            self._give_back()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._give_back()

    def _give_back(self) -> None:
        for aggregate_id in reversed(self._taken):
            self._turns.give(aggregate_id)
        self._taken.clear()
