"""Append and load one huge change set through S3, with peak memory and throughput.

    python benchmarks/bench_offload.py --size-mib 1024

Runs against the embedded emulator (or ``--endpoint-url``). The events are generated
lazily (``--event-kib`` each) and streamed; the load side uses ``iter_events``, which
spools the object to a temporary file, checks its hash, then decodes one event at a
time. Peak RSS is sampled from /proc every 5 ms, per phase (the kernel's high-water
mark is reset between phases). Goal: under 150 MB for both directions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

import anyio

from eventstore_async import EventStore, StoreConfig
from eventstore_async.emulator import Emulator

MIB = 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_high_water_mark() -> None:
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class PeakRss:
    """Samples RSS in the background while a phase runs."""

    def __init__(self) -> None:
        self.peak = 0

    async def sample(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.peak = max(self.peak, rss_bytes())
            await anyio.sleep(0.005)


def event_body(n: int, size: int) -> bytes:
    seed = hashlib.sha256(n.to_bytes(8, "big")).digest()
    return seed * (size // len(seed))


async def events(count: int, size: int) -> AsyncIterator[dict[str, Any]]:
    for n in range(count):
        yield {"n": n, "data": event_body(n, size)}


async def measure(label: str, work: Any) -> dict[str, Any]:
    reset_high_water_mark()
    meter = PeakRss()
    before = rss_bytes()
    async with anyio.create_task_group() as group:
        await group.start(meter.sample)
        started = time.perf_counter()
        result = await work()
        elapsed = time.perf_counter() - started
        group.cancel_scope.cancel()
    print(
        f"{label}: {elapsed:.1f} s, peak RSS {meter.peak / MIB:.0f} MiB "
        f"(before {before / MIB:.0f} MiB)",
        file=sys.stderr,
    )
    return {
        "seconds": elapsed,
        "peak_rss_mib": meter.peak / MIB,
        "rss_before_mib": before / MIB,
        "result": result,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    size = args.event_kib * 1024
    count = args.size_mib * MIB // size
    async with AsyncExitStack() as stack:
        endpoint = args.endpoint_url or (await stack.enter_async_context(Emulator())).endpoint_url
        token = uuid.uuid4().hex[:8]
        config = StoreConfig(
            table_name=f"bench-offload-{token}",
            bucket_name=f"bench-offload-{token}",
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            part_size_bytes=args.part_mib * MIB,
            upload_concurrency=args.concurrency,
            read_timeout=300.0,
        )
        store = await stack.enter_async_context(EventStore(config))
        await store.create_schema()
        aggregate = f"huge-{token}"

        async def append() -> int:
            change_set = await store.append(aggregate, events(count, size), expected_version=0)
            return change_set.event_count

        async def load() -> int:
            seen = 0
            async for event in store.iter_events(aggregate, 1):
                if event["n"] != seen or event["data"][:32] != event_body(seen, 32):
                    raise AssertionError(f"event {seen} came back wrong")
                seen += 1
            return seen

        appended = await measure("append", append)
        loaded = await measure("load", load)
        await store.drop_schema()
    total = count * size
    return {
        "bytes": total,
        "events": count,
        "part_size_mib": args.part_mib,
        "upload_concurrency": args.concurrency,
        "append": {**appended, "mib_per_s": total / MIB / appended["seconds"]},
        "load": {**loaded, "mib_per_s": total / MIB / loaded["seconds"]},
        "loaded_events": loaded["result"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="change set size (1024)")
    parser.add_argument("--event-kib", type=int, default=64, help="size of one event (64)")
    parser.add_argument("--part-mib", type=int, default=5, help="multipart part size (5)")
    parser.add_argument("--concurrency", type=int, default=4, help="parts in flight (4)")
    parser.add_argument("--endpoint-url", help="DynamoDB/S3 endpoint instead of the emulator")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    figures = anyio.run(run, args)
    limit = 150
    for phase in ("append", "load"):
        f = figures[phase]
        verdict = "ok" if f["peak_rss_mib"] < limit else f"OVER {limit} MiB"
        print(
            f"{phase:<6} {figures['bytes'] / MIB:>6.0f} MiB  {f['mib_per_s']:>6.1f} MiB/s  "
            f"peak RSS {f['peak_rss_mib']:>5.0f} MiB  {verdict}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
