"""What the benchmark appends and loads: one event type, its sizes, the canned history.

Shared by the harness (every variant appends the same events and decodes the same
history) and the stub server (which answers with a history made by the real codec and
the real item mapping, so the store decodes it exactly as it would DynamoDB's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from eventstore_async import Decider
from eventstore_async._backends.aws.items import record_to_item
from eventstore_async._codec import EventCodec
from eventstore_async._records import ChangeSetRecord, HeadRecord

__all__ = [
    "APPEND_EVENT_BYTES",
    "HISTORY_LENGTH",
    "HISTORY_PAYLOAD_BYTES",
    "LOAD_AGGREGATE_ID",
    "OPENING_BALANCE",
    "WORKLOADS",
    "BenchEvent",
    "accounts_decider",
    "history_events",
    "history_items",
    "make_event",
    "withdraw_evolve",
    "withdrawal",
]

#: Workloads the harness knows: explicit-version append (the main number), ``ANY``
#: append (GetItem + TransactWriteItems with a commit marker), a 100-change-set load,
#: and a command (a withdrawal with a command id on a cached account, through a
#: repository; the baselines, which have no repository, do a bare append instead).
WORKLOADS = ("append", "append_any", "load", "command")

APPEND_EVENT_BYTES = 200
HISTORY_LENGTH = 100
HISTORY_PAYLOAD_BYTES = 1024
LOAD_AGGREGATE_ID = "bench-load"
_EPOCH_US = 1_700_000_000_000_000


class BenchEvent(msgspec.Struct, tag="BenchEvent"):
    """A plausible domain event; ``note`` pads it to the size a workload asks for."""

    order_id: str
    sku: str
    qty: int
    note: str


def make_event(index: int, size: int) -> BenchEvent:
    """An event whose encoded payload (format byte + envelope) is about ``size`` bytes."""
    base = BenchEvent(order_id=f"order-{index:08d}", sku="sku-12345", qty=index % 7 + 1, note="")
    overhead = len(EventCodec(BenchEvent).encode_events([base]))
    return msgspec.structs.replace(base, note="x" * max(0, size - overhead))


#: Every account starts with this balance, so no withdrawal is ever refused.
OPENING_BALANCE = 10**15


def withdraw_evolve(balance: int, event: BenchEvent) -> int:
    """A bench account's balance after one withdrawal of ``event.qty``."""
    return balance - event.qty


def accounts_decider() -> Decider[int]:
    """The command workload's decider: accounts cached in the process."""
    return Decider(lambda: OPENING_BALANCE, withdraw_evolve, cache_size=100_000)


def withdrawal(event: BenchEvent) -> Callable[[int], list[BenchEvent]]:
    """A command: withdraw ``event.qty`` unless the balance is short."""

    def decide(balance: int) -> list[BenchEvent]:
        if balance < event.qty:
            raise ValueError("overdraft")
        return [event]

    return decide


def history_events(length: int = HISTORY_LENGTH) -> list[BenchEvent]:
    """The events of the load workload's history, one per change set."""
    return [make_event(version, HISTORY_PAYLOAD_BYTES) for version in range(1, length + 1)]


def history_items(
    aggregate_id: str = LOAD_AGGREGATE_ID, length: int = HISTORY_LENGTH
) -> list[dict[str, Any]]:
    """Head (sort key 0) and ``length`` change-set items, as a Query returns them."""
    codec = EventCodec(BenchEvent)
    head = HeadRecord(
        aggregate_id=aggregate_id,
        aggregate_type="BenchOrder",
        version=length,
        last_commit_id=f"commit-{length}",
        event_count=length,
        created_us=_EPOCH_US,
        updated_us=_EPOCH_US + length,
    )
    records = [
        ChangeSetRecord(
            aggregate_id=aggregate_id,
            version=version,
            commit_id=f"commit-{version}",
            timestamp_us=_EPOCH_US + version,
            event_count=1,
            payload=codec.encode_events([event]),
            metadata=None,
        )
        for version, event in enumerate(history_events(length), start=1)
    ]
    return [record_to_item(head), *(record_to_item(record) for record in records)]
