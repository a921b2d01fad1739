"""Events to bytes and back, with msgspec's MessagePack.

A payload is one format byte, then the events as envelopes:

- ``0x01``: one MessagePack array of ``[type_name, body]`` envelopes (small change
  sets, decoded at once);
- ``0x02``: framed, each ``[type_name, body]`` envelope preceded by its length (4 bytes,
  big-endian), so a stream of any size is encoded and decoded one event at a time
  (offloaded and streamed change sets);
- ``0x03`` and ``0x04``: the same two layouts with versioned envelopes,
  ``[type_name, version, body]``.

``type_name`` is the Struct's tag (or class name) and ``nil`` for a plain mapping, so a
reader that does not know a type still gets its data back as :class:`RawEvent`. An
envelope without a version is at version 1. The codec writes 0x01/0x02 until a type is
registered above version 1 (or a :class:`RawEvent` of a later version is written back),
so what it writes stays readable by the releases before versions existed; then
0x03/0x04. Every format stays readable forever (``tests/golden/``).

Decoding an event of a registered type at its current version is one typed msgspec
decode; an older version is decoded to plain data, run through the type's upcasters
(``_types``), then decoded as the type. Encoders and decoders are built once and reused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ._errors import IntegrityError, InvalidInputError
from ._models import RawEvent
from ._nesting import MAX_NESTING, nests_deeper_than
from ._types import EventType, RegisteredType, TypeRegistry, Upcaster, type_name

__all__ = [
    "FORMAT_FRAMED",
    "FORMAT_FRAMED_VERSIONED",
    "FORMAT_MSGPACK",
    "FORMAT_MSGPACK_VERSIONED",
    "FRAME_HEADER_BYTES",
    "EventCodec",
    "FrameDecoder",
    "UndecodableEventError",
]

#: Leading byte of a payload: MessagePack array of [type_name, body] envelopes.
FORMAT_MSGPACK = 0x01
#: Leading byte of a framed payload: length-prefixed [type_name, body] envelopes.
FORMAT_FRAMED = 0x02
#: As ``FORMAT_MSGPACK``, with [type_name, version, body] envelopes.
FORMAT_MSGPACK_VERSIONED = 0x03
#: As ``FORMAT_FRAMED``, with [type_name, version, body] envelopes.
FORMAT_FRAMED_VERSIONED = 0x04
_FRAMED = (FORMAT_FRAMED, FORMAT_FRAMED_VERSIONED)
FRAME_HEADER_BYTES = 4
_FRAME_HEADER = FRAME_HEADER_BYTES
#: No single event may encode to more than this (a corrupt length must not allocate GBs).
MAX_FRAME_BYTES = 256 * 1024 * 1024

_Envelope = tuple[str | None, msgspec.Raw]
_VersionedEnvelope = tuple[str | None, int, msgspec.Raw]
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, msgspec.EncodeError)
_FIELD = re.compile(r"at `\$\.?([^`]*)`|field `([^`]+)`")


class UndecodableEventError(IntegrityError):
    """A stored event of a registered type does not decode as that type at the version
    it was stored with: its shape changed without a version bump.

    ``event_type``, ``stored_version`` and ``field`` (``None`` when msgspec does not
    name one) say which; ``aggregate_id`` and ``version`` (of the change set) are
    filled in where the change set is known.
    """

    def __init__(
        self,
        event_type: str,
        stored_version: int,
        problem: str,
        *,
        aggregate_id: str | None = None,
        version: int | None = None,
    ) -> None:
        self.event_type = event_type
        self.stored_version = stored_version
        self.problem = problem
        self.field = _field_of(problem)
        self.aggregate_id = aggregate_id
        self.version = version
        where = "" if aggregate_id is None else f" in change set {version} of {aggregate_id!r}"
        field = "" if self.field is None else f", field {self.field!r}"
        super().__init__(
            f"stored event of type {event_type!r} (stored version {stored_version}){where} "
            f"does not decode as its registered type{field}: {problem}; when a type's shape "
            "changes, bump its version and register an upcaster"
        )

    def located(self, aggregate_id: str, version: int) -> UndecodableEventError:
        """The same error, naming the change set it was found in."""
        return UndecodableEventError(
            self.event_type,
            self.stored_version,
            self.problem,
            aggregate_id=aggregate_id,
            version=version,
        )


def _field_of(problem: str) -> str | None:
    match = _FIELD.search(problem)
    if match is None:
        return None
    return match.group(1) or match.group(2)


class EventCodec:
    """Encodes event lists and metadata; decodes them back to registered Struct types.

    Only registered types decode back to themselves (:meth:`register`); appending a
    type does not register it, so what a load returns never depends on what the
    process appended before.
    """

    def __init__(self, *types: type[msgspec.Struct] | EventType) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._envelopes = msgspec.msgpack.Decoder(list[_Envelope])
        self._versioned_envelopes = msgspec.msgpack.Decoder(list[_VersionedEnvelope])
        self._envelope_decoder = msgspec.msgpack.Decoder(_Envelope)
        self._versioned_envelope_decoder: msgspec.msgpack.Decoder[_VersionedEnvelope] = (
            msgspec.msgpack.Decoder(_VersionedEnvelope)
        )
        self._any = msgspec.msgpack.Decoder()
        self._types = TypeRegistry()
        self._current = self._types.current  # the registry updates both in place
        self._at_version_one = self._types.at_version_one
        self._explicit: dict[type[msgspec.Struct], msgspec.msgpack.Decoder[Any]] = {}
        self.register_all(types)

    def register_all(self, types: Iterable[type[msgspec.Struct] | EventType]) -> None:
        """Register Struct types (version 1) and :class:`EventType` specs, in order.

        Raises:
            InvalidInputError: as :meth:`register`.
        """
        for spec in types:
            self._types.add(spec if isinstance(spec, EventType) else EventType(spec))

    def register(
        self,
        cls: type[msgspec.Struct],
        /,
        *more: type[msgspec.Struct],
        version: int = 1,
        upcasters: Mapping[int, Upcaster] | None = None,
        aliases: Iterable[str] = (),
    ) -> None:
        """Make events of ``cls`` (and of its older names) decode back to it; with
        ``more`` types, each at version 1.

        Raises:
            InvalidInputError: see :meth:`EventStore.register`.
        """
        if more:
            if version != 1 or upcasters is not None or aliases != ():
                raise InvalidInputError(
                    "types", "a version, upcasters or aliases go with one type at a time"
                )
            self.register_all((cls, *more))
            return
        checked = aliases if isinstance(aliases, str) else tuple(aliases)
        self._types.add(EventType(cls, version, upcasters, checked))  # type: ignore[arg-type]

    def register_if_absent(self, cls: type[msgspec.Struct]) -> None:
        """Register ``cls`` at version 1 unless it is registered already (as the
        command layer does for state types, keeping a registration with upcasters).

        Raises:
            InvalidInputError: as :meth:`register`.
        """
        if self._types.of_class(cls) is None:
            self.register(cls)

    @property
    def versioned(self) -> bool:
        """Whether payloads are written with versioned envelopes (0x03/0x04)."""
        return self._types.versioned

    def type_name(self, cls: type[msgspec.Struct]) -> str:
        """The name stored with events of this type: its tag, else its class name."""
        return type_name(cls)

    # -- events ---------------------------------------------------------------------

    def encode_events(self, events: Iterable[Any]) -> bytes:
        """Encode events into one payload.

        Raises:
            InvalidInputError: an event is neither a Struct nor a str-keyed mapping, or
                holds a value MessagePack cannot encode; ``argument`` is ``events[i]``.
        """
        envelopes = [self._envelope(index, event) for index, event in enumerate(events)]
        if self._types.versioned or any(envelope[1] != 1 for envelope in envelopes):
            return self._encode_list(FORMAT_MSGPACK_VERSIONED, envelopes, envelopes)
        plain = [(name, body) for name, _, body in envelopes]
        return self._encode_list(FORMAT_MSGPACK, plain, envelopes)

    def _encode_list(
        self, first: int, items: list[Any], envelopes: list[tuple[str | None, int, Any]]
    ) -> bytes:
        try:
            body = self._encoder.encode(items)
        except _ENCODE_ERRORS:
            raise self._locate_encoding_error(envelopes) from None
        return bytes((first,)) + body

    def _envelope(self, index: int, event: Any) -> tuple[str | None, int, Any]:
        _check_nesting(f"events[{index}]", event.data if isinstance(event, RawEvent) else event)
        if isinstance(event, RawEvent):  # written back under the type it was read with
            return self._raw_envelope(index, event)
        if isinstance(event, msgspec.Struct):
            name, version = self._written_as(index, type(event))
            self._check_decodes(index, name, version, event)
            return (name, version, event)
        if isinstance(event, Mapping):
            if not all(isinstance(key, str) for key in event):
                raise InvalidInputError(f"events[{index}]", "mapping keys must be strings")
            return (None, 1, event if isinstance(event, dict) else dict(event))
        raise InvalidInputError(
            f"events[{index}]",
            f"must be a msgspec.Struct or a mapping, not {type(event).__name__}",
        )

    def _raw_envelope(self, index: int, event: RawEvent) -> tuple[str, int, Any]:
        if not isinstance(event.type, str) or not event.type:
            raise InvalidInputError(f"events[{index}]", "a RawEvent's type must be a str")
        version = event.version
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidInputError(f"events[{index}]", "a RawEvent's version must be an int >= 1")
        self._check_decodes(index, event.type, version, event.data)
        return (event.type, version, event.data)

    def _written_as(self, index: int, cls: type[msgspec.Struct]) -> tuple[str, int]:
        entry = self._types.of_class(cls)
        if entry is not None:
            return entry.name, entry.version
        name = type_name(cls)
        holder = self._types.get(name)
        if holder is not None:
            raise InvalidInputError(
                f"events[{index}]",
                f"event type name {name!r} is already registered for {holder.cls.__qualname__}",
            )
        return name, 1

    def _check_decodes(self, index: int, name: str, version: int, body: Any) -> None:
        """A Struct's constructor does not check field types; an event that would not
        decode back to its type would make the aggregate unloadable once registered."""
        current = self._types.current.get(name)
        if current is not None and current[0] == version:
            decoder = current[1]
        elif current is None and isinstance(body, msgspec.Struct):  # not registered (yet)
            decoder = self._explicit_decoder(type(body))
        else:
            return
        try:
            decoder.decode(self._encoder.encode(body))
        except _DECODE_ERRORS as exc:
            raise InvalidInputError(
                f"events[{index}]", f"does not match its type {name!r}: {exc}"
            ) from None
        except _ENCODE_ERRORS as exc:
            raise InvalidInputError(f"events[{index}]", f"cannot be encoded: {exc}") from None

    def _locate_encoding_error(self, envelopes: list[tuple[str | None, int, Any]]) -> Exception:
        for index, envelope in enumerate(envelopes):
            try:
                self._encoder.encode(envelope)
            except _ENCODE_ERRORS as exc:
                return InvalidInputError(f"events[{index}]", f"cannot be encoded: {exc}")
        return InvalidInputError("events", "cannot be encoded")

    def framed_header(self, events: Iterable[Any] = ()) -> bytes:
        """The first byte of a framed payload of ``events`` (those known so far)."""
        versioned = self._types.versioned or any(
            isinstance(event, RawEvent) and event.version != 1 for event in events
        )
        return bytes((FORMAT_FRAMED_VERSIONED if versioned else FORMAT_FRAMED,))

    def append_frame(self, buffer: bytearray, index: int, event: Any, *, versioned: bool) -> None:
        """Append one event, framed, to ``buffer`` (see ``FORMAT_FRAMED``), with a
        version (``FORMAT_FRAMED_VERSIONED``) when ``versioned``.

        Raises:
            InvalidInputError: as :meth:`encode_events`, naming ``events[index]``; or a
                RawEvent of a version above 1 in a payload framed without versions.
        """
        name, version, body = self._envelope(index, event)
        if not versioned and version != 1:
            raise InvalidInputError(
                f"events[{index}]",
                f"is at version {version}, and this stream's payload was started without "
                "versions: pass it in a list, or register a type above version 1",
            )
        envelope = (name, version, body) if versioned else (name, body)
        start = len(buffer)
        buffer.extend(b"\0\0\0\0")
        try:
            self._encoder.encode_into(envelope, buffer, -1)
        except _ENCODE_ERRORS as exc:
            del buffer[start:]
            raise InvalidInputError(f"events[{index}]", f"cannot be encoded: {exc}") from None
        length = len(buffer) - start - _FRAME_HEADER
        if length > MAX_FRAME_BYTES:
            del buffer[start:]
            raise InvalidInputError(f"events[{index}]", f"encodes to {length} bytes, over 256 MiB")
        buffer[start : start + _FRAME_HEADER] = length.to_bytes(_FRAME_HEADER, "big")

    def decode_events(self, payload: bytes, *, lenient: bool = False) -> tuple[Any, ...]:
        """Decode a payload; unregistered types come back as :class:`RawEvent`, and so do
        events stored at a version newer than the registered one or whose upcaster
        failed.

        With ``lenient``, an event of a registered type that does not decode comes back
        as a :class:`RawEvent` carrying the ``error`` instead of raising.

        Raises:
            UndecodableEventError: a registered type whose stored body no longer
                matches its Struct definition at that version (unless ``lenient``).
            IntegrityError: unknown format byte or malformed bytes.
        """
        first = payload[0] if payload else -1
        if first == FORMAT_MSGPACK:
            return self._decode_array(payload, lenient)
        if first == FORMAT_MSGPACK_VERSIONED:
            return self._decode_versioned_array(payload, lenient)
        if first in _FRAMED:
            decoder = FrameDecoder(self, lenient=lenient)
            events = decoder.feed(payload)
            decoder.close()
            return tuple(events)
        head = payload[:1].hex() or "empty"
        raise IntegrityError(f"unknown change set payload format (first byte {head})")

    def _decode_array(self, payload: bytes, lenient: bool) -> tuple[Any, ...]:
        try:
            envelopes = self._envelopes.decode(memoryview(payload)[1:])
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"malformed change set payload: {exc}") from exc
        events = []
        decoders = self._at_version_one
        for name, raw in envelopes:  # the common case inline: a registered type decodes
            decoder = decoders.get(name)  # type: ignore[arg-type]
            if decoder is not None:
                try:
                    events.append(decoder.decode(raw))
                    continue
                except _DECODE_ERRORS:
                    pass  # _decode_envelope raises it with its message
            events.append(self._decode_envelope(name, 1, raw, lenient))
        return tuple(events)

    def _decode_versioned_array(self, payload: bytes, lenient: bool) -> tuple[Any, ...]:
        try:
            envelopes = self._versioned_envelopes.decode(memoryview(payload)[1:])
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"malformed change set payload: {exc}") from exc
        events = []
        current = self._current
        for name, version, raw in envelopes:
            entry = current.get(name)  # type: ignore[arg-type]
            if entry is not None and entry[0] == version:
                try:
                    events.append(entry[1].decode(raw))
                    continue
                except _DECODE_ERRORS:
                    pass
            events.append(self._decode_envelope(name, version, raw, lenient))
        return tuple(events)

    def decode_frame(self, frame: memoryview, *, versioned: bool, lenient: bool = False) -> Any:
        """Decode one framed envelope (without its length prefix)."""
        name, version, raw = self.frame_envelope(frame, versioned=versioned)
        return self._decode_envelope(name, version, raw, lenient)

    def frame_envelope(
        self, frame: memoryview | bytes, *, versioned: bool
    ) -> tuple[str | None, int, msgspec.Raw]:
        """One framed envelope's name, version and raw body."""
        try:
            if versioned:
                return self._versioned_envelope_decoder.decode(frame)
            name, raw = self._envelope_decoder.decode(frame)
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"malformed change set payload: {exc}") from exc
        return (name, 1, raw)

    def _decode_envelope(
        self, name: str | None, version: int, raw: msgspec.Raw, lenient: bool
    ) -> Any:
        if version < 1:
            raise IntegrityError(f"malformed change set payload: event version {version}")
        if name is None:
            return self._plain(raw)
        entry = self._types.get(name)
        if entry is None or version > entry.version:
            return RawEvent(type=name, data=self._plain(raw), version=version)
        return self._decode_registered(entry, name, version, raw, lenient)

    def _decode_registered(
        self, entry: RegisteredType, name: str, version: int, raw: msgspec.Raw, lenient: bool
    ) -> Any:
        if version == entry.version and name == entry.name:
            try:
                return entry.decoder.decode(raw)
            except _DECODE_ERRORS as exc:
                if not lenient:
                    raise UndecodableEventError(name, version, str(exc)) from exc
                return RawEvent(name, self._plain(raw), version, error=str(exc))
        return self._upcast(entry, name, version, raw)

    def _upcast(self, entry: RegisteredType, name: str, version: int, raw: msgspec.Raw) -> Any:
        """An older version (or an alias) through the upcasters, then as the type; any
        failure on the way leaves the event raw, with the stored body."""
        body = self._plain(raw)
        if isinstance(body, dict) and body.get(entry.tag_field) == name:
            del body[entry.tag_field]  # the stored tag: upcasters see the fields only
        step = version
        try:
            while step < entry.version:
                body = entry.steps[step - 1](body)
                step += 1
            return entry.decoder.decode(self._encoder.encode(body))
        except Exception as exc:  # the user's function, or its result not fitting the type
            where = f"upcasters[{step}]" if step < entry.version else "decoding the upcast body"
            error = f"{where} failed: {type(exc).__name__}: {exc}"
            return RawEvent(name, self._plain(raw), version, error=error)

    def _plain(self, raw: msgspec.Raw) -> Any:
        try:
            return self._any.decode(raw)
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"malformed change set payload: {exc}") from exc

    def decode_as(self, payload: bytes, cls: type[msgspec.Struct]) -> Any:
        """The one event of ``payload`` (a snapshot state, a view document) decoded as
        ``cls`` whatever name it was stored under: through ``cls``'s registration
        (upcasters included) when it has one.

        Raises:
            UndecodableEventError: the stored body does not fit ``cls``.
            IntegrityError: malformed bytes, or not exactly one event.
        """
        envelopes = self._envelopes_of(payload)
        if len(envelopes) != 1:
            raise IntegrityError(f"expected one stored value, found {len(envelopes)}")
        name, version, raw = envelopes[0]
        label = name if name is not None else cls.__qualname__
        entry = self._types.of_class(cls)
        if entry is not None:
            if version > entry.version:
                return RawEvent(type=label, data=self._plain(raw), version=version)
            stored = name if name is not None else entry.name
            return self._decode_registered(entry, stored, version, raw, lenient=False)
        try:
            return self._explicit_decoder(cls).decode(raw)
        except _DECODE_ERRORS as exc:
            raise UndecodableEventError(label, version, str(exc)) from exc

    def _explicit_decoder(self, cls: type[msgspec.Struct]) -> msgspec.msgpack.Decoder[Any]:
        decoder = self._explicit.get(cls)
        if decoder is None:
            decoder = self._explicit[cls] = msgspec.msgpack.Decoder(cls)
        return decoder

    def _envelopes_of(self, payload: bytes) -> list[tuple[str | None, int, msgspec.Raw]]:
        first = payload[0] if payload else -1
        try:
            if first == FORMAT_MSGPACK:
                body = memoryview(payload)[1:]
                return [(name, 1, raw) for name, raw in self._envelopes.decode(body)]
            if first == FORMAT_MSGPACK_VERSIONED:
                return self._versioned_envelopes.decode(memoryview(payload)[1:])
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"malformed change set payload: {exc}") from exc
        if first in _FRAMED:
            splitter = FrameDecoder(self, envelopes_only=True)
            found = splitter.feed(payload)
            splitter.close()
            return found
        head = payload[:1].hex() or "empty"
        raise IntegrityError(f"unknown change set payload format (first byte {head})")

    # -- metadata -------------------------------------------------------------------

    def encode_metadata(self, metadata: Mapping[str, Any]) -> bytes:
        """Encode change set metadata.

        Raises:
            InvalidInputError: a key is not a string or a value cannot be encoded.
        """
        if not all(isinstance(key, str) for key in metadata):
            raise InvalidInputError("metadata", "keys must be strings")
        _check_nesting("metadata", metadata)
        try:
            return self._encoder.encode(metadata if isinstance(metadata, dict) else dict(metadata))
        except _ENCODE_ERRORS as exc:
            raise InvalidInputError("metadata", f"cannot be encoded: {exc}") from None

    def decode_metadata(self, data: bytes | None) -> dict[str, Any]:
        """Decode metadata written by :meth:`encode_metadata` (``None`` is empty)."""
        if not data:
            return {}
        try:
            value = self._any.decode(data)
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"malformed change set metadata: {exc}") from exc
        if not isinstance(value, dict):
            raise IntegrityError("change set metadata is not a map")
        return value


