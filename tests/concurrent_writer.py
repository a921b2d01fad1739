"""A writer process for the multi-process concurrency test; public API only.

Usage: python tests/concurrent_writer.py CONFIG_JSON NAME TASKS ATTEMPTS AGGREGATE...
Prints one JSON object: the acknowledged appends and the conflicts seen.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import anyio

from eventstore_async import ANY, ConcurrencyError, EventStore, StoreConfig


async def writer(
    store: EventStore, name: str, aggregates: list[str], attempts: int, out: dict[str, Any]
) -> None:
    rng = random.Random(name)
    for attempt in range(attempts):
        aggregate = rng.choice(aggregates)
        commit_id = f"{name}-{attempt}"
        use_any = attempt % 5 == 4
        head = await store.head(aggregate)
        expected = ANY if use_any else (head.version if head else 0)
        try:
            change_set = await store.append(
                aggregate,
                [{"writer": name, "n": attempt}],
                expected_version=expected,
                commit_id=commit_id,
            )
        except ConcurrencyError as conflict:
            out["conflicts"].append([aggregate, conflict.expected, conflict.actual])
        else:
            out["acks"].append([aggregate, change_set.version, commit_id])


async def main(
    config_json: str, name: str, tasks: int, attempts: int, aggregates: list[str]
) -> None:
    config = StoreConfig(**json.loads(config_json))
    out: dict[str, Any] = {"acks": [], "conflicts": []}
    async with EventStore(config) as store, anyio.create_task_group() as group:
        for task in range(tasks):
            group.start_soon(writer, store, f"{name}.{task}", aggregates, attempts, out)
    print(json.dumps(out))


if __name__ == "__main__":
    config_json, name, tasks, attempts, *aggregates = sys.argv[1:]
    anyio.run(main, config_json, name, int(tasks), int(attempts), aggregates)
