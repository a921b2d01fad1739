"""The pytest plugin, as a user meets it: a throwaway project that only installs us."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "eventstore_async.pytest_plugin"

CONFTEST = """
import msgspec
import pytest


class Deposited(msgspec.Struct, tag=True, frozen=True):
    amount: int


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def eventstore_types():
    return (Deposited,)


@pytest.fixture
def eventstore_config():
    return {"page_size": 7}
"""

TESTS = """
import boto3
import pytest

from conftest import Deposited

pytestmark = pytest.mark.anyio
TABLES = []


async def test_event_store_is_fresh_in_memory_and_typed(event_store):
    assert event_store.config.page_size == 7
    assert await event_store.head("acc-1") is None
    await event_store.append("acc-1", [Deposited(amount=5)], expected_version=0)
    history = await event_store.load("acc-1")
    assert history.change_sets[0].events == (Deposited(amount=5),)


async def test_event_store_is_another_one_each_time(event_store):
    assert await event_store.head("acc-1") is None


def test_eventstore_emulator_is_an_endpoint(eventstore_emulator):
    assert eventstore_emulator.startswith("http://127.0.0.1:")


async def test_emulator_store_has_its_schema_and_types(emulator_store, eventstore_emulator):
    assert emulator_store.config.endpoint_url == eventstore_emulator
    assert emulator_store.config.page_size == 7
    await emulator_store.append("acc-1", [Deposited(amount=9)], expected_version=0)
    history = await emulator_store.load("acc-1")
    assert history.change_sets[0].events == (Deposited(amount=9),)
    TABLES.append(emulator_store.config.table_name)


def test_the_emulator_store_was_dropped(eventstore_emulator):
    client = boto3.client(
        "dynamodb",
        endpoint_url=eventstore_emulator,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    assert TABLES and TABLES[0] not in client.list_tables()["TableNames"]
"""


def test_the_plugin_is_declared_as_a_pytest11_entry_point() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {"eventstore_async": PLUGIN}


def _installed_entry_point() -> bool:
    return any(ep.value == PLUGIN for ep in metadata.entry_points(group="pytest11"))


@pytest.mark.timeout(180)
def test_a_project_that_only_installs_the_package_uses_the_fixtures(tmp_path: Path) -> None:
    if not _installed_entry_point():
        pytest.skip("the installed package predates its pytest11 entry point: make install")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_app.py").write_text(textwrap.dedent(TESTS))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONPATH"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "test_app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout
