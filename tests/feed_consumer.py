"""A subscription consumer process for the takeover test; public API only.

Usage: python tests/feed_consumer.py CONFIG_JSON NAME LEASE_SECONDS
Prints one line per change set it processed and checkpointed: "aggregate version".
Runs until killed.
"""

from __future__ import annotations

import json
import sys

import anyio

from eventstore_async import EventStore, StoreConfig


async def main(config_json: str, name: str, lease_seconds: float) -> None:
    config = StoreConfig(**json.loads(config_json))
    async with (
        EventStore(config) as store,
        store.subscribe(name, lease_seconds=lease_seconds) as sub,
    ):
        async for change_set in sub:
            await sub.checkpoint()
            print(change_set.aggregate_id, change_set.version, flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
