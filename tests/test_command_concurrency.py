"""Commands from many OS processes at once: 4 processes x 8 tasks on 8 shared accounts
for 15 s, with retried command ids, then every account replayed.

What must hold: the balance is never negative at any version (withdrawals are decided
on the state they are appended to), the final balance is the acknowledged deposits
minus the acknowledged withdrawals, every acknowledged command id is stored exactly
once (at the version acknowledged), and a command that raised left nothing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore_async import EventStore, StoreConfig
from examples.bank import (
    EVENT_TYPES,
    Account,
    Deposited,
    Withdrawn,
    account_decider,
    evolve,
    open_account,
)

from .conftest import backend_names, remote_config

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PROCESSES, TASKS, SECONDS = 4, 8, 15.0
ACCOUNTS = [f"account-{n}" for n in range(8)]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend_name", [name for name in backend_names() if name != "memory"])
async def test_commands_from_many_processes(
    backend_name: str, request: pytest.FixtureRequest
) -> None:
    config = remote_config(backend_name, request)
    async with EventStore(config, types=EVENT_TYPES) as store:
        await store.create_schema()
        try:
            repo = store.repository(account_decider())
            for account in ACCOUNTS:
                await repo.execute(account, open_account(account), command_id=f"open-{account}")
            outputs = await run_processes(config)
            await check(store, outputs)
        finally:
            await store.drop_schema()


async def run_processes(config: StoreConfig) -> list[dict[str, Any]]:
    fields = json.dumps(dataclasses.asdict(config))
    results: list[dict[str, Any]] = []

    async def one(name: str) -> None:
        command = [sys.executable, "-m", "tests.command_writer", fields, name, str(TASKS)]
        done = await anyio.run_process([*command, str(SECONDS), *ACCOUNTS], check=False, cwd=ROOT)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        results.append(json.loads(done.stdout))

    async with anyio.create_task_group() as group:
        for index in range(PROCESSES):
            group.start_soon(one, f"p{index}")
    return results


async def check(store: EventStore, outputs: list[dict[str, Any]]) -> None:
    commands = {cid: c for out in outputs for cid, c in out["commands"].items()}
    assert all(out["seconds"] >= SECONDS for out in outputs)
    assert [v for out in outputs for v in out["violations"]] == []
    landed = {cid: c for cid, c in commands.items() if c["result"][0] == "landed"}
    results = Counter(c["result"][0] for c in commands.values())
    retries = sum(c["tries"] - 1 for c in commands.values())
    conflicts = sum(out["conflicts"] for out in outputs)
    print(
        f"\n{len(commands)} commands, {retries} retried sends, {dict(results)}, "
        f"{conflicts} ConcurrencyErrors after max_attempts, "
        f"{sum(out['retries_of_landed'] for out in outputs)} retries of landed commands"
    )
    assert results["landed"] > 50 and results["refused"] > 0
    assert sum(out["retries_of_landed"] for out in outputs) > 0

    stored = Counter[str]()
    for account in ACCOUNTS:
        history = await store.load(account)
        state = Account()
        for change_set in history.change_sets:
            stored[change_set.commit_id] += 1
            state = evolve(state, change_set.events[0])
            assert state.balance >= 0, f"{account} overdrawn at version {change_set.version}"
            if change_set.commit_id.startswith("open-"):
                continue
            command = landed.get(change_set.commit_id)
            assert command is not None, f"{change_set.commit_id}: stored, never acknowledged"
            assert command["account"] == account
            assert command["result"][1] == change_set.version
            kind = Deposited if command["kind"] == "deposit" else Withdrawn
            assert change_set.events == (kind(amount=command["amount"]),)
        expected = sum(
            c["amount"] if c["kind"] == "deposit" else -c["amount"]
            for c in landed.values()
            if c["account"] == account
        )
        assert state.balance == expected, account
    assert max(stored.values()) == 1, "a command id stored twice"
    assert set(stored) - {f"open-{a}" for a in ACCOUNTS} == set(landed)
    report = await store.verify(ACCOUNTS)  # markers included: each names its change set
    assert report.ok, report.problems
