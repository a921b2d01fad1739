"""``EventStore.verify``: a healthy table passes; damage done beside the library is
found, each problem naming its aggregate and version."""

from __future__ import annotations

import pytest

from eventstore_async import EventStore, InvalidInputError, VerifyReport

from .conftest import StoreFactory
from .damage import (
    EXPECTED_PROBLEMS,
    GAP,
    HEALTHY,
    SAMPLE_SETTINGS,
    clients,
    damage,
    write_sample,
)

pytestmark = pytest.mark.anyio


def _found(report: VerifyReport) -> set[tuple[str, str]]:
    return {(problem.kind, problem.where) for problem in report.problems}


async def test_a_healthy_table_passes(make_store: StoreFactory) -> None:
    store = await make_store(**SAMPLE_SETTINGS)
    await write_sample(store)
    seen: list[tuple[str, int, int | None]] = []
    report = await store.verify(progress=lambda *step: seen.append(step))
    assert report.ok, [str(p) for p in report.problems]
    assert report.unreferenced == ()
    assert report.counts["aggregates"] == 5
    assert report.counts["change_sets"] == 12
    assert report.counts["snapshots"] == 1
    assert report.counts["feed_entries"] == 12
    assert report.counts["objects_checked"] == 3
    assert {phase for phase, _, _ in seen} == {"items", "objects"}
    assert sum(n for phase, n, _ in seen if phase == "items") == report.counts["items"]


async def test_verify_refuses_a_bad_id(store: EventStore) -> None:
    with pytest.raises(InvalidInputError):
        await store.verify(["bad\x00id"])


@pytest.mark.parametrize("backend_name", ["emulator"])
async def test_every_kind_of_damage_is_reported(
    make_store: StoreFactory, emulator_url: str
) -> None:
    store = await make_store(**SAMPLE_SETTINGS)
    await write_sample(store)
    damage(store.config, emulator_url)
    _, s3 = clients(emulator_url)
    config = store.config
    stray = f"{config.key_prefix}{config.table_name}/c3RyYXk/0123"
    s3.put_object(Bucket=store.config.bucket_name, Key=stray, Body=b"left behind")

    report = await store.verify()

    assert _found(report) == EXPECTED_PROBLEMS, [str(p) for p in report.problems]
    assert report.unreferenced == (stray,)
    gap = next(p for p in report.problems if p.kind == "gap")
    assert (gap.aggregate_id, gap.version) == (GAP, 2)
    assert str(gap) == f"{GAP}@2: change set missing (stored versions run to 3)"


@pytest.mark.parametrize("backend_name", ["emulator"])
async def test_verify_of_some_aggregates(make_store: StoreFactory, emulator_url: str) -> None:
    store = await make_store(**SAMPLE_SETTINGS)
    await write_sample(store)
    damage(store.config, emulator_url)
    report = await store.verify([GAP, HEALTHY, "nobody"])
    assert _found(report) == {("gap", f"{GAP}@2"), ("not-found", "nobody")}
    assert report.unreferenced == ()  # only a whole-table check can say
