"""The chaos run: many writer processes append through the fault proxy, then a check.

``python -m tests.chaos.run [--processes 4 --tasks 6 --attempts 420 --rate 0.08 ...]``
(``make chaos``) starts the emulator, creates one table and bucket per shard directly
against it, puts a :class:`~tests.chaos.proxy.FaultProxy` in front, runs the writer
processes (:mod:`tests.chaos.writer`) through the proxy, lets delayed requests drain,
then reads everything back directly with :func:`tests.chaos.checker.check` and prints
the figures. The exit status is 1 when any violation was found.

Shards: the aggregates are spread over many tables (from when the emulator's
transactions slowed down with the table's size; they no longer do); every writer
process still writes to every shard, so the aggregates are shared between processes.

Sizing (measured on 2 vCPUs): the emulator serves ~250 GetItem or ~150 small
transactions a second when alone, but the writers, the proxy and the emulator share the
two cores, so a run averages ~35 appends/s (each append is a head read and a
transaction, plus retries): the default 10,080 appends take about 5 minutes.

Replay: ``--seed`` fixes every writer's choices and the proxy's fault for each request
number; with concurrent writers the arrival order (so which request gets which fault)
still varies, so a violation is replayed by the scripted regression test it leads to
(see tests/test_chaos.py). ``--fault-log PATH`` logs every injected fault.

The emulator keeps DynamoDB's ClientRequestToken semantics; ``--emulate-request-tokens``
has the proxy emulate them in front instead. ``--offload-ratio 0.1``: more offloaded
change sets, then a sweep.

While the writers run, a sweeper (directly against the emulator) sweeps every shard
again and again with the shortest legal ``older_than`` (the commit window, kept short by
``--append-deadline-seconds`` and ``--max-upload-seconds``), and ``--snapshot-ratio`` of
the writers' steps save snapshots: an in-flight append or save whose object a sweep
deleted shows up as a pointer to a missing object.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from eventstore_async import EventStore, StorageError, StoreConfig
from eventstore_async.emulator import Emulator

from .checker import CheckReport, Expectations, Shard, check
from .proxy import FaultProxy, rates_for

ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger("tests.chaos.run")


@dataclass(slots=True)
class ChaosOptions:
    processes: int = 4
    tasks: int = 6
    attempts: int = 420  # per task: 4 x 6 x 420 = 10,080 appends
    shards: int = 32
    aggregates: int = 4  # per shard
    rate: float = 0.08
    seed: int = 1
    delay: float = 1.5  # beyond read_timeout
    read_timeout: float = 1.0
    connect_timeout: float = 1.0
    max_attempts: int = 2  # botocore attempts per request: most faults reach the library
    any_ratio: float = 0.15
    unknown_retries: int = 6
    abandon_ratio: float = 0.2
    #: off: the emulator keeps DynamoDB's ClientRequestToken idempotency itself; on: the
    #: proxy emulates it in front (for an upstream without it)
    emulate_request_tokens: bool = False
    #: share of appends big enough to be offloaded to S3 (0: none); with offloads the
    #: run waits out the commit window, sweeps orphans, and then checks none is left
    offload_ratio: float = 0.05  # change sets big enough to go to S3
    offload_threshold_bytes: int = 2048
    #: with the append deadline, these make the commit window (the sweeper's older_than)
    max_upload_seconds: float = 10.0  # on a loaded machine an upload can take 5 s
    append_deadline_seconds: float = 20.0
    snapshot_ratio: float = 0.03  # share of the writers' steps that save a snapshot
    sweep_during: bool = True  # a sweeper runs while the writers append
    sweep_pause: float = 1.0  # seconds between the sweeper's rounds over every shard
    fault_log: str | None = None
    writer_timeout: float = 1800.0


@dataclass(slots=True)
class ChaosResult:
    options: ChaosOptions
    operations: list[dict[str, Any]]
    writer_violations: list[str]
    writer_stderr: list[str]
    head_failures: Counter[str]
    unknown_retries: int
    snapshots: Counter[str]
    proxy: dict[str, Any]
    check: CheckReport
    elapsed: float
    write_elapsed: float
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def violations(self) -> list[str]:
        return self.writer_violations + self.check.violations


def shard_names(options: ChaosOptions, run_id: str) -> list[Shard]:
    return [
        Shard(table=f"chaos-{run_id}-{n}", bucket=f"chaos-{run_id}-{n}")
        for n in range(options.shards)
    ]


def direct_config(options: ChaosOptions, endpoint_url: str, shard: Shard) -> StoreConfig:
    """A shard's config straight to the emulator, with the writers' timing settings."""
    return StoreConfig(
        table_name=shard.table,
        bucket_name=shard.bucket,
        endpoint_url=endpoint_url,
        aws_access_key_id="chaos",
        aws_secret_access_key="chaos-secret",
        read_timeout=options.read_timeout,
        connect_timeout=options.connect_timeout,
        max_attempts=options.max_attempts,
        offload_threshold_bytes=options.offload_threshold_bytes,
        max_upload_seconds=options.max_upload_seconds,
        append_deadline_seconds=options.append_deadline_seconds,
    )


async def create_schema(options: ChaosOptions, endpoint_url: str, shards: list[Shard]) -> None:
    """Tables and buckets, created directly against the emulator (not through the proxy)."""
    for shard in shards:
        async with EventStore(direct_config(options, endpoint_url, shard)) as store:
            await store.create_schema()


async def sweep(options: ChaosOptions, endpoint_url: str, shards: list[Shard]) -> Counter[str]:
    """Wait out the commit window, then sweep every shard's orphans (directly)."""
    configs = [direct_config(options, endpoint_url, shard) for shard in shards]
    window = timedelta(seconds=configs[0].commit_window_seconds)
    await anyio.sleep(window.total_seconds() + 2.0)  # S3 stamps round down to the second
    figures: Counter[str] = Counter()
    for config in configs:
        async with EventStore(config) as store:
            report = await store.sweep_orphans(older_than=window)
        figures["sweep_objects_scanned"] += report.objects_scanned
        figures["sweep_objects_deleted"] += len(report.objects_deleted)
        figures["sweep_uploads_aborted"] += report.uploads_aborted
    return figures


