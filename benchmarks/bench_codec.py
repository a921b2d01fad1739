"""What decoding costs per event, before and after versioned envelopes: same run.

``python -m benchmarks.bench_codec [--baseline REV] [--rounds N]`` decodes the load
workload's payloads (100 change sets of one ~1 KB ``BenchEvent``, and a change set of
100 small events) with:

- ``baseline``: the codec of git revision REV (default ``3d32fc3``, the release before
  versions), loaded from ``git show`` as a module of its own;
- ``0x01``: today's codec, the same 0x01 payloads (what a store with no versioned type
  writes and reads);
- ``0x03``: today's codec, versioned payloads, every event at its current version;
- ``upcast 1 step`` / ``upcast 2 steps``: events stored at older versions, run through
  one or two upcasters (each a small dict rewrite).

Rounds of every variant are interleaved and the median per event is printed, with the
ratio to the baseline. Nothing is written.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from eventstore_async import EventType, RawEvent
from eventstore_async._codec import EventCodec

from .workloads import BenchEvent, history_events


class BenchEventV3(msgspec.Struct, tag="BenchEvent"):
    order_id: str
    sku: str
    quantity: int
    note: str


def _v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    body["quantity"] = body.pop("qty")
    return body


def _v2_to_v3(body: dict[str, Any]) -> dict[str, Any]:
    body["note"] = body["note"]  # a no-op step: the chain's own cost
    return body


def baseline_codec(revision: str) -> Any:
    """The EventCodec class of ``revision``'s ``eventstore_async/_codec.py``."""
    source = subprocess.run(
        ["git", "show", f"{revision}:eventstore_async/_codec.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = "eventstore_async._codec_baseline"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "eventstore_async"
    sys.modules[name] = module
    exec(compile(source, f"{revision}:_codec.py", "exec"), module.__dict__)
    return module.EventCodec


def payloads() -> dict[str, tuple[Any, list[bytes], int]]:
    """Variant -> (codec, payloads, events in all)."""
    events = history_events()
    small = [msgspec.structs.replace(e, note="") for e in events]
    v1 = EventCodec(BenchEvent)
    plain = [v1.encode_events([e]) for e in events] + [v1.encode_events(small)]
    count = len(events) + len(small)
    v3_type = EventType(BenchEventV3, version=3, upcasters={1: _v1_to_v2, 2: _v2_to_v3})
    v3 = EventCodec(v3_type)

    def as_v3(event: BenchEvent) -> BenchEventV3:
        return BenchEventV3(event.order_id, event.sku, event.qty, event.note)

    versioned = [v3.encode_events([as_v3(e)]) for e in events]
    versioned.append(v3.encode_events([as_v3(e) for e in small]))

    def stored_at(version: int, batch: list[BenchEvent]) -> bytes:
        bodies = [msgspec.to_builtins(e) for e in batch]
        if version == 2:
            bodies = [_v1_to_v2(b) for b in bodies]
        return v3.encode_events([RawEvent("BenchEvent", b, version) for b in bodies])

    one_step = [stored_at(2, [e]) for e in events] + [stored_at(2, small)]
    two_steps = [stored_at(1, [e]) for e in events] + [stored_at(1, small)]
    baseline = baseline_codec(ARGS.baseline)(BenchEvent)
    return {
        "baseline": (baseline, plain, count),
        "0x01": (v1, plain, count),
        "0x03": (v3, versioned, count),
        "upcast 1 step": (v3, one_step, count),
        "upcast 2 steps": (v3, two_steps, count),
    }


def one_round(codec: Any, batch: list[bytes]) -> float:
    decode: Callable[[bytes], Any] = codec.decode_events
    started = time.process_time()
    for _ in range(20):
        for payload in batch:
            decode(payload)
    return time.process_time() - started


def main() -> None:
    variants = payloads()
    for name, (codec, batch, _) in variants.items():  # all decode to the expected types
        assert all(not isinstance(e, RawEvent) for p in batch for e in codec.decode_events(p)), name
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ARGS.rounds):
        for name, (codec, batch, _) in variants.items():
            seconds[name].append(one_round(codec, batch))
    base = statistics.median(seconds["baseline"])
    print(f"{'variant':16} {'ns/event':>9} {'vs baseline':>12}")
    for name, (_, _, count) in variants.items():
        median = statistics.median(seconds[name])
        print(f"{name:16} {median / (20 * count) * 1e9:9.0f} {median / base:11.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="3d32fc3", help="git revision of the baseline")
    parser.add_argument("--rounds", type=int, default=15)
    ARGS = parser.parse_args()
    main()
