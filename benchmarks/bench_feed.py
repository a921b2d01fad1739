"""What the global feed costs appends, and how far behind a subscription runs.

    python benchmarks/bench_feed.py [--processes 3] [--tasks 4] [--seconds 8] [--shards 4]

For the feed off and on, and for writers on distinct aggregates and on shared ones,
OS processes append for a fixed time through the public API; the figures are the
acknowledged appends per second, the transactions sent per append (refusals included),
the share of transactions refused because a feed shard moved on, and, with the feed
on, the lag from commit to delivery seen by a subscription following live. Runs on
the embedded emulator (or ``--endpoint-url``): the emulator serialises every request,
so absolute rates are the emulator's; the ratios and refusal rates are the point.

With the feed on, the subscription's deliveries are checked against the writers'
acknowledged appends: every one delivered once, each aggregate's in version order (the
run exits 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

from eventstore_async import ConcurrencyError, EventStore, StoreConfig
from eventstore_async.emulator import Emulator


async def worker(
    config: StoreConfig, name: str, tasks: int, seconds: float, shared: bool
) -> dict[str, Any]:
    acks = conflicts = 0
    acked: list[tuple[str, int]] = []
    async with EventStore(config) as store:
        deadline = time.monotonic() + seconds

        async def task(index: int) -> None:
            nonlocal acks, conflicts
            aggregate = "shared-" + str(index % 4) if shared else f"{name}-{index}"
            version = 0
            while time.monotonic() < deadline:
                try:
                    await store.append(aggregate, [{"n": version}], expected_version=version)
                    version += 1
                    acks += 1
                    acked.append((aggregate, version))
                except ConcurrencyError as conflict:
                    conflicts += 1
                    version = conflict.actual

        async with anyio.create_task_group() as group:
            for index in range(tasks):
                group.start_soon(task, index)
        return {"acks": acks, "conflicts": conflicts, "acked": acked, **store.metrics}


class Follower:
    """A subscription projecting the feed live: what it got, in order, and how late."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, int]] = []
        self.lags: list[float] = []
        self.expected: int | None = None  # known once the writers are done

    async def follow(self, store: EventStore) -> None:
        name = f"bench-{uuid.uuid4().hex[:6]}"
        async with store.subscribe(name, poll_interval=0.01, max_poll_interval=0.05) as sub:
            async for change_set in sub:
                if not change_set.aggregate_id.startswith("wake-"):
                    self.delivered.append((change_set.aggregate_id, change_set.version))
                    self.lags.append(sub.last_lag_seconds or 0.0)
                # a projection: the aggregate's latest version, with the checkpoint
                summary = {"version": change_set.version}
                await sub.project("latest", put={change_set.aggregate_id: summary})
                if self.expected is not None and len(self.delivered) >= self.expected:
                    return

    def check(self, acked: list[tuple[str, int]]) -> dict[str, Any]:
        """Every acknowledged change set delivered once, each aggregate's in order."""
        versions: dict[str, list[int]] = {}
        for aggregate, version in self.delivered:
            versions.setdefault(aggregate, []).append(version)
        return {
            "delivered": len(self.delivered),
            "acknowledged": len(acked),
            "all_delivered_once": sorted(self.delivered) == sorted(acked),
            "in_aggregate_order": all(v == sorted(v) for v in versions.values()),
        }


