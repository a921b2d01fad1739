"""A walk through the store on the embedded emulator: ``python -m eventstore_async.demo``.

Starts the emulator, creates the schema, runs a small order domain (appends, a lost
race between two writers, an idempotent retry, a load), then the same domain as
commands through a repository (a decider, a conflict decided again, a command id
retried, a refusal), prints what happened, and stops the emulator.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import anyio
import msgspec

from . import ANY, ConcurrencyError, Decider, EventStore, StoreConfig
from .emulator import Emulator


class OrderPlaced(msgspec.Struct, tag=True, frozen=True):
    customer: str


class ItemAdded(msgspec.Struct, tag=True, frozen=True):
    sku: str
    qty: int
    price_cents: int


class OrderShipped(msgspec.Struct, tag=True, frozen=True):
    carrier: str


def total_cents(events: list[object]) -> int:
    return sum(e.qty * e.price_cents for e in events if isinstance(e, ItemAdded))


async def run(store: EventStore) -> None:
    order = f"order-{uuid.uuid4().hex[:8]}"
    first = await store.append(
        order,
        [OrderPlaced("ada"), ItemAdded("book", 2, 1250)],
        expected_version=0,
        aggregate_type="Order",
        metadata={"user": "ada"},
    )
    print(f"appended {order} v{first.version}: {first.event_count} events")

    results = await race_two_writers(store, order, expected=1)
    print(f"two writers raced at v1: {results}")

    retry_id = "cmd-ship-1"
    shipped = await store.append(
        order, [OrderShipped("ups")], expected_version=2, commit_id=retry_id
    )
    again = await store.append(order, [OrderShipped("ups")], expected_version=2, commit_id=retry_id)
    print(
        f"shipped at v{shipped.version}; retried with the same commit id -> "
        f"v{again.version}, same change set: {again == shipped}"
    )

    note = await store.append(order, [{"note": "left at the door"}], expected_version=ANY)
    print(f"appended a plain-mapping event with ANY -> v{note.version}")

    started = time.perf_counter()
    history = await store.load(order)
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(
        f"loaded {order}: version {history.version}, {len(history.events)} events "
        f"in {len(history.change_sets)} change sets ({elapsed_ms:.1f} ms)"
    )
    for change_set in history.change_sets:
        names = ", ".join(type(e).__name__ for e in change_set.events)
        print(f"  v{change_set.version} {change_set.commit_id[:12]:<12} {names}")
    print(f"order total: {total_cents(history.events) / 100:.2f}")


class Order(msgspec.Struct, frozen=True):
    """An order's state, folded from its events by the decider below."""

    placed: bool = False
    items: int = 0
    shipped: bool = False


def evolve(order: Order, event: object) -> Order:
    if isinstance(event, OrderPlaced):
        return Order(placed=True)
    if isinstance(event, ItemAdded):
        return Order(placed=True, items=order.items + event.qty, shipped=order.shipped)
    if isinstance(event, OrderShipped):
        return Order(placed=True, items=order.items, shipped=True)
    return order


ORDERS = Decider(Order, evolve, aggregate_type="Order", cache_size=100)


class OrderClosed(Exception):
    """A refusal: a shipped order takes no more items."""


def add_item(sku: str) -> Callable[[Order], list[object]]:
    def decide(order: Order) -> list[object]:
        if order.shipped:
            raise OrderClosed(f"cannot add {sku}: the order has shipped")
        events: list[object] = [] if order.placed else [OrderPlaced("ada")]
        return [*events, ItemAdded(sku, 1, 500)]

    return decide


def ship(order: Order) -> list[object]:
    return [] if order.shipped else [OrderShipped("ups")]


async def run_commands(store: EventStore, other: EventStore) -> None:
    """Commands: decide on the state, append at its version, decide again on a conflict."""
    order = f"order-{uuid.uuid4().hex[:8]}"
    mine, theirs = store.repository(ORDERS), other.repository(ORDERS)
    first = await mine.execute(order, add_item("book"))
    print(f"commands on {order}: v{first.version} {first.state}")
    await theirs.execute(order, add_item("pen"))  # "another process"
    decides = 0

    def counted(state: Order) -> list[object]:
        nonlocal decides
        decides += 1
        return add_item("mug")(state)

    raced = await mine.execute(order, counted)
    print(f"  its cache was stale: decided {decides} times -> v{raced.version} {raced.state}")
    shipped = await mine.execute(order, ship, command_id="ship-1")
    again = await theirs.execute(order, ship, command_id="ship-1")
    print(f"  shipped at v{shipped.version}; the retried command id -> v{again.version}")
    try:
        await mine.execute(order, add_item("lamp"))
    except OrderClosed as refusal:
        print(f"  refused, nothing written: {refusal}")


async def race_two_writers(store: EventStore, order: str, *, expected: int) -> list[str]:
    results: list[str] = []

    async def writer(sku: str) -> None:
        try:
            change_set = await store.append(
                order, [ItemAdded(sku, 1, 500)], expected_version=expected
            )
            results.append(f"{sku}: v{change_set.version}")
        except ConcurrencyError as conflict:
            results.append(f"{sku}: ConcurrencyError(actual={conflict.actual})")

    async with anyio.create_task_group() as group:
        group.start_soon(writer, "pen")
        group.start_soon(writer, "mug")
    return sorted(results)


async def main() -> None:
    async with Emulator() as emulator:
        print(f"emulator at {emulator.endpoint_url}")
        config = StoreConfig(
            table_name="demo-events",
            bucket_name="demo-changesets",
            endpoint_url=emulator.endpoint_url,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        )
        types: list[type[msgspec.Struct]] = [OrderPlaced, ItemAdded, OrderShipped]
        async with EventStore(config, types=types) as store:
            await store.create_schema()
            print(f"schema ready: {config.table_name} / {config.bucket_name}")
            await run(store)
            async with EventStore(config, types=types) as other:
                await run_commands(store, other)
    print("emulator stopped")


if __name__ == "__main__":
    anyio.run(main)
