"""EventCodec: events and metadata to MessagePack bytes and back."""

from __future__ import annotations

import types
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore_async import IntegrityError, InvalidInputError, RawEvent
from eventstore_async._codec import FORMAT_MSGPACK, EventCodec

# -- event types ------------------------------------------------------------------------


class OrderPlaced(msgspec.Struct, tag="order-placed"):
    sku: str
    qty: int


class OrderShipped(msgspec.Struct, tag=True):
    carrier: str
    at: datetime


class Untagged(msgspec.Struct):
    note: str
    count: int = 0


class Line(msgspec.Struct):
    sku: str
    qty: int
    price: float


class Address(msgspec.Struct):
    street: str
    city: str


class OrderCreated(msgspec.Struct, tag="order-created"):
    lines: list[Line]
    ship_to: Address | None
    tags: frozenset[str]
    by_sku: dict[str, Line]
    placed_at: datetime
    due: date
    attachment: bytes
    extra: dict[str, Any]


class ArrayLike(msgspec.Struct, array_like=True, tag="arr"):
    a: int
    b: str


class Other(msgspec.Struct, tag="order-placed"):
    reason: str


def _roundtrip(codec: EventCodec, events: list[Any]) -> tuple[Any, ...]:
    return codec.decode_events(codec.encode_events(events))


# -- round trips ------------------------------------------------------------------------


def test_payload_starts_with_the_format_byte() -> None:
    payload = EventCodec().encode_events([{"a": 1}])
    assert payload[0] == FORMAT_MSGPACK == 0x01
    assert isinstance(payload, bytes)


def test_tagged_struct_round_trip() -> None:
    codec = EventCodec(OrderPlaced)
    event = OrderPlaced(sku="x-1", qty=3)
    (decoded,) = _roundtrip(codec, [event])
    assert type(decoded) is OrderPlaced
    assert decoded == event


def test_tag_true_uses_the_class_name() -> None:
    codec = EventCodec()
    assert codec.type_name(OrderShipped) == "OrderShipped"
    assert codec.type_name(OrderPlaced) == "order-placed"
    assert codec.type_name(Untagged) == "Untagged"


def test_untagged_struct_round_trip() -> None:
    codec = EventCodec(Untagged)
    events = [Untagged(note="a"), Untagged(note="b", count=2)]
    assert _roundtrip(codec, events) == tuple(events)


def test_encoding_a_struct_does_not_register_it() -> None:
    """What decodes to a type depends on registration only, not on what this process
    encoded before: a fresh process would read the same payload the same way."""
    codec = EventCodec()
    payload = codec.encode_events([Untagged(note="n")])
    assert codec.decode_events(payload) == (RawEvent("Untagged", {"note": "n", "count": 0}),)
    assert EventCodec().decode_events(payload) == codec.decode_events(payload)


def test_array_like_struct_round_trip() -> None:
    codec = EventCodec(ArrayLike)
    assert _roundtrip(codec, [ArrayLike(1, "b")]) == (ArrayLike(1, "b"),)


def test_nested_types_round_trip() -> None:
    codec = EventCodec(OrderCreated)
    line = Line(sku="a", qty=2, price=9.99)
    event = OrderCreated(
        lines=[line, Line(sku="b", qty=1, price=-0.5)],
        ship_to=Address(street="1 Main St", city="Zürich"),
        tags=frozenset({"gift", "express"}),
        by_sku={"a": line},
        placed_at=datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC),
        due=date(2024, 6, 1),
        attachment=b"\x00\xffbinary",
        extra={"nested": {"list": [1, "two", None, True]}, "n": 2**63 - 1},
    )
    (decoded,) = _roundtrip(codec, [event])
    assert decoded == event
    assert type(decoded.lines[0]) is Line
    assert type(decoded.ship_to) is Address
    assert decoded.attachment == b"\x00\xffbinary"


