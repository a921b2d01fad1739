"""Every DynamoDB request asks for ``ReturnConsumedCapacity=TOTAL`` and ``store.metrics``
adds the units up per operation.

The emulator (moto) reports capacity for reads only: its ``TransactWriteItems`` answers
carry an empty ``ConsumedCapacity``. So the write accounting is tested on a stub server
that answers as DynamoDB does, on the fast path and on the stock client.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from eventstore_async import AggregateNotFoundError, EventStore, StoreConfig
from eventstore_async._capacity import CapacityMeter, operation_kind, units_of

from .conftest import StoreFactory
from .test_wire import Recorder, answer, no_backoff, recorder

__all__ = ["no_backoff", "recorder"]  # fixtures used here

pytestmark = pytest.mark.anyio

TABLE = "capacity"


def _reply(**body: Any) -> bytes:
    return answer(200, json.dumps(body))


#: What the stub answers, by operation: DynamoDB's shapes (a list for transactions).
ANSWERS = {
    "TransactWriteItems": _reply(ConsumedCapacity=[{"TableName": TABLE, "CapacityUnits": 4.0}]),
    "GetItem": _reply(ConsumedCapacity={"TableName": TABLE, "CapacityUnits": 1.0}),
    "Query": _reply(Items=[], ConsumedCapacity={"TableName": TABLE, "CapacityUnits": 2.5}),
}


class _ByOperation(list[bytes]):
    """The recorder's replies: the answer for the operation of the request just read."""

    def __init__(self, recording: Recorder) -> None:
        super().__init__()
        self.recording = recording

    def __bool__(self) -> bool:
        return True

    def pop(self, index: Any = -1) -> bytes:
        target = self.recording.requests[-1].headers["x-amz-target"]
        return ANSWERS[target.rsplit(".", 1)[1]]


@pytest.mark.parametrize("fast_path", [True, False])
async def test_units_are_counted_per_operation(recorder: Recorder, fast_path: bool) -> None:
    recorder.replies = _ByOperation(recorder)
    config = StoreConfig(
        table_name=TABLE,
        endpoint_url=recorder.url,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        max_attempts=1,
        fast_path=fast_path,
    )
    async with EventStore(config) as store:
        await store.append("order-1", [{"n": 1}], expected_version=0)
        assert await store.head("order-1") is None
        with pytest.raises(AggregateNotFoundError):
            await store.load("order-1")
        await store.append("order-2", [{"n": 1}], expected_version=0)
        metrics = store.metrics
    targets = [r.headers["x-amz-target"].rsplit(".", 1)[1] for r in recorder.requests]
    # the first append may also read and write the table's format item (see Schema)
    assert metrics["write_capacity_units"] == {"append": 4.0 * targets.count("TransactWriteItems")}
    read = metrics["read_capacity_units"]
    assert (read["head"], read["load"]) == (1.0, 2.5)
    assert read.get("append", 0.0) == targets.count("GetItem") - 1
    assert metrics["commits"] == 2
    bodies = [json.loads(request.body) for request in recorder.requests]
    assert all(body["ReturnConsumedCapacity"] == "TOTAL" for body in bodies)


async def test_every_request_asks_for_capacity_on_the_emulator(
    make_store: StoreFactory, backend_name: str
) -> None:
    store = await make_store(feed_shards=1)
    await store.append("order-1", [{"n": 1}], expected_version=0)
    await store.load("order-1")
    await store.head("order-1")
    await store.verify()
    read = store.metrics["read_capacity_units"]
    if backend_name == "memory":
        assert read == {}  # nothing is consumed in memory
    else:  # moto reports reads (its own figures, not DynamoDB's rules)
        assert read["load"] > 0 and read["head"] > 0 and read["verify"] > 0


def test_units_of_reads_either_shape() -> None:
    assert units_of(None) == 0
    assert units_of({"TableName": "t", "CapacityUnits": 1.5}) == 1.5
    assert units_of([{"CapacityUnits": 2.0}, {"CapacityUnits": 3.0}]) == 5.0
    assert units_of({"ReadCapacityUnits": 1.0, "WriteCapacityUnits": 2.0}) == 3.0
    assert units_of([]) == 0


def test_the_kind_in_flight_gets_the_units() -> None:
    meter = CapacityMeter()
    with operation_kind("append"):
        meter.record({"CapacityUnits": 2.0}, write=True)
        with operation_kind("load"):
            meter.record({"CapacityUnits": 1.0}, write=False)
    meter.record({"CapacityUnits": 0.5}, write=False)
    assert meter.as_dicts() == ({"load": 1.0, "other": 0.5}, {"append": 2.0})
