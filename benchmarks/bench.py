"""Client cost of eventstore_async against stock aiobotocore and boto3 in threads.

``python -m benchmarks.bench --help``; ``make bench`` runs it with the defaults. See
benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from . import report
from .runner import MatrixOptions, SweepOptions, progress, run_matrix, run_sweep
from .targets import TARGETS, Cores, open_target, pin_cores
from .variants import VARIANTS
from .workloads import WORKLOADS

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_RATES = (100.0, 250.0, 500.0, 1000.0, 2000.0)
QUICK_RATES = (100.0, 500.0, 1000.0, 2000.0)

# Per target: (seconds per measured segment, max ops per segment, rounds, warm-up seconds,
# warm-up ops). The emulator serialises requests and slows as its tables grow, so it gets a
# small op count instead of a duration.
_DEFAULTS: dict[str, tuple[float, int | None, int, float, int | None]] = {
    "stub": (1.2, None, 5, 0.5, None),
    "emulator": (30.0, 40, 2, 10.0, 5),
    "env": (3.0, 2000, 2, 1.0, 20),
}
_QUICK: dict[str, tuple[float, int | None, int, float, int | None]] = {
    "stub": (0.5, None, 2, 0.2, None),
    "emulator": (10.0, 15, 1, 5.0, 3),
    "env": (1.0, 300, 1, 0.5, 10),
}


def _csv(kind: type, choices: Sequence[str] | None = None) -> Any:
    def parse(text: str) -> list[Any]:
        values = [kind(part.strip()) for part in text.split(",") if part.strip()]
        bad = [v for v in values if choices is not None and v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {choices}")
        return values

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description=(
            "Client CPU per operation, throughput and latency of eventstore_async against "
            "stock aiobotocore and boto3 in a thread pool, on the same requests. Prints a "
            "table with CPU ratios; writes benchmarks/results/<time>.json, latest.json and "
            "latency.png (an open-loop sweep of appends against the stub)."
        ),
    )
    parser.add_argument("--target", choices=TARGETS, default="stub", help="default: stub")
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds per configuration, to iterate"
    )
    parser.add_argument(
        "--workloads",
        type=_csv(str, WORKLOADS),
        default=list(WORKLOADS),
        help=f"comma-separated, of {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument(
        "--variants",
        type=_csv(str, list(VARIANTS)),
        default=list(VARIANTS),
        help=f"comma-separated, of {','.join(VARIANTS)} (default: all)",
    )
    parser.add_argument(
        "--concurrency", type=_csv(int), default=[1, 32], help="comma-separated (default 1,32)"
    )
    parser.add_argument(
        "--rounds", type=int, help="measured rounds per variant (stub 5, emulator 2, env 2)"
    )
    parser.add_argument(
        "--seconds", type=float, help="length of one measured round (stub 1.2, env 3)"
    )
    parser.add_argument(
        "--max-ops", type=int, help="cap on operations per round (emulator 40, env 2000)"
    )
    parser.add_argument("--warmup", type=float, help="warm-up seconds per variant and config")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="stub's delay per answer (default 0)"
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the open-loop sweep")
    parser.add_argument(
        "--sweep-rates",
        type=_csv(float),
        help="comma-separated offered appends/s (default "
        + ",".join(f"{r:g}" for r in DEFAULT_RATES)
        + ")",
    )
    parser.add_argument("--sweep-seconds", type=float, help="per rate and variant (default 2)")
    parser.add_argument("--sweep-workers", type=int, default=64, help="most in flight (64)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def matrix_options(args: argparse.Namespace, run_id: str) -> MatrixOptions:
    seconds, max_ops, rounds, warmup, warmup_ops = (_QUICK if args.quick else _DEFAULTS)[
        args.target
    ]
    return MatrixOptions(
        run_id=run_id,
        variants=args.variants,
        workloads=args.workloads,
        concurrencies=args.concurrency,
        rounds=args.rounds or rounds,
        seconds=args.seconds or seconds,
        max_ops=args.max_ops or max_ops,
        warmup_seconds=args.warmup if args.warmup is not None else warmup,
        warmup_ops=warmup_ops,
    )


def sweep_options(args: argparse.Namespace, run_id: str) -> SweepOptions:
    rates = args.sweep_rates or (QUICK_RATES if args.quick else DEFAULT_RATES)
    return SweepOptions(
        run_id=run_id,
        variants=args.variants,
        rates=rates,
        seconds=args.sweep_seconds or (1.0 if args.quick else 2.0),
        workers=args.sweep_workers,
        reference=True,
    )


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                model,
            )
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def versions() -> dict[str, str]:
    names = ("eventstore-async", "aiobotocore", "botocore", "boto3", "aiohttp", "msgspec")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


async def run(args: argparse.Namespace, cores: Cores, run_id: str) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    matrix = matrix_options(args, run_id)
    progress(
        f"target {args.target}, client on core {cores.client}, server on core {cores.server}; "
        f"{len(matrix.workloads) * len(matrix.concurrencies)} configurations x "
        f"{len(matrix.variants)} variants x {matrix.rounds} rounds"
    )
    async with open_target(args.target, cores, latency_ms=args.latency_ms) as target:
        rows = await run_matrix(target, matrix)
        endpoint = target.endpoint.url
    sweep: list[dict[str, Any]] = []
    if not args.no_sweep:
        async with open_target("stub", cores, latency_ms=args.latency_ms) as stub:
            sweep = await run_sweep(stub, sweep_options(args, run_id))
    return {
        "meta": {
            "run_id": run_id,
            "target": args.target,
            "endpoint": endpoint,
            "stub_latency_ms": args.latency_ms,
            "cores": {"client": cores.client, "server": cores.server},
            "machine": machine(),
            "versions": versions(),
            "git_commit": git_commit(),
            # Other work on a shared machine shows here; CPU per op is the least affected.
            "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
            "options": {k: v for k, v in vars(args).items() if k != "results_dir"},
        },
        "results": rows,
        "ratios": report.ratio_rows(rows),
        "commands": report.command_rows(rows),
        "sweep": sweep,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cores = pin_cores()  # first, so every thread started later stays on the client's core
    run_id = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    started = time.perf_counter()
    results = anyio.run(run, args, cores, run_id)
    results["meta"]["duration_s"] = round(time.perf_counter() - started, 1)
    print(report.format_table(results["results"]))
    print()
    print(report.format_ratios(results["ratios"]))
    if results["commands"]:
        print()
        print(report.format_commands(results["commands"]))
    load = results["meta"]["load_average_1min"]
    print(f"machine load average (1 min): {load['start']:.2f} at start, {load['end']:.2f} at end")
    path = report.write_json(results, args.results_dir, run_id)
    print(f"\nresults: {path} (and latest.json)")
    if results["sweep"]:
        title = (
            f"Open-loop appends against the stub ({args.latency_ms:g} ms latency), "
            f"{results['meta']['machine']['nproc']} cores, client and stub pinned apart"
        )
        png = report.plot_sweep(results["sweep"], args.results_dir / "latency.png", title)
        print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
