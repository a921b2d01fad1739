"""What the command layer needs of its store beyond the public API.

The store hands it over when it is made (``EventStore.__init__``), so nothing in
``domain/`` reads the store's private attributes: appends that also write commit
markers, reading where a commit id landed, and registering a decider's state types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import msgspec

from .._models import Append, ChangeSet

if TYPE_CHECKING:
    from .._store import EventStore

__all__ = ["StoreAccess"]


class _MarkedAppend(Protocol):
    def __call__(self, appends: Sequence[Append], *, marked: bool) -> Awaitable[list[ChangeSet]]:
        """``append_many`` for commands; with ``marked`` each entry also writes its
        commit marker (its commit id lands at most once per aggregate)."""
        ...


@dataclass(frozen=True, slots=True)
class StoreAccess:
    """The store, and the three operations of it that only commands use."""

    store: EventStore  # its public API: load, read, save_snapshot, config
    append_commands: _MarkedAppend
    landed_version: Callable[[str, str], Awaitable[int | None]]  # (aggregate id, commit id)
    register_state: Callable[[type[msgspec.Struct]], None]  # the user's registration stands
