"""Catch-up and feed writes under a simulated per-request latency (DynamoDB's ~10 ms).

    python benchmarks/bench_catchup.py [--change-sets 100000] [--latency 0.010]
        [--shards 1 4 16] [--write-seconds 4] [--write-shards 1 4 16] [--json out.json]

Not the emulator (its global lock would measure itself): the in-memory backend behind
:class:`SlowBackend`, which adds the latency to every request the store makes.

**Catch-up.** For each shard count, ``--change-sets`` change sets are appended (10 per
aggregate, without latency), then read from the beginning twice in the same run:

- *before*: the reader the subscriptions had before the concurrent one, rebuilt here
  step by step: shard after shard, a Query for 100 entries, then a BatchGetItem for
  their change sets, decoded and handed to the consumer through a 256-deep buffer;
- *after*: ``store.subscribe(...)`` today (every shard at once, the next page read
  while the current one is fetched).

The consumer only counts; the figure is change sets per second from the start to the
last one, and the ratio after/before.

**Writes.** Four stores ("processes": each has its own shard positions and turns, as
separate OS processes would) share the slow backend; 16 tasks each append to distinct
aggregates for ``--write-seconds`` at each feed shard count; the figures are appends/s,
per shard, and the share of transactions refused because a shard moved on. Every
store runs in this one OS process, so the CPU of the store itself caps the totals; the
per-shard rate at low shard counts is the latency's.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from eventstore_async import Append, EventStore, StoreConfig
from eventstore_async._backends.memory import MemoryBackend
from eventstore_async._codec import EventCodec
from eventstore_async._offload.payload import PayloadReader
from eventstore_async._read.decode import ChangeSetDecoder
from eventstore_async._records import CommitPlan, FeedEntryRecord, feed_partition

_BATCH_GET = 100
_PAGE = 100


class SlowBackend:
    """The in-memory backend, each request taking ``latency`` seconds more.

    A transaction is applied halfway through its round trip (so writers that read the
    same shard position race as they would against DynamoDB); a BatchGetItem costs one
    round trip per 100 keys, one after another, as the DynamoDB backend sends them.
    """

    def __init__(self, inner: MemoryBackend, latency: float) -> None:
        self.inner = inner
        self.latency = latency
        self.requests = 0
        #: True while nothing is written (catch-up): scans use a sorted key index.
        self.frozen = False
        self._sorted: dict[str, list[Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _wait(self, round_trips: int = 1) -> None:
        self.requests += round_trips
        await anyio.sleep(self.latency * round_trips)

    async def commit(self, plan: CommitPlan) -> None:
        await anyio.sleep(self.latency / 2)
        self.requests += 1
        try:
            await self.inner.commit(plan)
        finally:
            await anyio.sleep(self.latency / 2)

    async def get(self, partition: str, sort_key: Any) -> Any:
        await self._wait()
        return await self.inner.get(partition, sort_key)

    async def get_many(self, keys: list[tuple[str, Any]]) -> list[Any]:
        await self._wait(max(1, math.ceil(len(keys) / _BATCH_GET)))
        return await self.inner.get_many(keys)

    async def scan_partition(self, partition: str, low: Any, limit: int) -> list[Any]:
        """One Query. The in-memory backend sorts the whole partition for each scan (a
        100,000-entry shard: tens of ms of CPU, more than the latency simulated), so the
        catch-up runs, which write nothing while they read, index it once instead."""
        await self._wait()
        if not self.frozen:
            return await self.inner.scan_partition(partition, low, limit)
        keys = self._sorted.get(partition)
        if keys is None:
            keys = self._sorted[partition] = sorted(self.inner._table.get(partition, {}))
        items = self.inner._table.get(partition, {})
        start = bisect.bisect_left(keys, low)
        return [items[key] for key in keys[start : start + limit]]

    async def get_head(self, aggregate_id: str) -> Any:
        await self._wait()
        return await self.inner.get_head(aggregate_id)


def config(shards: int) -> StoreConfig:
    return StoreConfig(table_name="bench", bucket_name=None, feed_shards=shards)


async def populate(memory: MemoryBackend, shards: int, change_sets: int) -> None:
    """``change_sets`` change sets, 10 per aggregate, appended 25 at a time."""
    aggregates = max(1, change_sets // 10)
    async with EventStore(config(shards), backend=memory) as store:
        for version in range(change_sets // aggregates):
            for start in range(0, aggregates, 25):
                batch = [
                    Append(
                        aggregate_id=f"agg-{n}",
                        events=[{"n": version, "sku": "book", "qty": 1}],
                        expected_version=version,
                    )
                    for n in range(start, min(start + 25, aggregates))
                ]
                await store.append_many(batch)


async def catch_up_before(store: EventStore, backend: SlowBackend, total: int) -> float:
    """The sequential reader, step by step as it was: seconds to deliver ``total``."""
    codec = EventCodec()  # the events are plain mappings: no types to register
    decoder = ChangeSetDecoder(codec, PayloadReader(codec, None), store.config.fetch_concurrency)
    shards = store.config.feed_shards
    send, receive = anyio.create_memory_object_stream[object](256)
    positions = [0] * shards
    started = time.perf_counter()

    async def read() -> None:
        async with send:
            while True:
                found = 0
                for shard in range(shards):
                    records = await backend.scan_partition(
                        feed_partition(shard), positions[shard] + 1, _PAGE
                    )
                    entries = [r for r in records if isinstance(r, FeedEntryRecord)]
                    stored = await backend.get_many([(e.aggregate_id, e.version) for e in entries])
                    for change_set in await decoder.change_sets(stored):  # type: ignore[arg-type]
                        await send.send(change_set)
                    if entries:
                        positions[shard] = entries[-1].position
                    found += len(entries)
                if not found:
                    return

    async with anyio.create_task_group() as group:
        group.start_soon(read)
        count = 0
        async with receive:
            async for _ in receive:
                count += 1
    assert count == total, (count, total)
    return time.perf_counter() - started


async def catch_up_after(store: EventStore, total: int) -> float:
    """``store.subscribe`` from the beginning: seconds to deliver ``total``."""
    started = time.perf_counter()
    count = 0
    async with store.subscribe(f"bench-{uuid.uuid4().hex[:8]}", buffer=256) as sub:
        async for _ in sub:
            count += 1
            if count == total:
                break
    return time.perf_counter() - started


async def bench_catchup(shards: int, change_sets: int, latency: float) -> dict[str, Any]:
    memory = MemoryBackend(with_objects=False)
    begun = time.perf_counter()
    await populate(memory, shards, change_sets)
    populate_seconds = time.perf_counter() - begun
    backend = SlowBackend(memory, latency)
    async with EventStore(config(shards), backend=backend) as store:  # type: ignore[arg-type]
        backend.frozen = True  # only the lease and checkpoint items change from here
        cpu = time.process_time()
        before = await catch_up_before(store, backend, change_sets)
        cpu_before, cpu = time.process_time() - cpu, time.process_time()
        after = await catch_up_after(store, change_sets)
        cpu_after = time.process_time() - cpu
    row = {
        "shards": shards,
        "change_sets": change_sets,
        "latency_ms": latency * 1000,
        "before_per_s": change_sets / before,
        "after_per_s": change_sets / after,
        "ratio": before / after,
        # CPU of this process per change set: what caps a reader on a machine to itself
        "before_cpu_us": cpu_before / change_sets * 1e6,
        "after_cpu_us": cpu_after / change_sets * 1e6,
        "populate_s": populate_seconds,
    }
    print(
        f"catch-up  {shards:>3} shards: before {row['before_per_s']:>9,.0f}/s  "
        f"after {row['after_per_s']:>9,.0f}/s  x{row['ratio']:.1f}   CPU per change set "
        f"{row['before_cpu_us']:.0f} / {row['after_cpu_us']:.0f} us",
        flush=True,
    )
    return row


async def bench_writes(
    shards: int, seconds: float, latency: float, stores: int = 4, tasks: int = 16
) -> dict[str, Any]:
    backend = SlowBackend(MemoryBackend(with_objects=False), latency)
    acks = 0
    opened = [EventStore(config(shards), backend=backend) for _ in range(stores)]  # type: ignore[arg-type]
    for store in opened:
        await store.__aenter__()
    await opened[0].append("warm-up", [{}], expected_version=0)  # records the feed shape
    deadline = time.perf_counter() + seconds

    async def writer(store: EventStore, name: str) -> None:
        nonlocal acks
        version = 0
        while time.perf_counter() < deadline:
            await store.append(name, [{"n": version}], expected_version=version)
            version += 1
            acks += 1

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index, store in enumerate(opened):
            for task in range(tasks):
                group.start_soon(writer, store, f"w-{index}-{task}")
    elapsed = time.perf_counter() - started
    metrics = [store.metrics for store in opened]
    for store in opened:
        await store.aclose()
    attempts = sum(m["attempts"] for m in metrics)
    refused = sum(m["feed_retries"] for m in metrics)
    rate = acks / elapsed
    row = {
        "shards": shards,
        "writers": stores * tasks,
        "appends_per_s": rate,
        "per_shard_per_s": rate / shards,
        "refused_share": refused / attempts if attempts else 0.0,
        "latency_ms": latency * 1000,
    }
    print(
        f"writes    {shards:>3} shards: {rate:>7,.0f} appends/s  "
        f"{row['per_shard_per_s']:>6,.0f}/s per shard  "
        f"{row['refused_share']:.1%} refused (shard moved on)",
        flush=True,
    )
    return row


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--change-sets", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.010, help="seconds per request")
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--write-seconds", type=float, default=4.0)
    parser.add_argument("--write-shards", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    catchup = [await bench_catchup(s, args.change_sets, args.latency) for s in args.shards]
    writes = [await bench_writes(s, args.write_seconds, args.latency) for s in args.write_shards]
    return {"catchup": catchup, "writes": writes}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = anyio.run(run, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
