"""Events to bytes and back, with msgspec's MessagePack.

A payload is one format byte followed by a MessagePack array of envelopes
``[type_name, body]``. ``type_name`` is the Struct's tag (or class name) and ``nil``
for a plain mapping, so a reader that does not know a type still gets its data back
as :class:`RawEvent`. Encoders and decoders are built once and reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ._errors import IntegrityError, InvalidInputError
from ._models import RawEvent

__all__ = ["FORMAT_MSGPACK", "EventCodec"]

#: Leading byte of a payload: MessagePack array of [type_name, body] envelopes.
FORMAT_MSGPACK = 0x01

_Envelope = tuple[str | None, msgspec.Raw]


class EventCodec:
    """Encodes event lists and metadata; decodes them back to registered Struct types.

    Struct types are registered explicitly with :meth:`register`, or on first encode.
    """

    def __init__(self, *types: type[msgspec.Struct]) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._envelopes = msgspec.msgpack.Decoder(list[_Envelope])
        self._any = msgspec.msgpack.Decoder()
        self._names: dict[type[msgspec.Struct], str] = {}
        self._decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {}
        self.register(*types)

    def register(self, *types: type[msgspec.Struct]) -> None:
        """Make these Struct types decode back to themselves.

        Raises:
            InvalidInputError: not a Struct type, or its name is taken by another type.
        """
        for cls in types:
            self._register_one(cls)

    def type_name(self, cls: type[msgspec.Struct]) -> str:
        """The name stored with events of this type: its tag, else its class name."""
        tag = cls.__struct_config__.tag
        return tag if isinstance(tag, str) else cls.__name__

    def _register_one(self, cls: type[msgspec.Struct]) -> str:
        if not (isinstance(cls, type) and issubclass(cls, msgspec.Struct)):
            raise InvalidInputError("types", f"{cls!r} is not a msgspec.Struct type")
        name = self.type_name(cls)
        known = self._decoders.get(name)
        if known is not None and self._names.get(cls) != name:
            raise InvalidInputError("types", f"event type name {name!r} is already registered")
        self._names[cls] = name
        self._decoders[name] = msgspec.msgpack.Decoder(cls)
        return name

    # -- events ---------------------------------------------------------------------

    def encode_events(self, events: Iterable[Any]) -> bytes:
        """Encode events into one payload.

        Raises:
            InvalidInputError: an event is neither a Struct nor a str-keyed mapping, or
                holds a value MessagePack cannot encode; ``argument`` is ``events[i]``.
        """
        envelopes = [self._envelope(index, event) for index, event in enumerate(events)]
        try:
            body = self._encoder.encode(envelopes)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
            raise self._locate_encoding_error(envelopes) from None
        return bytes((FORMAT_MSGPACK,)) + body

    def _envelope(self, index: int, event: Any) -> tuple[str | None, Any]:
        if isinstance(event, RawEvent):  # written back under the type it was read with
            return (event.type, event.data)
        if isinstance(event, msgspec.Struct):
            return (self._name_of(index, type(event)), event)
        if isinstance(event, Mapping):
            if not all(isinstance(key, str) for key in event):
                raise InvalidInputError(f"events[{index}]", "mapping keys must be strings")
            return (None, event if isinstance(event, dict) else dict(event))
        raise InvalidInputError(
            f"events[{index}]",
            f"must be a msgspec.Struct or a mapping, not {type(event).__name__}",
        )

    def _name_of(self, index: int, cls: type[msgspec.Struct]) -> str:
        name = self._names.get(cls)
        if name is not None:
            return name
        try:
            return self._register_one(cls)
        except InvalidInputError as exc:
            raise InvalidInputError(f"events[{index}]", exc.problem) from None

    def _locate_encoding_error(self, envelopes: list[tuple[str | None, Any]]) -> Exception:
        for index, envelope in enumerate(envelopes):
            try:
                self._encoder.encode(envelope)
            except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
                return InvalidInputError(f"events[{index}]", f"cannot be encoded: {exc}")
        return InvalidInputError("events", "cannot be encoded")

    def decode_events(self, payload: bytes) -> tuple[Any, ...]:
        """Decode a payload; unregistered types come back as :class:`RawEvent`.

        Raises:
            IntegrityError: unknown format byte, malformed bytes, or a registered type
                whose stored body no longer matches its Struct definition.
        """
        if not payload or payload[0] != FORMAT_MSGPACK:
            head = payload[:1].hex() or "empty"
            raise IntegrityError(f"unknown change set payload format (first byte {head})")
        try:
            envelopes = self._envelopes.decode(memoryview(payload)[1:])
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"malformed change set payload: {exc}") from exc
        return tuple(self._decode_envelope(name, raw) for name, raw in envelopes)

    def _decode_envelope(self, name: str | None, raw: msgspec.Raw) -> Any:
        try:
            if name is None:
                return self._any.decode(raw)
            decoder = self._decoders.get(name)
            if decoder is None:
                return RawEvent(type=name, data=self._any.decode(raw))
            return decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise IntegrityError(f"stored event of type {name!r} does not decode: {exc}") from exc

    # -- metadata -------------------------------------------------------------------

    def encode_metadata(self, metadata: Mapping[str, Any]) -> bytes:
        """Encode change set metadata.

        Raises:
            InvalidInputError: a key is not a string or a value cannot be encoded.
        """
        if not all(isinstance(key, str) for key in metadata):
            raise InvalidInputError("metadata", "keys must be strings")
        try:
            return self._encoder.encode(metadata if isinstance(metadata, dict) else dict(metadata))
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
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