def test_datetime_with_offset_round_trips_to_the_same_instant() -> None:
    codec = EventCodec(OrderShipped)
    at = datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    (decoded,) = _roundtrip(codec, [OrderShipped(carrier="ups", at=at)])
    assert decoded.at == at
    assert decoded.at.utcoffset() is not None


def test_mixed_events_keep_their_order() -> None:
    codec = EventCodec(OrderPlaced, Untagged)
    events = [OrderPlaced(sku="a", qty=1), {"plain": True}, Untagged(note="u"), {"n": 2}]
    assert _roundtrip(codec, events) == tuple(events)


def test_plain_mapping_decodes_as_a_dict() -> None:
    codec = EventCodec()
    event = {"name": "x", "when": datetime(2024, 1, 1, tzinfo=UTC), "raw": b"\x01", "n": [1, 2]}
    (decoded,) = _roundtrip(codec, [event])
    assert type(decoded) is dict
    assert decoded == event
    assert type(decoded["raw"]) is bytes


def test_mapping_that_looks_like_a_struct_stays_a_dict() -> None:
    codec = EventCodec(OrderPlaced)
    event = {"type": "order-placed", "sku": "a", "qty": 1}
    (decoded,) = _roundtrip(codec, [event])
    assert decoded == event
    assert type(decoded) is dict


def test_unregistered_type_decodes_as_raw_event() -> None:
    payload = EventCodec().encode_events([OrderPlaced(sku="a", qty=2), Untagged(note="n", count=1)])
    stranger = EventCodec()
    tagged, untagged = stranger.decode_events(payload)
    assert tagged == RawEvent(
        type="order-placed", data={"type": "order-placed", "sku": "a", "qty": 2}
    )
    assert untagged == RawEvent(type="Untagged", data={"note": "n", "count": 1})


def test_raw_event_of_a_nested_struct_keeps_plain_data() -> None:
    payload = EventCodec().encode_events(
        [OrderShipped(carrier="dhl", at=datetime(2024, 1, 1, tzinfo=UTC))]
    )
    (raw,) = EventCodec().decode_events(payload)
    assert isinstance(raw, RawEvent)
    assert raw.type == "OrderShipped"
    assert raw.data["carrier"] == "dhl"
    assert raw.data["at"] == datetime(2024, 1, 1, tzinfo=UTC)


def test_registering_later_decodes_to_the_type() -> None:
    payload = EventCodec().encode_events([OrderPlaced(sku="a", qty=1)])
    codec = EventCodec()
    assert isinstance(codec.decode_events(payload)[0], RawEvent)
    codec.register(OrderPlaced)
    assert codec.decode_events(payload) == (OrderPlaced(sku="a", qty=1),)


def test_new_field_with_default_still_decodes_old_payloads() -> None:
    class V1(msgspec.Struct, tag="evolving"):
        a: int

    class V2(msgspec.Struct, tag="evolving"):
        a: int
        b: str = "default"

    payload = EventCodec().encode_events([V1(a=1)])
    assert EventCodec(V2).decode_events(payload) == (V2(a=1, b="default"),)


def test_stored_body_that_no_longer_matches_the_struct_is_an_integrity_error() -> None:
    payload = EventCodec().encode_events([OrderPlaced(sku="a", qty=1)])
    with pytest.raises(IntegrityError, match="order-placed"):
        EventCodec(Other).decode_events(payload)


def test_re_encoded_raw_event_keeps_its_type_name() -> None:
    original = EventCodec().encode_events([OrderPlaced(sku="a", qty=1)])
    (raw,) = EventCodec().decode_events(original)
    copied = EventCodec().encode_events([raw])
    assert EventCodec(OrderPlaced).decode_events(copied) == (OrderPlaced(sku="a", qty=1),)


# -- registration -----------------------------------------------------------------------


