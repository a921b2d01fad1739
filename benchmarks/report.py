"""Results out: the printed table with CPU ratios, the JSON files and the latency plot."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "command_rows",
    "format_commands",
    "format_ratios",
    "format_table",
    "plot_sweep",
    "ratio_rows",
    "write_json",
]

OURS = "eventstore_async"
COMMAND_REFERENCE = "eventstore_async-append"
BASELINES = ("aiobotocore", "boto3-threads")
# (header, row key, alignment, width); the last column is the CPU ratio to ours.
_COLUMNS = (
    ("workload", "workload", "<", 10),
    ("conc", "concurrency", ">", 4),
    ("variant", "variant", "<", 16),
    ("CPU us/op", "cpu_us_per_op", ">", 9),
    ("ops/s", "ops_per_s", ">", 7),
    ("p50 ms", "p50_ms", ">", 7),
    ("p95 ms", "p95_ms", ">", 7),
    ("p99 ms", "p99_ms", ">", 7),
    ("errors", "errors", ">", 6),
    ("server us/op", "server_cpu_us_per_op", ">", 12),
    ("req/op", "requests_total_per_op", ">", 6),
    ("CPU / ours", None, ">", 10),
)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def _line(values: Sequence[Any]) -> str:
    widths = [(align, width) for _, _, align, width in _COLUMNS]
    cells = [f"{_cell(v):{align}{width}}" for v, (align, width) in zip(values, widths, strict=True)]
    return "  ".join(cells).rstrip()


def _find(
    rows: Sequence[dict[str, Any]], variant: str, like: dict[str, Any]
) -> dict[str, Any] | None:
    """The row of ``variant`` in the same configuration as ``like``."""
    return next(
        (
            r
            for r in rows
            if r["variant"] == variant
            and r["workload"] == like["workload"]
            and r["concurrency"] == like["concurrency"]
        ),
        None,
    )


def _cpu_ratio(row: dict[str, Any], ours: dict[str, Any] | None) -> float | None:
    if ours is None or not row["ops"] or not ours["ops"] or not ours["cpu_us_per_op"]:
        return None
    return float(row["cpu_us_per_op"]) / float(ours["cpu_us_per_op"])


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The result table: one line per (workload, concurrency, variant)."""
    header = _line([name for name, _, _, _ in _COLUMNS])
    lines = [header, "-" * len(header)]
    for row in rows:
        ratio = _cpu_ratio(row, _find(rows, OURS, row))
        values = [row[key] for _, key, _, _ in _COLUMNS if key is not None]
        lines.append(_line([*values, "-" if ratio is None else f"{ratio:.2f}x"]))
    return "\n".join(lines)


def ratio_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Baseline CPU / ours CPU per (workload, concurrency): > 1 means ours is cheaper."""
    ratios = []
    for ours in (row for row in rows if row["variant"] == OURS):
        entry: dict[str, Any] = {
            "workload": ours["workload"],
            "concurrency": ours["concurrency"],
            "ours_cpu_us_per_op": ours["cpu_us_per_op"],
        }
        for baseline in BASELINES:
            other = _find(rows, baseline, ours)
            ratio = None if other is None else _cpu_ratio(other, ours)
            if ratio is not None:
                entry[f"{baseline}_cpu_ratio"] = round(ratio, 2)
        ratios.append(entry)
    return ratios


def format_ratios(ratios: Iterable[dict[str, Any]]) -> str:
    lines = ["CPU per operation, baseline / ours (higher is better for ours):"]
    for entry in ratios:
        parts = [
            f"{baseline} {entry[f'{baseline}_cpu_ratio']:.2f}x"
            for baseline in BASELINES
            if f"{baseline}_cpu_ratio" in entry
        ]
        lines.append(
            f"  {entry['workload']:<10} c={entry['concurrency']:<3} "
            f"ours {entry['ours_cpu_us_per_op']:,.0f} us  " + "  ".join(parts)
        )
    return "\n".join(lines)


def command_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours: a command on a cached account against our bare append measured in the same
    rounds (the ``eventstore_async-append`` reference), per concurrency."""
    entries = []
    for command in (r for r in rows if r["variant"] == OURS and r["workload"] == "command"):
        append = _find(rows, COMMAND_REFERENCE, command)
        ratio = None
        if append is not None and append["cpu_us_per_op"] and command["ops"]:
            ratio = round(float(command["cpu_us_per_op"]) / float(append["cpu_us_per_op"]), 2)
        entries.append(
            {
                "concurrency": command["concurrency"],
                "command_cpu_us_per_op": command["cpu_us_per_op"],
                "append_cpu_us_per_op": None if append is None else append["cpu_us_per_op"],
                "cpu_ratio_to_append": ratio,
                "requests_per_command": command.get("requests_per_op"),
            }
        )
    return entries