async def sweep_during(
    options: ChaosOptions, endpoint_url: str, shards: list[Shard], stop: anyio.Event
) -> Counter[str]:
    """Sweep every shard (directly) with the shortest legal ``older_than`` until ``stop``."""
    configs = [direct_config(options, endpoint_url, shard) for shard in shards]
    window = timedelta(seconds=configs[0].commit_window_seconds)
    figures: Counter[str] = Counter()
    async with AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(EventStore(c)) for c in configs]
        while not stop.is_set():
            for store in stores:
                try:
                    report = await store.sweep_orphans(older_than=window)
                except StorageError as exc:
                    figures[f"sweeper_error:{exc.code or exc.reason}"] += 1
                    continue
                figures["sweeper_objects_deleted"] += len(report.objects_deleted)
                figures["sweeper_uploads_aborted"] += report.uploads_aborted
            figures["sweeper_rounds"] += 1
            with anyio.move_on_after(options.sweep_pause):
                await stop.wait()
    return figures


async def write_and_sweep(
    options: ChaosOptions, endpoint_url: str, proxy_url: str, shards: list[Shard], workdir: Path
) -> tuple[list[dict[str, Any]], list[str], Counter[str]]:
    """The writers through the proxy, and (with ``sweep_during``) the sweeper beside them."""
    stop = anyio.Event()
    figures: Counter[str] = Counter()

    async def sweeper() -> None:
        figures.update(await sweep_during(options, endpoint_url, shards, stop))

    async with anyio.create_task_group() as group:
        if options.sweep_during and options.offload_ratio > 0:
            group.start_soon(sweeper)
        try:
            outputs, stderr = await run_writers(options, proxy_url, shards, workdir)
        finally:
            stop.set()
    return outputs, stderr, figures