def test_registering_the_same_class_twice_is_fine() -> None:
    codec = EventCodec(OrderPlaced)
    codec.register(OrderPlaced)
    codec.register(OrderPlaced)
    assert _roundtrip(codec, [OrderPlaced(sku="a", qty=1)]) == (OrderPlaced(sku="a", qty=1),)


def test_two_classes_with_the_same_tag_are_refused() -> None:
    codec = EventCodec(OrderPlaced)
    with pytest.raises(InvalidInputError) as caught:
        codec.register(Other)
    assert caught.value.argument == "types"
    assert "order-placed" in str(caught.value)
    # the first registration still stands
    assert _roundtrip(codec, [OrderPlaced(sku="a", qty=1)]) == (OrderPlaced(sku="a", qty=1),)


def test_same_tag_in_the_constructor_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        EventCodec(OrderPlaced, Other)


def test_encoding_a_second_class_with_a_taken_name_is_refused() -> None:
    codec = EventCodec(OrderPlaced)
    with pytest.raises(InvalidInputError):
        codec.encode_events([Other(reason="r")])


@pytest.mark.parametrize(
    "not_a_struct", [dict, int, "OrderPlaced", OrderPlaced(sku="a", qty=1), None, RawEvent.__init__]
)
def test_registering_a_non_struct_is_refused(not_a_struct: Any) -> None:
    with pytest.raises(InvalidInputError) as caught:
        EventCodec().register(not_a_struct)
    assert caught.value.argument == "types"


# -- bad events -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "argument"),
    [
        ([1], "events[0]"),
        ([{"a": 1}, "x"], "events[1]"),
        ([{"a": 1}, {"b": 2}, None], "events[2]"),
        ([{1: "a"}], "events[0]"),
        ([{"a": 1}, {"a": object()}], "events[1]"),
        ([Untagged(note="x"), {"n": 2**64}], "events[1]"),
    ],
)
def test_unencodable_events_name_their_index(events: list[Any], argument: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        EventCodec().encode_events(events)
    assert caught.value.argument == argument


@pytest.mark.parametrize("kind", ["event", "metadata"])
def test_non_dict_mappings_are_encoded(kind: str) -> None:
    codec = EventCodec()
    mapping = types.MappingProxyType({"a": 1})
    if kind == "event":
        assert _roundtrip(codec, [mapping]) == ({"a": 1},)
    else:
        assert codec.decode_metadata(codec.encode_metadata(mapping)) == {"a": 1}


# -- bad payloads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        b"\x05" + msgspec.msgpack.encode([[None, 1, {"a": 1}]]),
        b"\xff" + msgspec.msgpack.encode([[None, {"a": 1}]]),
        msgspec.msgpack.encode([[None, {"a": 1}]]),  # no format byte at all
    ],
    ids=["empty", "zero", "format-5", "format-ff", "missing-format-byte"],
)
def test_unknown_format_is_an_integrity_error(payload: bytes) -> None:
    with pytest.raises(IntegrityError, match="format"):
        EventCodec().decode_events(payload)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",
        b"\x91",  # array of one, truncated
        msgspec.msgpack.encode({"a": 1}),
        msgspec.msgpack.encode([[1, {"a": 1}]]),
        msgspec.msgpack.encode([["t"]]),
        msgspec.msgpack.encode([]) + b"\x00",
    ],
    ids=["nothing", "never-used", "truncated", "map", "int-name", "short-envelope", "trailing"],
)
def test_garbage_after_the_format_byte_is_an_integrity_error(body: bytes) -> None:
    with pytest.raises(IntegrityError):
        EventCodec().decode_events(bytes([FORMAT_MSGPACK]) + body)


def test_empty_envelope_list_decodes_to_no_events() -> None:
    assert EventCodec().decode_events(bytes([FORMAT_MSGPACK]) + msgspec.msgpack.encode([])) == ()


# -- metadata ---------------------------------------------------------------------------


