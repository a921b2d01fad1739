"""The installed package as a user's type checker sees it.

An application outside the repository imports the package installed by ``make
install`` (an editable install); ``mypy --strict`` must find it and its types
(``py.typed``), as it would a released wheel. Run in a temporary directory with no
mypy configuration, so only the installed package can answer the import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import eventstore_async

REPOSITORY = Path(eventstore_async.__file__).parent.parent

APPLICATION = """\
from eventstore_async import ANY, ChangeSet, EventStore, StorageError


async def place_order(store: EventStore, order_id: str) -> int:
    try:
        change_set: ChangeSet = await store.append(
            order_id, [{"placed": True}], expected_version=ANY
        )
    except StorageError as error:
        reason: str | None = error.reason
        raise RuntimeError(reason) from error
    return change_set.version
"""


def mypy_strict(directory: Path, source: str) -> subprocess.CompletedProcess[str]:
    module = directory / "application.py"
    module.write_text(source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in {"MYPYPATH", "PYTHONPATH"}}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", module.name],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_application_outside_the_repository_type_checks_against_the_package(
    tmp_path: Path,
) -> None:
    assert REPOSITORY not in tmp_path.parents  # nothing of the repository is at hand

    checked = mypy_strict(tmp_path, APPLICATION)
    hint = "\n(an install older than pyproject's package-dir setting? run `make install`)"
    assert checked.returncode == 0, checked.stdout + checked.stderr + hint

    # The package's own types are used (an Any from a missing import would pass this):
    wrong = APPLICATION.replace("return change_set.version", "return change_set.commit_id")
    refused = mypy_strict(tmp_path, wrong)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert 'Incompatible return value type (got "str", expected "int")' in refused.stdout