def _check_nesting(argument: str, value: Any) -> None:
    """Refuse a value msgspec could not decode again from every caller's stack."""
    if nests_deeper_than(value, MAX_NESTING):
        raise InvalidInputError(
            argument, f"nests deeper than {MAX_NESTING} levels (or holds itself)"
        )


class FrameDecoder:
    """Decodes a framed payload (0x02 or 0x04) fed in chunks of any size, one event at
    a time. Holds at most one partial frame besides the chunk being fed.

    With ``envelopes_only`` it returns ``(name, version, raw body)`` per frame instead.
    """

    def __init__(
        self, codec: EventCodec, *, lenient: bool = False, envelopes_only: bool = False
    ) -> None:
        self._codec = codec
        self._lenient = lenient
        self._envelopes_only = envelopes_only
        self._buffer = bytearray()
        self._started = False
        self._versioned = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Any]:
        """Decode every event completed by ``chunk``.

        Raises:
            IntegrityError: not a framed payload, a frame too large, or bad bytes.
        """
        self._buffer.extend(chunk)
        if not self._started:
            if not self._buffer:
                return []
            if self._buffer[0] not in _FRAMED:
                raise IntegrityError(f"not a framed payload (first byte {self._buffer[:1].hex()})")
            self._versioned = self._buffer[0] == FORMAT_FRAMED_VERSIONED
            del self._buffer[:1]
            self._started = True
        return self._drain()

    def _drain(self) -> list[Any]:
        events: list[Any] = []
        view = memoryview(self._buffer)
        position = 0
        try:
            while len(view) - position >= _FRAME_HEADER:
                length = int.from_bytes(view[position : position + _FRAME_HEADER], "big")
                if length > MAX_FRAME_BYTES:
                    raise IntegrityError(f"frame of {length} bytes is over the 256 MiB limit")
                end = position + _FRAME_HEADER + length
                if end > len(view):
                    break
                events.append(self._decode(view[position + _FRAME_HEADER : end]))
                position = end
        finally:
            view.release()
        del self._buffer[:position]
        return events

    def _decode(self, frame: memoryview) -> Any:
        codec = self._codec
        if self._envelopes_only:  # the raw body must outlive the buffer: a copy
            return codec.frame_envelope(bytes(frame), versioned=self._versioned)
        return codec.decode_frame(frame, versioned=self._versioned, lenient=self._lenient)

    def close(self) -> None:
        """Raise when the payload ended inside a frame (or never started)."""
        if not self._started or self._buffer:
            raise IntegrityError("framed payload is truncated")