def format_commands(entries: Iterable[dict[str, Any]]) -> str:
    lines = ["Commands (ours): a withdrawal on a cached account / a bare append, CPU per op:"]
    for entry in entries:
        ratio = entry["cpu_ratio_to_append"]
        requests = entry["requests_per_command"]
        lines.append(
            f"  c={entry['concurrency']:<3} command {entry['command_cpu_us_per_op']:,.0f} us, "
            f"append {_cell(entry['append_cpu_us_per_op'])} us: "
            + ("-" if ratio is None else f"{ratio:.2f}x")
            + ("" if requests is None else f"; requests per command at the stub: {requests}")
        )
    return "\n".join(lines)


def write_json(results: dict[str, Any], directory: Path, stamp: str) -> Path:
    """Write ``<stamp>.json`` and ``latest.json``; return the first."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=False) + "\n"
    path = directory / f"{stamp}.json"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path


_STYLE = {
    "aiobotocore": ("tab:orange", "o"),
    "boto3-threads": ("tab:red", "s"),
    OURS: ("tab:blue", "^"),
    "no-op": ("0.5", "."),
}


def plot_sweep(points: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Latency percentiles (one panel each) against offered load, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quantiles = (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))
    figure, axes = plt.subplots(1, 3, figsize=(15, 5), sharey=True, constrained_layout=True)
    variants = list(dict.fromkeys(p["variant"] for p in points))
    rates = sorted({p["offered_per_s"] for p in points})
    for axis, (key, label) in zip(axes, quantiles, strict=True):
        for variant in variants:
            mine = sorted((p for p in points if p["variant"] == variant), key=_offered)
            color, marker = _STYLE.get(variant, ("black", "x"))
            axis.plot(
                [p["offered_per_s"] for p in mine],
                [p[key] for p in mine],
                color=color,
                marker=marker,
                linestyle="--" if variant == "no-op" else "-",
                label=variant,
            )
            behind = [p for p in mine if saturated(p)]
            axis.scatter(
                [p["offered_per_s"] for p in behind],
                [p[key] for p in behind],
                s=90,
                facecolors="white",
                edgecolors=color,
                marker=marker,
                zorder=3,
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(rates, [f"{r:g}" for r in rates])
        axis.minorticks_off()
        axis.set_title(f"{label} latency")
        axis.set_xlabel("offered load (appends/s, open loop)")
        axis.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("latency from scheduled send (ms, log)")
    axes[0].legend(loc="upper left")
    figure.suptitle(title)
    figure.text(
        0.5,
        -0.01,
        "hollow marker: the client fell behind (achieved < 95% of offered, or a backlog "
        "was cancelled; its latency so far is counted as a lower bound)",
        ha="center",
        va="top",
        fontsize=9,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def saturated(point: dict[str, Any]) -> bool:
    """The client could not keep up with the offered rate."""
    return bool(point["unfinished"] or point["achieved_per_s"] < 0.95 * point["offered_per_s"])


def _offered(point: dict[str, Any]) -> float:
    return float(point["offered_per_s"])
