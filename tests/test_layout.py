"""The package's boundaries, read from its sources with ``ast``.

Only ``_backends/aws/`` talks to AWS's client libraries (botocore, aiobotocore,
aiohttp, aioboto3), and only ``emulator/`` imports moto: every other module works
against the backend protocol, so the store's logic runs the same on the in-memory
backend. The in-memory backend does not lean on the AWS one either (what both need,
such as the item-size arithmetic, lives beside them in ``_backends/``). Imports inside
functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import eventstore_async

PACKAGE = Path(eventstore_async.__file__).parent
AWS_CLIENTS = {"botocore", "aiobotocore", "aiohttp", "aioboto3"}
AWS_DIR = PACKAGE / "_backends" / "aws"
EMULATOR_DIR = PACKAGE / "emulator"


def imported_roots(source: str) -> set[str]:
    """The top-level names of every absolute import in ``source``, at any depth."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def package_imports(path: Path) -> set[str]:
    """The dotted package modules ``path`` imports, relative imports resolved
    (``from .aws.items import x`` in ``_backends/memory.py`` is
    ``eventstore_async._backends.aws.items``), at any depth."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(module[: len(module) - node.level]) if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def sources() -> dict[Path, set[str]]:
    return {
        path: imported_roots(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_the_scanner_sees_every_kind_of_import() -> None:
    code = (
        "import botocore.session\n"
        "from aiobotocore.config import AioConfig\n"
        "from . import sibling\n"
        "def later():\n"
        "    import moto\n"
    )
    assert imported_roots(code) == {"botocore", "aiobotocore", "moto"}


def test_the_boundaries_are_not_vacuous() -> None:
    found = sources()
    assert any(AWS_CLIENTS & roots for path, roots in found.items() if AWS_DIR in path.parents)
    assert any("moto" in roots for path, roots in found.items() if EMULATOR_DIR in path.parents)


def test_only_the_aws_backend_imports_aws_clients() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(AWS_CLIENTS & roots)
        for path, roots in sources().items()
        if AWS_CLIENTS & roots and AWS_DIR not in path.parents
    }
    assert offenders == {}


def test_only_the_emulator_imports_moto() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path, roots in sources().items()
        if "moto" in roots and EMULATOR_DIR not in path.parents
    ]
    assert offenders == []


def test_the_package_import_scanner_resolves_relative_imports() -> None:
    memory = PACKAGE / "_backends" / "memory.py"
    found = package_imports(memory)
    assert "eventstore_async._backends.protocol" in found  # from .protocol import ...
    assert "eventstore_async._records" in found  # from .._records import ...


def test_the_memory_backend_does_not_import_the_aws_backend() -> None:
    aws = "eventstore_async._backends.aws"
    found = package_imports(PACKAGE / "_backends" / "memory.py")
    assert sorted(m for m in found if m == aws or m.startswith(aws + ".")) == []
