"""The ``eventstore`` command, every subcommand, against the embedded emulator.

The commands run in this process through click's runner (each runs its own event loop,
so these tests are synchronous; a test that holds a subscription meanwhile runs the
command in a worker thread). ``python -m eventstore_async`` and ``eventstore emulator``
run as subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import click
import pytest
from click.testing import CliRunner, Result

from eventstore_async import EventStore, LeaseLostError, StoreConfig
from eventstore_async.cli import cli
from eventstore_async.cli._context import parse_duration

from .damage import EXPECTED_PROBLEMS, SAMPLE_SETTINGS, damage, write_sample


@pytest.fixture
def env(emulator_url: str) -> dict[str, str]:
    """The environment of a fresh table and bucket on the emulator (not created)."""
    name = f"cli-{uuid.uuid4().hex[:12]}"
    return {
        "EVENTSTORE_TABLE": name,
        "EVENTSTORE_BUCKET": name,
        "EVENTSTORE_ENDPOINT_URL": emulator_url,
        "EVENTSTORE_FEED_SHARDS": str(SAMPLE_SETTINGS["feed_shards"]),
        "EVENTSTORE_OFFLOAD_THRESHOLD_BYTES": str(SAMPLE_SETTINGS["offload_threshold_bytes"]),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner(env=env).invoke(cli, list(args), prog_name="eventstore")


def lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def with_store(env: dict[str, str], work: Callable[[EventStore], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        async with EventStore(StoreConfig.from_env(env, **keys)) as store:
            return await work(store)

    return anyio.run(main)


@pytest.fixture
def sample(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``env``'s table created by ``eventstore init`` and filled with the sample."""
    assert invoke(env, "init").exit_code == 0
    with_store(env, write_sample)
    yield env
    invoke(env, "drop", "--yes")


def test_init_is_idempotent_and_drop_needs_yes(env: dict[str, str]) -> None:
    first = invoke(env, "init")
    assert first.exit_code == 0, first.output
    assert f"table {env['EVENTSTORE_TABLE']} and bucket" in first.stdout
    assert invoke(env, "--json", "init").exit_code == 0
    refused = invoke(env, "drop")
    assert refused.exit_code == 4
    assert "add --yes" in refused.stderr
    assert invoke(env, "drop", "--yes").exit_code == 0
    gone = invoke(env, "verify")
    assert gone.exit_code == 3
    assert f"the table {env['EVENTSTORE_TABLE']!r} does not exist" in gone.stderr


def test_show_prints_the_head_and_the_change_sets(sample: dict[str, str]) -> None:
    human = invoke(sample, "show", "ok")
    assert human.exit_code == 0, human.output
    assert human.stdout.startswith("aggregate ok: version 4, 4 events")
    assert human.stdout.count("\n#") == 4
    assert 'OrderPlaced {"type":"OrderPlaced","sku":"a","qty":0}' in human.stdout

    records = lines(invoke(sample, "show", "ok", "--from", "2", "--to", "3", "--json"))
    assert records[0]["head"]["version"] == 4
    assert [r["change_set"]["version"] for r in records[1:]] == [2, 3]
    assert records[1]["change_set"]["events"][0]["type"] == "OrderPlaced"

    missing = invoke(sample, "show", "nobody")
    assert missing.exit_code == 3
    assert "AggregateNotFoundError" in missing.stderr


def test_tail_reads_the_feed_without_a_lease(sample: dict[str, str]) -> None:
    entries = lines(invoke(sample, "tail", "--from-start", "--no-follow", "--json"))
    assert len(entries) == 12
    for shard in (0, 1):
        positions = [e["position"] for e in entries if e["shard"] == shard]
        assert positions == list(range(1, len(positions) + 1))
    assert all(e["events"] and e["event_count"] == len(e["events"]) for e in entries)
    limited = invoke(sample, "tail", "--from-start", "--limit", "3")
    assert limited.exit_code == 0
    assert len(limited.stdout.splitlines()) == 3
    assert invoke(sample, "tail", "--no-follow").stdout == ""  # from the end: nothing yet
    assert lines(invoke(sample, "subscriptions", "--json")) == []  # no checkpoint written


def test_verify_passes_a_healthy_table(sample: dict[str, str]) -> None:
    result = invoke(sample, "verify")
    assert result.exit_code == 0, result.output
    assert "0 problems" in result.stdout
    summary = lines(invoke(sample, "verify", "--json"))[-1]
    assert summary["problems"] == 0
    assert summary["summary"]["change_sets"] == 12


def test_verify_reports_every_damage_and_exits_1(sample: dict[str, str]) -> None:
    config = StoreConfig.from_env(sample)
    damage(config, sample["EVENTSTORE_ENDPOINT_URL"])
    human = invoke(sample, "verify")
    assert human.exit_code == 1
    for _, where in EXPECTED_PROBLEMS:
        assert any(line.startswith(f"{where}: ") for line in human.stdout.splitlines()), where
    records = lines(invoke(sample, "verify", "--json"))
    problems = {(r["problem"], r["where"]) for r in records if "problem" in r}
    assert problems == EXPECTED_PROBLEMS
    some = invoke(sample, "verify", "order-gap", "ok")
    assert some.exit_code == 1
    assert some.stdout.splitlines()[0].startswith("order-gap@2: change set missing")


def test_sweep_lists_and_deletes_nothing_young(sample: dict[str, str]) -> None:
    dry = invoke(sample, "sweep", "--dry-run", "--older-than", "20m")
    assert dry.exit_code == 0, dry.output
    assert "would delete 0 of 3 objects" in dry.stdout
    assert invoke(sample, "sweep", "--older-than", "1m").exit_code == 2  # under the window
    assert invoke(sample, "sweep", "--older-than", "soon").exit_code == 2
    summary = lines(invoke(sample, "sweep", "--json", "--older-than", "1h"))[-1]
    assert summary["summary"]["objects_scanned"] == 3


