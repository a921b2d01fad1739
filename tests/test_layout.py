"""The package's boundaries, read from its sources with ``ast``.

Only ``_backends/aws/`` talks to AWS's client libraries (botocore, aiobotocore,
aiohttp, aioboto3), and only ``emulator/`` imports moto: every other module works
against the backend protocol, so the store's logic runs the same on the in-memory
backend. The in-memory backend does not lean on the AWS one either (what both need,
such as the item-size arithmetic, lives beside them in ``_backends/``). Imports inside
functions count too.

And only the facade (``_store.py``) touches an ``EventStore``'s private attributes:
the CLI, the benchmarks and the tests go through its public API and the
``EventStore(config, backend=...)`` seam of ``eventstore_async.testing``, and the
command layer (``domain/``) through the ``StoreAccess`` the store hands it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import eventstore_async

PACKAGE = Path(eventstore_async.__file__).parent
ROOT = Path(__file__).resolve().parent.parent
FACADE = PACKAGE / "_store.py"
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


# -- a store's private attributes ---------------------------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _names_a_store(node: ast.expr) -> bool:
    """``EventStore``, ``store``, ``other_store``, ``self._store``: a store by its name."""
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
    return isinstance(name, str) and (name == "EventStore" or name.lstrip("_").endswith("store"))


def _own_attributes(tree: ast.AST) -> set[str]:
    """The attributes a module's classes assign on ``self``: the module's own."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and _is_self(node.value)
        if isinstance(node.ctx, ast.Store)
    }


def store_privates() -> set[str]:
    """``EventStore``'s private methods and attributes, read from the facade."""
    tree = ast.parse(FACADE.read_text(encoding="utf-8"))
    (store,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EventStore"]
    methods = {n.name for n in store.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    return {name for name in methods | _own_attributes(store) if _private(name)}


def private_store_reads(source: str, privates: set[str]) -> list[tuple[int, str]]:
    """(line, attribute) of every touch of a store's private in ``source``: an attribute
    read off something named a store, or one of the store's private names read off
    anything but ``self`` in a module whose classes do not have it themselves (so
    ``appender._backend`` next to ``class Appender`` is the module's own business),
    and the same names given as strings to ``getattr``/``setattr`` (monkeypatching)."""
    tree = ast.parse(source)
    own = _own_attributes(tree)
    found: list[tuple[int, str]] = []

    def check(target: ast.expr, name: str, line: int) -> None:
        if not _private(name) or _is_self(target):
            return
        if _names_a_store(target) or (name in privates and name not in own):
            found.append((line, name))

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            check(node.value, node.attr, node.lineno)
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            func, (target, name) = node.func, node.args[:2]
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called not in ("getattr", "setattr", "delattr", "hasattr"):
                continue
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                check(target, name.value, node.lineno)
    return found


def code_files() -> dict[str, Path]:
    files = {f"eventstore_async/{p.relative_to(PACKAGE)}": p for p in PACKAGE.rglob("*.py")}
    for folder in ("tests", "examples", "benchmarks"):
        files.update({str(p.relative_to(ROOT)): p for p in (ROOT / folder).rglob("*.py")})
    return files


def test_the_private_read_scanner_sees_every_kind_of_touch() -> None:
    code = (
        "class Appender:\n"
        "    def __init__(self, backend):\n"
        "        self._backend = backend\n"
        "def send(appender, store, monkeypatch, repo, thing):\n"
        "    appender._backend.commit()\n"  # the module's own class: allowed
        "    store._backend.get()\n"
        "    repo._store._landed_version()\n"
        "    thing._appender\n"
        "    monkeypatch.setattr(EventStore, '_append_commands', None)\n"
        "    getattr(store, '_codec')\n"
        "    store.__class__, store.append\n"
    )
    found = private_store_reads(code, {"_backend", "_appender", "_append_commands"})
    assert sorted(found) == [
        (6, "_backend"),
        (7, "_landed_version"),
        (8, "_appender"),
        (9, "_append_commands"),
        (10, "_codec"),
    ]


def test_only_the_facade_touches_a_store_s_privates() -> None:
    privates = store_privates()
    assert {"_backend", "_append_commands", "_codec"} <= privates  # not vacuous
    offenders = sorted(
        f"{name}:{line}: {attribute}"
        for name, path in code_files().items()
        if path != FACADE
        for line, attribute in private_store_reads(path.read_text(encoding="utf-8"), privates)
    )
    assert offenders == []
