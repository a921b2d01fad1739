"""Append and load latency on the embedded emulator, by the number of items in the table.

    python benchmarks/bench_emulator.py [--sizes 0,10000,50000] [--ops 100] [--endpoint-url URL]

For each size a fresh table is created and bulk-loaded with that many filler items
(``BatchWriteItem``, 25 items a call, in partitions of 10 items of ~300 bytes: not through
appends, which would take far longer). Then one process appends through the public API to
fresh aggregates (one event each: a two-item ``TransactWriteItems``) and loads each of
them back (one ``Query`` of a partition holding the head and one change set), one
operation per table in turn, so that the sizes share whatever else the machine is doing.
The table prints the median and 95th percentile of each, and each median's ratio to the
first size's (the baseline, measured in the same run). ``--json FILE`` also writes them.

``--journal`` runs the emulator with a temporary ``--data-dir``, to see what journaling
every write (and its ``fsync``) costs.

The emulator serialises every request, so these are one client's latencies with nothing
else in flight; on a shared machine, run it twice and look at the spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import boto3

from eventstore_async import EventStore, StoreConfig
from eventstore_async.emulator import Emulator

FILLER_PARTITION = 10  # items per filler partition
BATCH = 25  # BatchWriteItem's limit
FILLER_PAYLOAD = bytes(range(256))  # ~300 bytes per item with the keys and attributes


def bulk_load(config: StoreConfig, count: int) -> float:
    """Write ``count`` filler items with BatchWriteItem; return the seconds it took."""
    client = boto3.client(
        "dynamodb",
        endpoint_url=config.endpoint_url,
        region_name=config.region_name or "us-east-1",
        aws_access_key_id=config.aws_access_key_id or "bench",
        aws_secret_access_key=config.aws_secret_access_key or "bench",
    )
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        requests = [
            {"PutRequest": {"Item": filler_item(index)}}
            for index in range(first, min(first + BATCH, count))
        ]
        pending: dict[str, Any] = {config.table_name: requests}
        while pending:
            answer = client.batch_write_item(RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}
    return time.perf_counter() - started


def filler_item(index: int) -> dict[str, Any]:
    """A change-set-like item in partition ``filler-<index // 10>``."""
    return {
        "pk": {"S": f"filler-{index // FILLER_PARTITION:07d}"},
        "sk": {"N": str(index % FILLER_PARTITION + 1)},
        "commit_id": {"S": uuid.UUID(int=index).hex},
        "events": {"N": "1"},
        "payload": {"B": FILLER_PAYLOAD},
    }


def table_config(endpoint: str) -> StoreConfig:
    token = uuid.uuid4().hex[:8]
    return StoreConfig(
        table_name=f"bench-emu-{token}",
        bucket_name=f"bench-emu-{token}",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        read_timeout=120.0,
    )


async def measure(endpoint: str, sizes: list[int], ops: int) -> list[dict[str, Any]]:
    """Latencies of ``ops`` appends and loads on one table per size, interleaved.

    Every table is filled first; then each round appends (and later loads) once on
    every table in turn, so that a noisy neighbour slows all sizes alike.
    """
    async with AsyncExitStack() as stack:
        stores = []
        rows = []
        for size in sizes:
            store = await stack.enter_async_context(EventStore(table_config(endpoint)))
            await store.create_schema()
            stack.push_async_callback(store.drop_schema)
            seconds = await anyio.to_thread.run_sync(bulk_load, store.config, size)
            print(f"{size} items loaded in {seconds:.1f} s", file=sys.stderr)
            stores.append(store)
            rows.append({"items": size, "bulk_load_s": seconds, "ops": ops})
        appends: list[list[float]] = [[] for _ in sizes]
        loads: list[list[float]] = [[] for _ in sizes]
        for index in range(ops):
            for store, samples in zip(stores, appends, strict=True):
                started = time.perf_counter()
                await store.append(f"probe-{index}", [{"n": index}], expected_version=0)
                samples.append(time.perf_counter() - started)
        for index in range(ops):
            for store, samples in zip(stores, loads, strict=True):
                started = time.perf_counter()
                history = await store.load(f"probe-{index}")
                samples.append(time.perf_counter() - started)
                assert len(history.change_sets) == 1
    for row, append_samples, load_samples in zip(rows, appends, loads, strict=True):
        row["append_p50_ms"] = statistics.median(append_samples) * 1000
        row["append_p95_ms"] = _percentile(append_samples, 0.95) * 1000
        row["load_p50_ms"] = statistics.median(load_samples) * 1000
        row["load_p95_ms"] = _percentile(load_samples, 0.95) * 1000
    return rows


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    async with AsyncExitStack() as stack:
        endpoint = args.endpoint_url
        if endpoint is None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory()) if args.journal else None
            emulator = await stack.enter_async_context(Emulator(data_dir=data_dir))
            endpoint = emulator.endpoint_url
        return await measure(endpoint, args.sizes, args.ops)


def report(rows: list[dict[str, Any]]) -> None:
    """Print the table, with each median's ratio to the first row's."""
    base = rows[0]
    print(
        f"{'items':>7} | {'append p50':>10} {'p95':>8} {'x base':>6} | "
        f"{'load p50':>8} {'p95':>8} {'x base':>6}"
    )
    for r in rows:
        append_ratio = r["append_p50_ms"] / base["append_p50_ms"]
        load_ratio = r["load_p50_ms"] / base["load_p50_ms"]
        print(
            f"{r['items']:>7} | {r['append_p50_ms']:>7.1f} ms {r['append_p95_ms']:>5.1f} ms "
            f"{append_ratio:>6.2f} | {r['load_p50_ms']:>5.1f} ms {r['load_p95_ms']:>5.1f} ms "
            f"{load_ratio:>6.2f}"
        )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[0, 10_000, 50_000],
        help="filler items per table, comma-separated; the first is the baseline",
    )
    parser.add_argument("--ops", type=int, default=100, help="appends and loads per size")
    parser.add_argument("--endpoint-url", help="measure this endpoint instead of the emulator")
    parser.add_argument(
        "--journal",
        action="store_true",
        help="run the emulator with a (temporary) --data-dir: every write journaled and fsync-ed",
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    rows = anyio.run(main, args)
    report(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    cli()
