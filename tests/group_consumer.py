"""A member of a consumer group for the group tests; public API only (and ``_owner``).

Usage: python tests/group_consumer.py CONFIG_JSON NAME LEASE_SECONDS
Prints "owner <id>" first, then "applied <aggregate> <version>" per change set it
projected. Runs until killed or terminated.

Each change set is applied to the view "applied" with ``project()``: the aggregate's
document lists the versions applied, so applying one twice or out of order shows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import anyio

from eventstore_async import EventStore, LeaseLostError, StoreConfig


async def consume(
    store: EventStore, name: str, lease_seconds: float, report: Callable[[str], None]
) -> None:
    """Project every change set this member gets, until cancelled."""
    async with store.subscribe(
        name, mode="shared", lease_seconds=lease_seconds, poll_interval=0.01
    ) as sub:
        report(f"owner {sub._owner}")  # type: ignore[union-attr]
        async for change_set in sub:
            document = await store.get_view("applied", change_set.aggregate_id)
            versions = [*(document or {"versions": []})["versions"], change_set.version]
            try:
                await sub.project("applied", put={change_set.aggregate_id: {"versions": versions}})
            except LeaseLostError:
                continue  # the shard moved on: its new holder applies this one
            report(f"applied {change_set.aggregate_id} {change_set.version}")


async def main(config_json: str, name: str, lease_seconds: float) -> None:
    config = StoreConfig(**json.loads(config_json))
    async with EventStore(config) as store:
        await consume(store, name, lease_seconds, lambda line: print(line, flush=True))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
