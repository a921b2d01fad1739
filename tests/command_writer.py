"""A command process for the multi-process repository test; public API only.

Usage: python -m tests.command_writer CONFIG_JSON NAME TASKS SECONDS ACCOUNT...

Each task runs deposits and withdrawals on random accounts through one repository
for SECONDS, and re-sends one of its earlier command ids now and then (a client
retrying). Prints one JSON object: every command id's last known result.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import anyio

from eventstore_async import ConcurrencyError, EventStore, Repository, StoreConfig
from examples.bank import EVENT_TYPES, Account, Refused, account_decider, deposit, withdraw


async def task(
    repo: Repository[Account],
    name: str,
    accounts: list[str],
    until: float,
    out: dict[str, Any],
) -> None:
    rng = random.Random(name)
    mine: list[str] = []
    n = 0
    while time.monotonic() < until:
        if mine and rng.random() < 0.2:
            command_id = rng.choice(mine)  # a client retrying a command it sent before
        else:
            command_id = f"{name}-{n}"
            n += 1
            kind = "deposit" if rng.random() < 0.55 else "withdraw"
            out["commands"][command_id] = {
                "account": rng.choice(accounts),
                "kind": kind,
                "amount": rng.randint(1, 20),
                "result": None,
                "tries": 0,
            }
            mine.append(command_id)
        await run(repo, command_id, out)


async def run(repo: Repository[Account], command_id: str, out: dict[str, Any]) -> None:
    command = out["commands"][command_id]
    decide = (deposit if command["kind"] == "deposit" else withdraw)(command["amount"])
    command["tries"] += 1
    try:
        outcome = await repo.execute(command["account"], decide, command_id=command_id)
    except Refused:
        if command["result"] is None or command["result"][0] != "landed":
            command["result"] = ["refused"]
        else:
            out["violations"].append(f"{command_id}: landed, then refused on retry")
    except ConcurrencyError:
        out["conflicts"] += 1
        if command["result"] is None or command["result"][0] != "landed":
            command["result"] = ["conflict"]
        else:
            out["violations"].append(f"{command_id}: landed, then a conflict on retry")
    else:
        assert outcome.change_set is not None
        landed = ["landed", outcome.version]
        if command["result"] is not None and command["result"][0] == "landed":
            out["retries_of_landed"] += 1
            if command["result"] != landed:
                out["violations"].append(f"{command_id}: {command['result']} then {landed}")
        if outcome.change_set.commit_id != command_id:
            out["violations"].append(f"{command_id}: outcome of {outcome.change_set.commit_id}")
        command["result"] = landed


async def main(
    config_json: str, name: str, tasks: int, seconds: float, accounts: list[str]
) -> None:
    config = StoreConfig(**json.loads(config_json))
    out: dict[str, Any] = {"commands": {}, "conflicts": 0, "retries_of_landed": 0}
    out["violations"] = []
    started = time.monotonic()
    async with EventStore(config, types=EVENT_TYPES) as store:
        repo = store.repository(account_decider(cache_size=64))
        async with anyio.create_task_group() as group:
            for index in range(tasks):
                group.start_soon(task, repo, f"{name}.{index}", accounts, started + seconds, out)
    out["seconds"] = time.monotonic() - started
    print(json.dumps(out))


if __name__ == "__main__":
    config_json, name, tasks, seconds, *accounts = sys.argv[1:]
    anyio.run(main, config_json, name, int(tasks), float(seconds), accounts)
