"""Start-up time of the emulator on a data dir with a long history: journal vs. snapshot.

    python benchmarks/bench_emulator_startup.py [--appends 500] [--items 10000] [--repeat 3]

Builds one data dir the way a day of development does: ``--appends`` appends through the
public API (a few of them offloaded to S3) and ``--items`` filler items written with
``BatchWriteItem``, all journaled (the emulator that writes them never compacts). Then,
on copies of that directory, it times from the start of ``python -m
eventstore_async.emulator --data-dir DIR`` to its URL line (the server answers from then
on), ``--repeat`` times each, in turn:

- ``journal``: ``--no-compact``, replaying the whole journal (what every start did before
  snapshots, and what a start without compaction still does);
- ``compacting``: the first start with compaction (replay, then write the snapshot);
- ``snapshot``: every later start (read the snapshot, nothing to replay).

It prints the medians, and the ratio of ``journal`` to ``snapshot``, both measured in this
run; "restore s" is the server's own figure for loading the snapshot and replaying the
journal (and, in ``compacting``, before writing the snapshot), without the interpreter's
and moto's import. ``--json FILE`` also writes them. The machine's noise shows in the
spread (min/max).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from benchmarks.bench_emulator import bulk_load, table_config
from eventstore_async import EventStore
from eventstore_async.emulator import Emulator
from eventstore_async.emulator._process import emulator_command

NEVER = 1 << 50  # a journal size no history here reaches: the writer never compacts


async def build(directory: Path, appends: int, items: int) -> None:
    """Write the history into ``directory`` (journaled, not compacted)."""
    async with Emulator(data_dir=directory, compact_journal_bytes=NEVER) as emu:
        config = table_config(emu.endpoint_url)
        async with EventStore(config) as store:
            await store.create_schema()
            for n in range(appends):
                pad = "x" * (200_000 if n % 50 == 0 else 300)  # every 50th to S3
                await store.append(
                    f"order-{n % 100}", [{"n": n, "pad": pad}], expected_version=n // 100
                )
        await anyio.to_thread.run_sync(bulk_load, config, items)


def start_up_seconds(directory: Path, *extra: str) -> tuple[float, str]:
    """Seconds from starting the server on ``directory`` to its URL line; its stderr."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [*emulator_command(data_dir=directory), *extra],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        seconds = time.perf_counter() - started
        process.terminate()
        process.wait(timeout=60)
        stderr.seek(0)
        said = stderr.read().decode(errors="replace")
    if not line.startswith(b"http://"):
        raise RuntimeError(f"the emulator did not start: {said}")
    return seconds, said.strip().splitlines()[-1]


def restore_seconds(said: str) -> float:
    """The restore time the server reports (without interpreter and moto start-up)."""
    match = re.search(r" in ([0-9.]+) s", said)
    return float(match.group(1)) if match else float("nan")


def measure(source: Path, repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Start-up seconds (to the URL line) and restore seconds, by phase."""
    samples: dict[str, list[float]] = {"journal": [], "compacting": [], "snapshot": []}
    restores: dict[str, list[float]] = {phase: [] for phase in samples}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(repeat):
            copy = Path(scratch) / f"round-{round_}"
            shutil.copytree(source, copy)
            for phase, extra in (
                ("journal", ("--no-compact",)),
                ("compacting", ()),
                ("snapshot", ()),
            ):
                seconds, said = start_up_seconds(copy, *extra)
                samples[phase].append(seconds)
                restores[phase].append(restore_seconds(said))
                print(f"{phase:>10}: {seconds:6.2f} s  ({said})", file=sys.stderr)
    return samples, restores


def size(directory: Path, name: str) -> int:
    path = directory / name
    return path.stat().st_size if path.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "history"
        started = time.perf_counter()
        anyio.run(build, source, args.appends, args.items)
        print(f"history written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        journal_bytes = size(source, "journal")
        samples, restores = measure(source, args.repeat)
        compacted = Path(scratch) / "compacted"
        shutil.copytree(source, compacted)
        start_up_seconds(compacted)
        snapshot_bytes, left_bytes = size(compacted, "snapshot"), size(compacted, "journal")
    medians = {phase: statistics.median(values) for phase, values in samples.items()}
    print(f"history: {args.appends} appends + {args.items} batch-written items")
    print(
        f"data dir: journal {journal_bytes / 1e6:.1f} MB -> "
        f"snapshot {snapshot_bytes / 1e6:.1f} MB + journal {left_bytes} B"
    )
    print(f"{'start-up':<12}{'median s':>10}{'min s':>8}{'max s':>8}{'restore s':>11}")
    for phase, values in samples.items():
        restore = statistics.median(restores[phase])
        print(
            f"{phase:<12}{medians[phase]:>10.2f}{min(values):>8.2f}{max(values):>8.2f}"
            f"{restore:>11.2f}"
        )
    ratio = medians["journal"] / medians["snapshot"]
    restore_ratio = statistics.median(restores["journal"]) / statistics.median(restores["snapshot"])
    print(f"journal / snapshot: {ratio:.1f}x faster start-up from the snapshot")
    print(f"journal / snapshot, restore alone: {restore_ratio:.1f}x")
    if args.json is not None:
        results: dict[str, Any] = {
            "appends": args.appends,
            "items": args.items,
            "journal_bytes": journal_bytes,
            "snapshot_bytes": snapshot_bytes,
            "samples_s": samples,
            "median_s": medians,
            "restore_s": restores,
            "ratio": ratio,
            "restore_ratio": restore_ratio,
        }
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
