"""What every subcommand shares: the configuration, the output, the exit codes, and
running an async body with the library's errors turned into exit codes."""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._backends.aws.dynamodb import DynamoDBBackend
from .._backends.protocol import Backend
from .._config import StoreConfig
from .._errors import EventStoreError, InvalidInputError, SubscriptionBusyError
from .._store import EventStore

__all__ = [
    "EXIT_CODES",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_REFUSED",
    "EXIT_STORE",
    "EXIT_USAGE",
    "Output",
    "Settings",
    "common_options",
    "parse_duration",
    "run",
]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_REFUSED = 4
EXIT_INTERRUPTED = 130
#: The exit codes, as the README documents them.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done; for verify: no problem found",
    EXIT_PROBLEMS: "verify found problems (one line each)",
    EXIT_USAGE: "bad arguments or configuration (a missing EVENTSTORE_TABLE, a bad value)",
    EXIT_STORE: "the store failed: table or bucket missing, endpoint unreachable, access "
    "denied, aggregate not found...",
    EXIT_REFUSED: "refused: drop or replay without --yes, replay while a consumer holds "
    "the subscription's lease (without --force)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class Output:
    """Human output (rich) by default; with ``--json`` one JSON object per line."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False, soft_wrap=True)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def record(self, **fields: Any) -> None:
        """One JSON line (``--json`` only)."""
        sys.stdout.write(msgspec.json.encode(msgspec.to_builtins(fields)).decode() + "\n")
        sys.stdout.flush()

    def say(self, text: str) -> None:
        """One line of human output (without ``--json``); printed as is, no markup."""
        if not self.as_json:
            self.console.print(text, markup=False)

    def error(self, text: str) -> None:
        self.errors.print(f"error: {text}", markup=False)

    def progress(self) -> AbstractContextManager[Progress | None]:
        """A progress display on stderr when it is a terminal (and not ``--json``)."""
        if self.as_json or not self.errors.is_terminal:
            return nullcontext(None)
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.errors,
            transient=True,
        )


@dataclass(slots=True)
class Settings:
    """The group's options: config overrides and the output mode."""

    overrides: dict[str, Any] = field(default_factory=dict)
    out: Output = field(default_factory=lambda: Output(False))

    def config(self) -> StoreConfig:
        """``StoreConfig.from_env()`` with the command line's overrides.

        Raises:
            InvalidInputError: EVENTSTORE_TABLE is not set (and no --table), or a bad value.
        """
        return StoreConfig.from_env(**self.overrides)

    def store(self, *, verify_on_open: bool = True) -> EventStore:
        """A store on the configured table; opening it checks the schema (``ping``)."""
        return EventStore(self.config(), verify_on_open=verify_on_open)

    def store_and_backend(self) -> tuple[EventStore, Backend]:
        """A store as :meth:`store` makes it and the backend it runs on, for the
        operators' views (feed, subscriptions) that read storage records directly, as
        the library's own modules do. The command makes the backend and hands it to the
        store (``EventStore(config, backend=...)``), so it keeps its own handle on it
        instead of reaching into the store for one."""
        config = self.config()
        backend = DynamoDBBackend(config)
        return EventStore(config, verify_on_open=True, backend=backend), backend


_OPTIONS = (
    ("--table", "table_name", "DynamoDB table [env: EVENTSTORE_TABLE]"),
    ("--bucket", "bucket_name", "S3 bucket of offloaded change sets [env: EVENTSTORE_BUCKET]"),
    ("--endpoint-url", "endpoint_url", "emulator or LocalStack URL [env: EVENTSTORE_ENDPOINT_URL]"),
    ("--region", "region_name", "AWS region [env: EVENTSTORE_REGION, AWS_REGION]"),
)


def _override(field_name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.ensure_object(Settings).overrides[field_name] = value

    return store


def _json_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Settings).out = Output(True)


_F = TypeVar("_F", bound=Callable[..., Any])


def common_options(command: _F) -> _F:
    """``--table``, ``--bucket``, ``--endpoint-url``, ``--region`` and ``--json``, taken
    before the subcommand's name or after it."""
    for flag, field_name, text in reversed(_OPTIONS):
        command = click.option(flag, callback=_override(field_name), expose_value=False, help=text)(
            command
        )
    return click.option(
        "--json",
        is_flag=True,
        callback=_json_flag,
        expose_value=False,
        help="One JSON object per line, for scripts.",
    )(command)


def run(settings: Settings, body: Callable[[], Awaitable[int]]) -> None:
    """Run ``body`` on an event loop and exit with its code; a library error is printed
    on stderr as one line and exits with the code documented for it."""
    out = settings.out
    try:
        code = anyio.run(body)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except InvalidInputError as exc:
        out.error(str(exc))
        code = EXIT_USAGE
    except SubscriptionBusyError as exc:
        out.error(str(exc))
        code = EXIT_REFUSED
    except EventStoreError as exc:
        out.error(f"{type(exc).__name__}: {exc}")
        code = EXIT_STORE
    raise click.exceptions.Exit(code)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h30m``, ``2d`` or plain seconds.

    Raises:
        click.BadParameter: anything else.
    """
    text = text.strip()
    try:
        return timedelta(seconds=float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise click.BadParameter(f"{text!r}: use a duration such as 90s, 15m, 1h30m or 2d")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
