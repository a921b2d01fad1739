"""The curated public face: ``eventstore_async.__all__`` is the whole API, sorted."""

from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path

import pytest

import eventstore_async

INIT = Path(eventstore_async.__file__)


def _names_bound_in_init() -> set[str]:
    """Every name ``__init__.py`` binds at module level (imports, assignments, defs)."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


def test_all_is_sorted() -> None:
    assert eventstore_async.__all__ == sorted(eventstore_async.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(set(eventstore_async.__all__)) == len(eventstore_async.__all__)


@pytest.mark.parametrize("name", eventstore_async.__all__)
def test_every_exported_name_exists(name: str) -> None:
    assert hasattr(eventstore_async, name)


CLASSES_AND_FUNCTIONS = [
    name
    for name in eventstore_async.__all__
    if inspect.isclass(getattr(eventstore_async, name, None))
    or inspect.isroutine(getattr(eventstore_async, name, None))
]


def test_the_api_is_mostly_classes() -> None:
    # Guards the parametrization below against silently testing nothing.
    assert "EventStore" in CLASSES_AND_FUNCTIONS
    assert "ANY" not in CLASSES_AND_FUNCTIONS
    assert len(CLASSES_AND_FUNCTIONS) == len(eventstore_async.__all__) - 1


@pytest.mark.parametrize("name", CLASSES_AND_FUNCTIONS)
def test_exported_classes_and_functions_have_docstrings(name: str) -> None:
    member = getattr(eventstore_async, name)
    doc = inspect.getdoc(member)
    assert doc, f"{name} has no docstring"
    # A class must not merely inherit its docstring from a base class.
    if inspect.isclass(member):
        assert member.__dict__.get("__doc__"), f"{name} only inherits a docstring"


def test_every_public_name_defined_in_init_is_exported() -> None:
    public = {name for name in _names_bound_in_init() if not name.startswith("_")}
    assert public - set(eventstore_async.__all__) == set()


def test_every_public_runtime_attribute_is_exported() -> None:
    # Submodules (``emulator``, once imported) are attributes too, but not API names.
    public = {
        name
        for name, value in vars(eventstore_async).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(eventstore_async.__all__)


def test_exported_names_are_the_objects_of_their_private_modules() -> None:
    # The face re-exports; it must not shadow a name with another object.
    for name in eventstore_async.__all__:
        member = getattr(eventstore_async, name)
        module = getattr(member, "__module__", None) or type(member).__module__
        assert module.startswith("eventstore_async."), (name, module)


def test_version_is_a_string() -> None:
    assert isinstance(eventstore_async.__version__, str)
    assert eventstore_async.__version__.count(".") >= 1