async def run_writers(
    options: ChaosOptions, proxy_url: str, shards: list[Shard], workdir: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    results: list[dict[str, Any]] = [{} for _ in range(options.processes)]
    stderr: list[str] = ["" for _ in range(options.processes)]

    async def one(process: int) -> None:
        spec = {
            "endpoint_url": proxy_url,
            "shards": [{"table": s.table, "bucket": s.bucket} for s in shards],
            "aggregates": [f"agg-{n}" for n in range(options.aggregates)],
            "process": process,
            "tasks": options.tasks,
            "attempts": options.attempts,
            "seed": options.seed,
            "any_ratio": options.any_ratio,
            "unknown_retries": options.unknown_retries,
            "abandon_ratio": options.abandon_ratio,
            "read_timeout": options.read_timeout,
            "connect_timeout": options.connect_timeout,
            "max_attempts": options.max_attempts,
            "offload_ratio": options.offload_ratio,
            "offload_threshold_bytes": options.offload_threshold_bytes,
            "max_upload_seconds": options.max_upload_seconds,
            "append_deadline_seconds": options.append_deadline_seconds,
            "snapshot_ratio": options.snapshot_ratio,
        }
        spec_path, out_path = workdir / f"spec-{process}.json", workdir / f"out-{process}.json"
        spec_path.write_text(json.dumps(spec))
        command = [sys.executable, "-m", "tests.chaos.writer", str(spec_path), str(out_path)]
        done = await anyio.run_process(command, cwd=ROOT, check=False)
        stderr[process] = done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise RuntimeError(f"writer {process} failed:\n{stderr[process][-3000:]}")
        results[process] = json.loads(out_path.read_text())

    with anyio.fail_after(options.writer_timeout):
        async with anyio.create_task_group() as group:
            for process in range(options.processes):
                group.start_soon(one, process)
    return results, stderr


async def run_chaos(options: ChaosOptions) -> ChaosResult:
    """One whole run: emulator, schema, proxy, writers, drain, check."""
    started = time.monotonic()
    run_id = f"{options.seed}-{int(time.time() * 1000) % 10**8}"
    shards = shard_names(options, run_id)
    log_handler = _fault_log_handler(options.fault_log)
    try:
        async with Emulator() as emulator:
            await create_schema(options, emulator.endpoint_url, shards)
            proxy = FaultProxy(
                emulator.endpoint_url,
                rates=rates_for(options.rate),
                seed=options.seed,
                delay=options.delay,
                emulate_request_tokens=options.emulate_request_tokens,
            )
            with tempfile.TemporaryDirectory(prefix="chaos-") as workdir:
                async with proxy:
                    write_started = time.monotonic()
                    outputs, stderr, sweeper_figures = await write_and_sweep(
                        options, emulator.endpoint_url, proxy.url, shards, Path(workdir)
                    )
                    write_elapsed = time.monotonic() - write_started
                # The proxy is closed: every delayed request has landed or been dropped.
                swept = options.offload_ratio > 0
                sweep_figures = (
                    await sweep(options, emulator.endpoint_url, shards) if swept else Counter()
                )
                expected = Expectations.from_operations(
                    op for out in outputs for op in out["operations"]
                )
                report = await anyio.to_thread.run_sync(
                    lambda: check(emulator.endpoint_url, shards, expected, after_sweep=swept)
                )
                report.figures.update(sweep_figures)
                report.figures.update(sweeper_figures)
    finally:
        if log_handler is not None:
            logging.getLogger("tests.chaos.proxy").removeHandler(log_handler)
            log_handler.close()
    return ChaosResult(
        options=options,
        operations=[op for out in outputs for op in out["operations"]],
        writer_violations=[v for out in outputs for v in out["violations"]],
        writer_stderr=stderr,
        head_failures=sum((Counter(out["head_failures"]) for out in outputs), Counter()),
        unknown_retries=sum(out["unknown_retries"] for out in outputs),
        snapshots=sum((Counter(out["snapshots"]) for out in outputs), Counter()),
        proxy=proxy.summary(),
        check=report,
        elapsed=time.monotonic() - started,
        write_elapsed=write_elapsed,
    )


def _fault_log_handler(path: str | None) -> logging.Handler | None:
    if path is None:
        return None
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    proxy_logger = logging.getLogger("tests.chaos.proxy")
    proxy_logger.addHandler(handler)
    proxy_logger.setLevel(logging.INFO)
    return handler


# -- figures ------------------------------------------------------------------------------


def summarize(result: ChaosResult) -> dict[str, Any]:
    """The run's figures, JSON-ready."""
    ops = result.operations
    outcomes = Counter(op["outcome"] for op in ops)
    resolutions = Counter(op["resolution"] for op in ops if op["outcome"] == "unknown")
    unresolved_errors = Counter(
        op["final_error"] for op in ops if op["resolution"] in ("unresolved", "refused")
    )
    errors = Counter(op["error"] for op in ops if op["outcome"] == "error")
    unknown_codes = Counter(op["error"] for op in ops if op["outcome"] == "unknown")
    requests = int(result.proxy["requests"])
    faulted = int(result.proxy["faulted"])
    figures = result.check.figures
    return {
        "package": package_revision(),
        "options": asdict(result.options),
        "appends_attempted": len(ops),
        "appends_any": sum(1 for op in ops if op["expected"] == "ANY"),
        "appends_offloaded": sum(1 for op in ops if op.get("offloaded")),
        "acknowledged": outcomes["acked"] + resolutions["landed"],
        "acknowledged_first_call": outcomes["acked"],
        "conflicts": outcomes["conflict"],
        "unknown": outcomes["unknown"],
        "unknown_by_cause": dict(unknown_codes),
        "unknown_resolutions": dict(resolutions),
        "unknown_unresolved_errors": dict(unresolved_errors),
        "unknown_retries": result.unknown_retries,
        "unsettled_stored": figures["unsettled_stored"],
        "unsettled_absent": figures["unsettled_absent"],
        "other_errors": dict(errors),
        "snapshot_steps": dict(result.snapshots),
        "head_read_failures": dict(result.head_failures),
        "proxy_requests": requests,
        "proxy_faulted": faulted,
        "proxy_fault_percent": round(100.0 * faulted / requests, 2) if requests else 0.0,
        "proxy_faults": result.proxy["faults"],
        "proxy_fault_details": result.proxy["details"],
        "proxy_operations": result.proxy["operations"],
        "token_replays": result.proxy["token_replays"],
        "token_mismatches": result.proxy["token_mismatches"],
        "stored": {k: figures[k] for k in sorted(figures)},
        "violations": result.violations,
        "elapsed_seconds": round(result.elapsed, 1),
        "write_seconds": round(result.write_elapsed, 1),
    }


def package_revision() -> str:
    """The git commit of the package under test, and whether it has local changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "eventstore_async"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"eventstore_async at {commit or 'unknown'}" + (" + local changes" if changed else "")


def render(summary: dict[str, Any]) -> str:
    o = summary["options"]
    lines = [
        f"package: {summary['package']}",
        f"chaos run: seed {o['seed']}, {o['processes']} processes x {o['tasks']} tasks x "
        f"{o['attempts']} appends, {o['shards']} shards x {o['aggregates']} aggregates, "
        f"fault rate {o['rate']}, read timeout {o['read_timeout']} s, delay {o['delay']} s"
        + (", ClientRequestToken emulated by the proxy" if o["emulate_request_tokens"] else ""),
        f"appends attempted     {summary['appends_attempted']:>7} "
        f"({summary['appends_any']} with ANY, {summary['appends_offloaded']} offloaded to S3)",
        f"  acknowledged        {summary['acknowledged']:>7} "
        f"({summary['acknowledged_first_call']} on the first call)",
        f"  conflicts           {summary['conflicts']:>7}",
        f"  outcome unknown     {summary['unknown']:>7} {_fmt(summary['unknown_by_cause'])}",
        f"    resolved by retry with the same commit id: {_fmt(summary['unknown_resolutions'])}"
        f" ({summary['unknown_retries']} retries)",
        f"    unresolved/refused, final error: {_fmt(summary['unknown_unresolved_errors'])}",
        f"    never settled (abandoned/unresolved/refused): stored {summary['unsettled_stored']}, "
        f"not stored {summary['unsettled_absent']}",
        f"  other errors        {sum(summary['other_errors'].values()):>7} "
        f"{_fmt(summary['other_errors'])}",
        f"snapshot steps        {sum(summary['snapshot_steps'].values()):>7} "
        f"{_fmt(summary['snapshot_steps'])}",
        f"head reads failed     {sum(summary['head_read_failures'].values()):>7} "
        f"{_fmt(summary['head_read_failures'])}",
        f"requests via proxy    {summary['proxy_requests']:>7} {_fmt(summary['proxy_operations'])}",
        f"faults injected       {summary['proxy_faulted']:>7} "
        f"({summary['proxy_fault_percent']}% of requests)",
    ]
    lines += [f"  {kind:<20}{count:>7}" for kind, count in summary["proxy_faults"].items()]
    throttles = {
        k.split(":", 1)[1]: v
        for k, v in summary["proxy_fault_details"].items()
        if k.startswith("throttle:")
    }
    lines.append(f"  throttling codes: {_fmt(throttles)}")
    if o["emulate_request_tokens"]:
        lines.append(
            f"ClientRequestToken: {summary['token_replays']} replays answered, "
            f"{summary['token_mismatches']} IdempotentParameterMismatch"
        )
    else:
        lines.append("ClientRequestToken idempotency: the emulator's (see --help)")
    lines.append(f"stored (read directly): {_fmt(summary['stored'])}")
    lines.append(f"violations found      {len(summary['violations']):>7}")
    lines += [f"  - {v}" for v in summary["violations"][:50]]
    lines.append(
        f"elapsed               {summary['elapsed_seconds']:>7} s "
        f"(writers {summary['write_seconds']} s)"
    )
    return "\n".join(lines)


def _fmt(counts: dict[str, Any]) -> str:
    if not counts:
        return "-"
    return "(" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str)) + ")"


# -- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> tuple[ChaosOptions, str | None]:
    """The run's options and the path to write the JSON figures to (if any)."""
    defaults = ChaosOptions()
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__)
    for name in (
        "processes",
        "tasks",
        "attempts",
        "shards",
        "aggregates",
        "seed",
        "max_attempts",
        "unknown_retries",
        "offload_threshold_bytes",
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    for name in (
        "rate",
        "offload_ratio",
        "max_upload_seconds",
        "append_deadline_seconds",
        "snapshot_ratio",
        "sweep_pause",
        "delay",
        "read_timeout",
        "connect_timeout",
        "any_ratio",
        "abandon_ratio",
        "writer_timeout",
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name)
        )
    parser.add_argument(
        "--emulate-request-tokens",
        action=argparse.BooleanOptionalAction,
        default=defaults.emulate_request_tokens,
        help="emulate DynamoDB ClientRequestToken idempotency in the proxy instead of relying "
        "on the emulator's (off)",
    )
    parser.add_argument(
        "--sweep-during",
        action=argparse.BooleanOptionalAction,
        default=defaults.sweep_during,
        help="run a sweeper with the shortest legal older_than while the writers append (on)",
    )
    parser.add_argument("--fault-log", default=None, help="log every injected fault here")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    values = vars(parser.parse_args(argv))
    json_path = values.pop("json")
    return ChaosOptions(**values), json_path


def main(argv: Sequence[str] | None = None) -> int:
    options, json_path = parse_args(argv)
    result = anyio.run(run_chaos, options)
    summary = summarize(result)
    print(render(summary), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2))
    for process, text in enumerate(result.writer_stderr):
        if text.strip():
            print(f"--- writer {process} stderr ---\n{text[-2000:]}", file=sys.stderr)
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