def test_subscriptions_and_replay(sample: dict[str, str]) -> None:
    async def consume_five(store: EventStore) -> None:
        async with store.subscribe("orders-view") as subscription:
            seen = 0
            async for _ in subscription:
                seen += 1
                if seen == 5:
                    await subscription.checkpoint()  # all five delivered count as done
                    break

    with_store(sample, consume_five)
    (status,) = lines(invoke(sample, "subscriptions", "--json"))
    assert (status["subscription"], status["held"]) == ("orders-view", False)
    assert sum(status["positions"]) == 5
    assert status["lag_entries"] == 7
    assert status["lag_seconds"] > 0
    table = invoke(sample, "subscriptions")
    assert "orders-view" in table.stdout and "free" in table.stdout

    assert invoke(sample, "replay", "orders-view", "--to", "start").exit_code == 4  # no --yes
    assert invoke(sample, "replay", "orders-view", "--to", "x,y", "--yes").exit_code == 2
    assert invoke(sample, "replay", "orders-view", "--to", "1,2,3", "--yes").exit_code == 2
    assert invoke(sample, "replay", "nobody", "--to", "start", "--yes").exit_code == 2
    moved = invoke(sample, "replay", "orders-view", "--to", "start", "--yes")
    assert moved.exit_code == 0, moved.output
    assert lines(invoke(sample, "subscriptions", "--json"))[0]["positions"] == [0, 0]


def test_subscriptions_shows_a_consumer_group_as_one_and_replay_refuses_it(
    sample: dict[str, str],
) -> None:
    """A group's name item (a lease without end) made ``subscriptions`` fail with an
    OverflowError, and ``replay --force`` would have overwritten it."""

    async def consume_in_a_group(store: EventStore) -> None:
        async with store.subscribe("orders-group", mode="shared") as group:
            seen = 0
            async for _ in group:
                seen += 1
                if seen == 5:
                    await group.checkpoint()
                    break

    with_store(sample, consume_in_a_group)
    listed = invoke(sample, "subscriptions", "--json")
    assert listed.exit_code == 0, listed.output
    (status,) = lines(listed)
    assert status["subscription"] == "orders-group"
    assert len(status["positions"]) == len(status["ends"]) == SAMPLE_SETTINGS["feed_shards"]
    assert sum(status["positions"]) >= 5
    assert status["lag_entries"] == sum(status["ends"]) - sum(status["positions"])
    assert invoke(sample, "subscriptions").exit_code == 0
    for force in ((), ("--force",)):
        refused = invoke(sample, "replay", "orders-group", "--to", "start", "--yes", *force)
        assert refused.exit_code == 2, refused.output
        assert "consumer group" in refused.stderr
    assert lines(invoke(sample, "subscriptions", "--json"))[0]["positions"] == status["positions"]


def test_replay_is_refused_while_a_consumer_holds_the_lease(sample: dict[str, str]) -> None:
    async def hold(store: EventStore) -> None:
        async with store.subscribe("orders-view", lease_seconds=30) as subscription:
            async for _ in subscription:
                break
            await subscription.checkpoint()

            def run(*args: str) -> Result:
                return invoke(sample, *args)

            held = await anyio.to_thread.run_sync(run, "subscriptions", "--json")
            assert json.loads(held.stdout)["held"] is True
            refused = await anyio.to_thread.run_sync(
                run, "replay", "orders-view", "--to", "end", "--yes"
            )
            assert refused.exit_code == 4
            assert "held by consumer" in refused.stderr
            forced = await anyio.to_thread.run_sync(
                run, "replay", "orders-view", "--to", "end", "--yes", "--force"
            )
            assert forced.exit_code == 0, forced.output
            with pytest.raises(LeaseLostError):
                await subscription.checkpoint()

    with_store(sample, hold)
    (status,) = lines(invoke(sample, "subscriptions", "--json"))
    assert status["positions"] == status["ends"]


def test_configuration_errors_exit_2(env: dict[str, str]) -> None:
    without_table = {k: v for k, v in env.items() if k != "EVENTSTORE_TABLE"}
    without_table["EVENTSTORE_TABLE"] = ""
    result = CliRunner(env=without_table).invoke(cli, ["--table", "x", "show", "a"])
    assert result.exit_code == 2  # "x" is not a valid table name
    assert "table_name" in result.stderr


def test_options_override_the_environment(env: dict[str, str], emulator_url: str) -> None:
    assert invoke(env, "init").exit_code == 0
    elsewhere = {
        **env,
        "EVENTSTORE_TABLE": "not-this-one",
        "EVENTSTORE_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    result = invoke(
        elsewhere, "verify", "--table", env["EVENTSTORE_TABLE"], "--endpoint-url", emulator_url
    )
    assert result.exit_code == 0, result.output
    assert invoke(env, "drop", "--yes").exit_code == 0


def test_parse_duration() -> None:
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    with pytest.raises(click.BadParameter):
        parse_duration("1 hour")


def test_python_m_runs_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "eventstore_async", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in ("init", "drop", "show", "tail", "verify", "sweep", "subscriptions", "replay"):
        assert f"  {name} " in done.stdout
    assert "Exit codes" in done.stdout


def test_the_emulator_subcommand_serves_and_keeps_its_data_dir(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "eventstore_async", "emulator", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        env = {"EVENTSTORE_TABLE": "kept", "EVENTSTORE_ENDPOINT_URL": url}
        env |= {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        assert invoke(env, "init").exit_code == 0
        assert any(tmp_path.iterdir())  # the emulator journals under --data-dir
    finally:
        process.terminate()
        code = process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    assert code == 0
