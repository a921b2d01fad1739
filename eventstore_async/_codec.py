"""Events to bytes and back, with msgspec's MessagePack.

A payload is one format byte, then the events as ``[type_name, body]`` envelopes:

- ``0x01``: one MessagePack array of envelopes (small change sets, decoded at once);
- ``0x02``: framed, each envelope preceded by its length (4 bytes, big-endian), so a
  stream of any size is encoded and decoded one event at a time (offloaded and
  streamed change sets).

 ``type_name`` is the Struct's tag (or class name) and ``nil``
for a plain mapping, so a reader that does not know a type still gets its data back
as :class:`RawEvent`. Encoders and decoders are built once and reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ._errors import IntegrityError, InvalidInputError
from ._models import RawEvent
from ._nesting import MAX_NESTING, nests_deeper_than

__all__ = ["FORMAT_FRAMED", "FORMAT_MSGPACK", "FRAME_HEADER_BYTES", "EventCodec", "FrameDecoder"]

#: Leading byte of a payload: MessagePack array of [type_name, body] envelopes.
FORMAT_MSGPACK = 0x01
#: Leading byte of a framed payload: length-prefixed envelopes.
FORMAT_FRAMED = 0x02
FRAME_HEADER_BYTES = 4
_FRAME_HEADER = FRAME_HEADER_BYTES
#: No single event may encode to more than this (a corrupt length must not allocate GBs).
MAX_FRAME_BYTES = 256 * 1024 * 1024

_Envelope = tuple[str | None, msgspec.Raw]


class EventCodec:
    """Encodes event lists and metadata; decodes them back to registered Struct types.

    Struct types are registered explicitly with :meth:`register`, or on first encode.
    """

    def __init__(self, *types: type[msgspec.Struct]) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._envelopes = msgspec.msgpack.Decoder(list[_Envelope])
        self._envelope_decoder = msgspec.msgpack.Decoder(_Envelope)
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
        _check_nesting(f"events[{index}]", event.data if isinstance(event, RawEvent) else event)
        if isinstance(event, RawEvent):  # written back under the type it was read with
            if not isinstance(event.type, str) or not event.type:
                raise InvalidInputError(f"events[{index}]", "a RawEvent's type must be a str")
            self._check_decodes(index, event.type, event.data)
            return (event.type, event.data)
        if isinstance(event, msgspec.Struct):
            name = self._name_of(index, type(event))
            self._check_decodes(index, name, event)
            return (name, event)
        if isinstance(event, Mapping):
            if not all(isinstance(key, str) for key in event):
                raise InvalidInputError(f"events[{index}]", "mapping keys must be strings")
            return (None, event if isinstance(event, dict) else dict(event))
        raise InvalidInputError(
            f"events[{index}]",
            f"must be a msgspec.Struct or a mapping, not {type(event).__name__}",
        )

    def _check_decodes(self, index: int, name: str, body: Any) -> None:
        """A Struct's constructor does not check field types; an event that would not
        decode back to its registered type would make the aggregate unloadable."""
        decoder = self._decoders.get(name)
        if decoder is None:
            return
        try:
            decoder.decode(self._encoder.encode(body))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidInputError(
                f"events[{index}]", f"does not match its type {name!r}: {exc}"
            ) from None
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            raise InvalidInputError(f"events[{index}]", f"cannot be encoded: {exc}") from None

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

    def append_frame(self, buffer: bytearray, index: int, event: Any) -> None:
        """Append one event, framed, to ``buffer`` (see ``FORMAT_FRAMED``).

        Raises:
            InvalidInputError: as :meth:`encode_events`, naming ``events[index]``.
        """
        envelope = self._envelope(index, event)
        start = len(buffer)
        buffer.extend(b"\0\0\0\0")
        try:
            self._encoder.encode_into(envelope, buffer, -1)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            del buffer[start:]
            raise InvalidInputError(f"events[{index}]", f"cannot be encoded: {exc}") from None
        length = len(buffer) - start - _FRAME_HEADER
        if length > MAX_FRAME_BYTES:
            del buffer[start:]
            raise InvalidInputError(f"events[{index}]", f"encodes to {length} bytes, over 256 MiB")
        buffer[start : start + _FRAME_HEADER] = length.to_bytes(_FRAME_HEADER, "big")

    def decode_events(self, payload: bytes) -> tuple[Any, ...]:
        """Decode a payload; unregistered types come back as :class:`RawEvent`.

        Raises:
            IntegrityError: unknown format byte, malformed bytes, or a registered type
                whose stored body no longer matches its Struct definition.
        """
        first = payload[0] if payload else -1
        if first == FORMAT_MSGPACK:
            return self._decode_array(payload)
        if first == FORMAT_FRAMED:
            decoder = FrameDecoder(self)
            events = decoder.feed(payload)
            decoder.close()
            return tuple(events)
        head = payload[:1].hex() or "empty"
        raise IntegrityError(f"unknown change set payload format (first byte {head})")

    def _decode_array(self, payload: bytes) -> tuple[Any, ...]:
        try:
            envelopes = self._envelopes.decode(memoryview(payload)[1:])
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"malformed change set payload: {exc}") from exc
        events = []
        decoders = self._decoders
        for name, raw in envelopes:  # the common case inline: a registered type decodes
            decoder = decoders.get(name) if name is not None else None
            if decoder is not None:
                try:
                    events.append(decoder.decode(raw))
                    continue
                except (msgspec.DecodeError, msgspec.ValidationError):
                    pass  # _decode_envelope raises it with its message
            events.append(self._decode_envelope(name, raw))
        return tuple(events)

    def decode_frame(self, frame: memoryview) -> Any:
        """Decode one framed envelope (without its length prefix)."""
        try:
            name, raw = self._envelope_decoder.decode(frame)
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"malformed change set payload: {exc}") from exc
        return self._decode_envelope(name, raw)

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
        _check_nesting("metadata", metadata)
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


def _check_nesting(argument: str, value: Any) -> None:
    """Refuse a value msgspec could not decode again from every caller's stack."""
    if nests_deeper_than(value, MAX_NESTING):
        raise InvalidInputError(
            argument, f"nests deeper than {MAX_NESTING} levels (or holds itself)"
        )


class FrameDecoder:
    """Decodes a framed payload fed in chunks of any size, one event at a time.

    Holds at most one partial frame besides the chunk being fed.
    """

    def __init__(self, codec: EventCodec) -> None:
        self._codec = codec
        self._buffer = bytearray()
        self._started = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Any]:
        """Decode every event completed by ``chunk``.

        Raises:
            IntegrityError: not a framed payload, a frame too large, or bad bytes.
        """
        self._buffer.extend(chunk)
        if not self._started:
            if not self._buffer:
                return []
            if self._buffer[0] != FORMAT_FRAMED:
                raise IntegrityError(f"not a framed payload (first byte {self._buffer[:1].hex()})")
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
                events.append(self._codec.decode_frame(view[position + _FRAME_HEADER : end]))
                position = end
        finally:
            view.release()
        del self._buffer[:position]
        return events

    def close(self) -> None:
        """Raise when the payload ended inside a frame (or never started)."""
        if not self._started or self._buffer:
            raise IntegrityError("framed payload is truncated")