def test_metadata_round_trip() -> None:
    codec = EventCodec()
    metadata = {
        "user": "alice",
        "n": 3,
        "ratio": 0.25,
        "ok": True,
        "none": None,
        "when": datetime(2024, 2, 29, tzinfo=UTC),
        "path": ["a", "b"],
        "nested": {"x": b"\x00"},
    }
    assert codec.decode_metadata(codec.encode_metadata(metadata)) == metadata


@pytest.mark.parametrize("empty", [None, b""])
def test_missing_metadata_decodes_empty(empty: bytes | None) -> None:
    assert EventCodec().decode_metadata(empty) == {}


@pytest.mark.parametrize(
    "metadata", [{1: "a"}, {"a": 1, None: 2}, {"a": object()}, {"a": 2**64}, {"a": 1j}], ids=repr
)
def test_bad_metadata_is_refused(metadata: dict[Any, Any]) -> None:
    with pytest.raises(InvalidInputError) as caught:
        EventCodec().encode_metadata(metadata)
    assert caught.value.argument == "metadata"


@pytest.mark.parametrize(
    "data",
    [b"\xc1", b"\x81", msgspec.msgpack.encode([1, 2]), msgspec.msgpack.encode("text")],
    ids=["never-used", "truncated-map", "list", "str"],
)
def test_malformed_metadata_is_an_integrity_error(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        EventCodec().decode_metadata(data)


# -- properties -------------------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SCALARS = st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | st.text()
JSON_LIKE = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=10), JSON_LIKE, max_size=6)


@settings(deadline=None)
@given(st.lists(JSON_OBJECTS, min_size=1, max_size=5))
def test_json_like_mappings_round_trip_exactly(events: list[dict[str, Any]]) -> None:
    codec = EventCodec()
    assert list(_roundtrip(codec, events)) == events


@settings(deadline=None)
@given(JSON_OBJECTS)
def test_json_like_metadata_round_trips_exactly(metadata: dict[str, Any]) -> None:
    codec = EventCodec()
    assert codec.decode_metadata(codec.encode_metadata(metadata)) == metadata


class Everything(msgspec.Struct, tag="everything"):
    i: int
    f: float
    s: str
    b: bytes
    flag: bool
    maybe: str | None
    ints: list[int]
    scores: dict[str, float]
    at: datetime
    line: Line
    anything: Any = None


LINES = st.builds(Line, sku=st.text(max_size=8), qty=INT64, price=st.floats(allow_nan=False))
EVERYTHING = st.builds(
    Everything,
    i=st.integers(min_value=-(2**63), max_value=2**64 - 1),
    f=st.floats(allow_nan=False),
    s=st.text(),
    b=st.binary(max_size=64),
    flag=st.booleans(),
    maybe=st.none() | st.text(max_size=5),
    ints=st.lists(INT64, max_size=5),
    scores=st.dictionaries(st.text(max_size=5), st.floats(allow_nan=False), max_size=4),
    at=st.datetimes(timezones=st.just(UTC)),
    line=LINES,
    anything=JSON_LIKE,
)


@settings(deadline=None)
@given(st.lists(EVERYTHING | LINES, min_size=1, max_size=4))
def test_struct_field_values_round_trip_exactly(events: list[Any]) -> None:
    codec = EventCodec(Everything, Line)
    decoded = _roundtrip(codec, events)
    assert list(decoded) == events
    assert [type(e) for e in decoded] == [type(e) for e in events]


@settings(deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_integrity_error(payload: bytes) -> None:
    codec = EventCodec(OrderPlaced, Untagged)
    try:
        events = codec.decode_events(payload)
    except IntegrityError:
        return
    assert isinstance(events, tuple)


@settings(deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_after_the_format_byte_never_escape_as_foreign_errors(
    body: bytes,
) -> None:
    codec = EventCodec(OrderPlaced, Untagged)
    try:
        events = codec.decode_events(bytes([FORMAT_MSGPACK]) + body)
    except IntegrityError:
        return
    assert isinstance(events, tuple)
