"""``eventstore``: the group (configuration options) and the subcommands that change
things: ``init``, ``drop``, ``subscriptions``, ``replay``, ``emulator``."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from .._ops.feed import move_checkpoint, subscription_statuses
from ._commands import show, sweep, tail, verify
from ._context import (
    EXIT_CODES,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Output,
    Settings,
    common_options,
    run,
)

__all__ = ["EXIT_CODES", "cli", "main"]

_EPILOG = "Exit codes:\n\n" + "\n\n".join(f"{code}: {text}" for code, text in EXIT_CODES.items())


@click.group(epilog=_EPILOG)
@common_options
@click.version_option(package_name="eventstore-async")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Look inside, check and operate an eventstore_async table.

    The configuration is StoreConfig.from_env()'s (EVENTSTORE_* variables; credentials
    from botocore's chain: AWS_ACCESS_KEY_ID, AWS_PROFILE, an instance role...); the
    options override it, before or after the subcommand's name.
    """
    ctx.ensure_object(Settings)


def _refuse(out: Output, message: str) -> None:
    out.error(message)
    raise click.exceptions.Exit(EXIT_REFUSED)


@cli.command()
@common_options
@click.pass_obj
def init(settings: Settings) -> None:
    """Create the table (and bucket) if missing; idempotent."""

    async def body() -> int:
        config = settings.config()
        async with settings.store(verify_on_open=False) as store:
            await store.create_schema()
            await store.ping()
        out = settings.out
        if out.as_json:
            out.record(table=config.table_name, bucket=config.bucket_name, ready=True)
        bucket = f" and bucket {config.bucket_name}" if config.bucket_name else ""
        out.say(f"table {config.table_name}{bucket} ready")
        return EXIT_OK

    run(settings, body)


@cli.command()
@common_options
@click.option("--yes", is_flag=True, help="Really delete the table and bucket and their data.")
@click.pass_obj
def drop(settings: Settings, yes: bool) -> None:
    """Delete the table and the bucket, with all their data (needs --yes)."""
    config = settings.config()
    bucket = f" and bucket {config.bucket_name}" if config.bucket_name else ""
    if not yes:
        _refuse(
            settings.out,
            f"drop deletes table {config.table_name}{bucket} with all their data: add --yes",
        )

    async def body() -> int:
        async with settings.store(verify_on_open=False) as store:
            await store.drop_schema()
        out = settings.out
        if out.as_json:
            out.record(dropped=config.table_name, bucket=config.bucket_name)
        out.say(f"dropped table {config.table_name}{bucket}")
        return EXIT_OK

    run(settings, body)


@cli.command()
@common_options
@click.pass_obj
def subscriptions(settings: Settings) -> None:
    """Each subscription's positions, lag (entries and seconds) and lease holder."""

    async def body() -> int:
        store, backend = settings.store_and_backend()
        async with store:
            statuses = await subscription_statuses(backend)
        out = settings.out
        if out.as_json:
            for status in statuses:
                out.record(subscription=status.name, held=status.held, **_fields(status))
            return EXIT_OK
        table = Table("name", "positions", "feed ends", "lag", "lag (s)", "lease holder")
        for s in statuses:
            holder = f"{s.owner[:12]} until {s.lease_until:%H:%M:%S}" if s.lease_until else "free"
            table.add_row(
                s.name,
                ",".join(map(str, s.positions)),
                ",".join(map(str, s.ends)),
                str(s.lag_entries),
                f"{s.lag_seconds:.1f}",
                holder,
            )
        out.console.print(table)
        return EXIT_OK

    run(settings, body)


def _fields(status: Any) -> dict[str, Any]:
    names = ("positions", "ends", "lag_entries", "lag_seconds", "owner", "lease_until")
    return {name: getattr(status, name) for name in names}


def _target(text: str) -> str | list[int]:
    if text in ("start", "end"):
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: use start, end, or one position per shard (0,12,7)", param_hint="--to"
        ) from None


@cli.command()
@common_options
@click.argument("name")
@click.option("--to", "to", required=True, help="start, end, or one position per shard: 0,12,7")
@click.option("--yes", is_flag=True, help="Really move the checkpoint.")
@click.option("--force", is_flag=True, help="Even while a consumer holds the lease.")
@click.pass_obj
def replay(settings: Settings, name: str, to: str, yes: bool, force: bool) -> None:
    """Move subscription NAME's checkpoint, so its read model can be rebuilt.

    The next consumer of NAME reads from there (with --to start: everything again).
    Refused while a consumer holds the lease, unless --force.
    """
    target = _target(to)
    if not yes:
        _refuse(
            settings.out,
            f"replay moves subscription {name!r} to {to}: its consumer will "
            "receive those change sets again; add --yes",
        )

    async def body() -> int:
        store, backend = settings.store_and_backend()
        async with store:
            positions = await move_checkpoint(backend, name, target, force=force)
        out = settings.out
        if out.as_json:
            out.record(subscription=name, positions=positions)
        out.say(
            f"subscription {name} moved to positions {','.join(map(str, positions))}; "
            "its lease is free"
        )
        return EXIT_OK

    run(settings, body)


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="0 picks a free one.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep tables, items and objects in DIR across restarts.",
)
def emulator(port: int, data_dir: str | None) -> None:
    """Run the embedded emulator (DynamoDB + S3) until Ctrl-C; prints its URL."""
    try:
        from ..emulator._server import main as serve
    except ImportError:  # pragma: no cover - the emulator extra is missing
        click.echo(
            "error: the emulator needs the emulator extra: "
            "pip install 'eventstore-async[emulator]'",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_USAGE) from None
    argv = ["--port", str(port)]
    if data_dir is not None:
        argv += ["--data-dir", data_dir]
    raise click.exceptions.Exit(serve(argv))


cli.add_command(show)
cli.add_command(tail)
cli.add_command(verify)
cli.add_command(sweep)


def main() -> int:
    """The console script's entry point."""
    return int(cli.main(prog_name="eventstore", standalone_mode=True) or 0)