async def scenario(
    endpoint: str, args: argparse.Namespace, shards: int, shared: bool
) -> dict[str, Any]:
    token = uuid.uuid4().hex[:8]
    config = StoreConfig(
        table_name=f"bench-feed-{token}",
        endpoint_url=endpoint,
        feed_shards=shards,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        read_timeout=30.0,
    )
    follower = Follower()
    async with EventStore(config) as store:
        await store.create_schema()
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            if shards:
                group.start_soon(follower.follow, store)
            results = await run_workers(config, args, shared)
            acked = [(a, v) for result in results for a, v in result.pop("acked")]
            follower.expected = len(acked)
            await store.append(f"wake-{token}", [{}], expected_version=0)  # if it is idle
        elapsed = time.perf_counter() - started
        await store.drop_schema()
    total = {key: sum(r[key] for r in results) for key in results[0]}
    lags = follower.lags
    delivery = follower.check(acked) if shards else {}
    return {
        "feed_shards": shards,
        "aggregates": "shared" if shared else "distinct",
        "appends_per_s": total["acks"] / args.seconds,
        "transactions_per_append": total["attempts"] / max(total["commits"], 1),
        "feed_refusal_rate": total["feed_retries"] / max(total["attempts"], 1),
        "concurrency_errors": total["conflicts"],
        "lag_p50_ms": statistics.median(lags) * 1000 if lags else None,
        "lag_p95_ms": _percentile(lags, 0.95) * 1000 if lags else None,
        "lag_max_ms": max(lags) * 1000 if lags else None,
        "elapsed_s": elapsed,
        "delivery": delivery,
        **total,
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_workers(
    config: StoreConfig, args: argparse.Namespace, shared: bool
) -> list[dict[str, Any]]:
    import dataclasses

    fields = json.dumps(dataclasses.asdict(config))
    results: list[dict[str, Any]] = []

    async def one(index: int) -> None:
        command = [
            sys.executable,
            __file__,
            "--worker",
            fields,
            f"p{index}",
            str(args.tasks),
            str(args.seconds),
            "shared" if shared else "distinct",
        ]
        done = await anyio.run_process(command, check=True)
        results.append(json.loads(done.stdout))

    async with anyio.create_task_group() as group:
        for index in range(args.processes):
            group.start_soon(one, index)
    return results


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    async with AsyncExitStack() as stack:
        endpoint = args.endpoint_url or (await stack.enter_async_context(Emulator())).endpoint_url
        for shared in (False, True):
            for shards in (0, args.shards):
                row = await scenario(endpoint, args, shards, shared)
                print(
                    f"{row['aggregates']:<9} feed_shards={shards}: "
                    f"{row['appends_per_s']:.0f} appends/s",
                    file=sys.stderr,
                )
                rows.append(row)
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'aggregates':<10} {'shards':>6} {'appends/s':>9} {'tx/append':>9} "
        f"{'feed refused':>12} {'conflicts':>9} {'lag p50':>8} {'lag p95':>8}  delivery"
    )
    for r in rows:
        lag50 = f"{r['lag_p50_ms']:.0f} ms" if r["lag_p50_ms"] is not None else "-"
        lag95 = f"{r['lag_p95_ms']:.0f} ms" if r["lag_p95_ms"] is not None else "-"
        d = r["delivery"]
        delivery = "-"
        if d:
            once = "all once" if d["all_delivered_once"] else "MISSING OR DOUBLED"
            order = "in aggregate order" if d["in_aggregate_order"] else "OUT OF ORDER"
            delivery = f"{d['delivered']}/{d['acknowledged']} {once}, {order}"
        print(
            f"{r['aggregates']:<10} {r['feed_shards']:>6} {r['appends_per_s']:>9.1f} "
            f"{r['transactions_per_append']:>9.2f} {r['feed_refusal_rate']:>11.1%} "
            f"{r['concurrency_errors']:>9} {lag50:>8} {lag95:>8}  {delivery}"
        )


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        fields, name, tasks, seconds, mode = sys.argv[2:7]
        config = StoreConfig(**json.loads(fields))
        out = anyio.run(worker, config, name, int(tasks), float(seconds), mode == "shared")
        print(json.dumps(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=4, help="writer tasks per process")
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--endpoint-url")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = anyio.run(main, args)
    report(rows)
    failed = [r for r in rows if r["delivery"] and not all(r["delivery"].values())]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    if failed:
        sys.exit("a subscription missed, doubled or reordered change sets")


if __name__ == "__main__":
    cli()
