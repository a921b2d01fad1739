"""Registered event types: names, schema versions, upcaster chains and older names.

A Struct type is stored under its name (its tag, else its class name) and its schema
version. Registering ``cls`` at version ``n`` with upcasters ``{1: f1, ..., n-1: fn}``
makes an event stored at version ``k < n`` decode as ``fn(...f{k+1}(fk(body)))``;
``aliases`` are older names of the type (renames), read through the same chain: versions
count across a rename. Registration is checked whole (a missing step, a name already
taken) before anything changes, so a store never holds half a registration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ._errors import InvalidInputError

__all__ = [
    "EventType",
    "RegisteredType",
    "TypeRegistry",
    "Upcaster",
    "check_struct_type",
    "type_name",
]

#: Turns the body (a dict) of version ``n`` of a type into the body of version ``n + 1``.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def type_name(cls: type[msgspec.Struct]) -> str:
    """The name stored with events of this type: its tag, else its class name."""
    tag = cls.__struct_config__.tag
    return tag if isinstance(tag, str) else cls.__name__


def check_struct_type(value: Any, argument: str) -> type[msgspec.Struct] | None:
    """An explicit decode type (``get_view(type=)``, ``load(state_type=)``), or None.

    Raises:
        InvalidInputError: neither None nor a msgspec Struct type.
    """
    if value is None or (isinstance(value, type) and issubclass(value, msgspec.Struct)):
        return value
    raise InvalidInputError(argument, f"must be a msgspec.Struct type, not {value!r}")


@dataclass(frozen=True, slots=True)
class EventType:
    """A Struct type with its schema version, upcasters and older names, for
    ``EventStore(config, types=[...])``: ``EventType(Cart, version=3, upcasters={1: f,
    2: g}, aliases=("Basket",))`` registers as ``store.register(Cart, version=3, ...)``.
    A bare Struct type in ``types`` is ``EventType(cls)``: version 1, no upcasters.
    """

    cls: type[msgspec.Struct]
    version: int = 1
    upcasters: Mapping[int, Upcaster] | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class RegisteredType:
    """One checked registration; ``steps[k - 1]`` turns version ``k`` into ``k + 1``."""

    cls: type[msgspec.Struct]
    name: str
    version: int
    steps: tuple[Upcaster, ...]
    aliases: tuple[str, ...]
    decoder: msgspec.msgpack.Decoder[Any] = field(repr=False)

    @property
    def tag_field(self) -> str:
        """The key a tagged Struct's encoded body holds its tag under."""
        return self.cls.__struct_config__.tag_field or "type"


class TypeRegistry:
    """Names (current and aliases) to registrations, and classes to the name written."""

    def __init__(self) -> None:
        self._by_name: dict[str, RegisteredType] = {}
        self._by_class: dict[type[msgspec.Struct], RegisteredType] = {}
        #: Current names only, to the (version, decoder) of the fast path.
        self.current: dict[str, tuple[int, msgspec.msgpack.Decoder[Any]]] = {}
        #: Current names of types at version 1, to their decoder (the 0x01/0x02 fast
        #: path, whose envelopes are all at version 1).
        self.at_version_one: dict[str, msgspec.msgpack.Decoder[Any]] = {}
        #: Whether some type is registered above version 1 (see ``EventCodec``).
        self.versioned = False

    def add(self, spec: EventType) -> None:
        """Register (or re-register) one type.

        Raises:
            InvalidInputError: not a Struct type, a bad version, upcasters that do not
                cover every step from 1 to the version, bad aliases, or a name or alias
                that another type already has.
        """
        entry = _checked(spec)
        self._check_free(entry)
        old = self._by_class.pop(entry.cls, None)
        if old is not None:
            for name in (old.name, *old.aliases):
                self._by_name.pop(name, None)
            self.current.pop(old.name, None)
            self.at_version_one.pop(old.name, None)
        self._by_class[entry.cls] = entry
        for name in (entry.name, *entry.aliases):
            self._by_name[name] = entry
        self.current[entry.name] = (entry.version, entry.decoder)
        if entry.version == 1:
            self.at_version_one[entry.name] = entry.decoder
        self.versioned = any(e.version > 1 for e in self._by_class.values())

    def _check_free(self, entry: RegisteredType) -> None:
        for name in (entry.name, *entry.aliases):
            holder = self._by_name.get(name)
            if holder is None or holder.cls is entry.cls:
                continue
            what = "event type name" if name == entry.name else "alias"
            role = "name" if name == holder.name else "alias"
            raise InvalidInputError(
                "aliases" if what == "alias" else "types",
                f"{what} {name!r} is already the {role} of {holder.cls.__qualname__}",
            )

    def get(self, name: str) -> RegisteredType | None:
        """The registration a stored name (current or alias) decodes as."""
        return self._by_name.get(name)

    def of_class(self, cls: type[msgspec.Struct]) -> RegisteredType | None:
        return self._by_class.get(cls)


def _checked(spec: EventType) -> RegisteredType:
    cls = spec.cls
    if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
        raise InvalidInputError("types", f"{cls!r} is not a msgspec.Struct type")
    version = spec.version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInputError("version", f"must be an int >= 1, not {version!r}")
    name = type_name(cls)
    return RegisteredType(
        cls=cls,
        name=name,
        version=version,
        steps=_steps(spec.upcasters, version),
        aliases=_aliases(spec.aliases, name),
        decoder=msgspec.msgpack.Decoder(cls),
    )


def _steps(upcasters: Mapping[int, Upcaster] | None, version: int) -> tuple[Upcaster, ...]:
    given = {} if upcasters is None else upcasters
    if not isinstance(given, Mapping):
        raise InvalidInputError("upcasters", "must be a mapping {version: function}")
    extra = sorted(repr(n) for n in given if not (isinstance(n, int) and 1 <= n < version))
    if extra:
        raise InvalidInputError(
            "upcasters",
            f"keys {', '.join(extra)} are not versions 1..{version - 1} of a type at "
            f"version {version} (upcasters[n] turns version n into n + 1)",
        )
    missing = [n for n in range(1, version) if n not in given]
    if missing:
        raise InvalidInputError(
            "upcasters",
            f"no upcaster from version {missing[0]} to {missing[0] + 1} (a type at version "
            f"{version} needs upcasters[1] to upcasters[{version - 1}])",
        )
    steps = tuple(given[n] for n in range(1, version))
    for number, step in enumerate(steps, start=1):
        if not callable(step):
            raise InvalidInputError(f"upcasters[{number}]", "must be a function (dict -> dict)")
    return steps


def _aliases(aliases: Iterable[str], name: str) -> tuple[str, ...]:
    if isinstance(aliases, str) or not isinstance(aliases, Iterable):
        raise InvalidInputError("aliases", "must be a tuple of older type names")
    names = tuple(aliases)
    for alias in names:
        if not isinstance(alias, str) or not alias:
            raise InvalidInputError("aliases", f"{alias!r} is not a type name (a non-empty str)")
        if alias == name:
            raise InvalidInputError("aliases", f"{alias!r} is the type's own name")
    if len(set(names)) != len(names):
        raise InvalidInputError("aliases", "a name is given twice")
    return names
