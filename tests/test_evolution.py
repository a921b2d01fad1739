"""Events evolve: versioned types, upcaster chains, renames, and change sets that no
longer decode (README "Evolving events")."""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore_async import (
    Decider,
    EventStore,
    EventType,
    IntegrityError,
    InvalidInputError,
    RawEvent,
)
from eventstore_async._codec import (
    FORMAT_FRAMED,
    FORMAT_FRAMED_VERSIONED,
    FORMAT_MSGPACK,
    FORMAT_MSGPACK_VERSIONED,
    EventCodec,
)

from .conftest import StoreFactory, backend_of

pytestmark = pytest.mark.anyio


# Version 1 of a cart event: a price in cents as one number.
class PriceSetV1(msgspec.Struct, tag="PriceSet", frozen=True):
    sku: str
    cents: int


# Version 3: the price split into amount and currency (v2), the sku renamed (v3).
class PriceSet(msgspec.Struct, tag="PriceSet", frozen=True):
    product: str
    amount: int
    currency: str


def v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    return {"sku": body["sku"], "amount": body["cents"], "currency": "EUR"}


def v2_to_v3(body: dict[str, Any]) -> dict[str, Any]:
    return {"product": body.pop("sku"), **body}


PRICE_V3 = EventType(PriceSet, version=3, upcasters={1: v1_to_v2, 2: v2_to_v3})
EXPECTED = PriceSet(product="a", amount=250, currency="EUR")


class Basket(msgspec.Struct, tag="Basket", frozen=True):
    lines: int


class Cart(msgspec.Struct, tag="Cart", frozen=True):  # Basket, renamed
    lines: int


# -- through the store ------------------------------------------------------------------


async def test_v1_events_load_as_v3_everywhere(make_store: StoreFactory) -> None:
    old = await make_store(types=(PriceSetV1,), feed_shards=1, offload_threshold_bytes=2048)
    await old.append("cart-1", [PriceSetV1(sku="a", cents=250)], expected_version=0)
    big = [PriceSetV1(sku="a", cents=250)] * 200  # over the threshold: offloaded
    await old.append("cart-1", big, expected_version=1)
    objects = backend_of(old).objects
    assert [info async for info in objects.list(old.config.key_prefix)]  # it is in S3

    new = await make_store(types=(PRICE_V3,), feed_shards=1)
    history = await new.load("cart-1")
    assert history.events == [EXPECTED] * 201
    assert [cs.events async for cs in new.read("cart-1")] == [(EXPECTED,), (EXPECTED,) * 200]
    streamed = [event async for event in new.iter_events("cart-1", 2)]
    assert streamed == [EXPECTED] * 200
    with anyio.fail_after(10):
        async with new.subscribe("prices", poll_interval=0.01) as subscription:
            first = await anext(aiter(subscription))
            second = await anext(aiter(subscription))
    assert (first.events, second.events) == ((EXPECTED,), (EXPECTED,) * 200)


async def test_an_old_store_reads_newer_versions_as_raw_events(make_store: StoreFactory) -> None:
    new = await make_store(types=(PRICE_V3,))
    await new.append("cart-1", [EXPECTED], expected_version=0)
    old = await make_store(types=(PriceSetV1,))
    (event,) = (await old.load("cart-1")).events
    assert event == RawEvent(
        "PriceSet", {"type": "PriceSet", "product": "a", "amount": 250, "currency": "EUR"}, 3
    )
    assert event.version == 3
    # Written back by the old store, it keeps its version and reads as v3 again.
    await old.append("cart-2", [event], expected_version=0)
    assert (await new.load("cart-2")).events == [EXPECTED]


async def test_a_renamed_type_loads_through_its_alias(make_store: StoreFactory) -> None:
    old = await make_store(types=(Basket,))
    await old.append("cart-1", [Basket(lines=2)], expected_version=0)
    new = await make_store(types=(EventType(Cart, aliases=("Basket",)),))
    assert (await new.load("cart-1")).events == [Cart(lines=2)]


async def test_an_upcaster_that_raises_leaves_the_event_raw(make_store: StoreFactory) -> None:
    old = await make_store(types=(PriceSetV1,))
    await old.append("cart-1", [PriceSetV1(sku="a", cents=250)], expected_version=0)

    def broken(body: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("price")

    new = await make_store(
        types=(EventType(PriceSet, version=3, upcasters={1: broken, 2: v2_to_v3}),)
    )
    (event,) = (await new.load("cart-1")).events
    assert isinstance(event, RawEvent)
    assert (event.type, event.version, event.data["cents"]) == ("PriceSet", 1, 250)
    assert event.error is not None and "upcasters[1]" in event.error


async def test_a_body_that_no_longer_fits_names_type_version_and_field(
    make_store: StoreFactory,
) -> None:
    old = await make_store(types=(PriceSetV1,))
    await old.append("cart-1", [PriceSetV1(sku="a", cents=250)], expected_version=0)

    class Changed(msgspec.Struct, tag="PriceSet", frozen=True):  # reshaped, no version bump
        sku: str
        cents: str

    new = await make_store(types=(Changed,))
    with pytest.raises(IntegrityError) as caught:
        await new.load("cart-1")
    message = str(caught.value)
    for part in ("'PriceSet'", "stored version 1", "change set 1", "'cart-1'", "field 'cents'"):
        assert part in message
    with pytest.raises(IntegrityError, match="field 'cents'"):
        [event async for event in new.iter_events("cart-1", 1)]


async def test_views_and_snapshots_decode_the_same_in_a_fresh_store(
    make_store: StoreFactory,
) -> None:
    """Types are not registered by appending: a fresh process reads what this one
    does, and an explicit type decodes views and snapshot states in both."""
    writer = await make_store(types=(), feed_shards=1)
    await writer.append("cart-1", [Basket(lines=1)], expected_version=0)
    await writer.save_snapshot("cart-1", 1, Cart(lines=1), schema="cart-v1")
    async with writer.subscribe("carts-view") as subscription:
        await anext(aiter(subscription))
        await subscription.project("carts", put={"cart-1": Cart(lines=1)})
    fresh = await make_store(types=(), feed_shards=1)
    for store in (writer, fresh):
        assert await store.get_view("carts", "cart-1") == RawEvent(
            "Cart", {"type": "Cart", "lines": 1}
        )
        assert await store.get_view("carts", "cart-1", type=Cart) == Cart(lines=1)
        history = await store.load("cart-1", snapshot_schema="cart-v1", state_type=Cart)
        assert history.snapshot is not None and history.snapshot.state == Cart(lines=1)
        plain = await store.load("cart-1", snapshot_schema="cart-v1")
        assert plain.snapshot is not None and isinstance(plain.snapshot.state, RawEvent)
        assert (await store.load("cart-1")).events == [
            RawEvent("Basket", {"type": "Basket", "lines": 1})
        ]
    with pytest.raises(InvalidInputError, match="type"):
        await fresh.get_view("carts", "cart-1", type=dict)  # type: ignore[arg-type]


# -- a change set that does not decode, seen by a subscription ---------------------------


class Strict(msgspec.Struct, tag="PriceSet", frozen=True):
    sku: str
    cents: str  # the stored bodies hold ints: undecodable


async def _poisoned_feed(make_store: StoreFactory, *, offloaded_gone: bool) -> EventStore:
    """cart-1 v1 is poison (undecodable, or its S3 object deleted); cart-2 v1 is fine."""
    writer = await make_store(types=(PriceSetV1,), feed_shards=1, offload_threshold_bytes=1024)
    poison = [PriceSetV1(sku="a", cents=1)] * (100 if offloaded_gone else 1)
    await writer.append("cart-1", poison, expected_version=0)
    await writer.append("cart-2", [{"fine": True}], expected_version=0)
    if offloaded_gone:
        objects = backend_of(writer).objects
        assert objects is not None
        keys = [info.key async for info in objects.list(writer.config.key_prefix)]
        assert len(keys) == 1
        await objects.delete(keys[0])
        return await make_store(types=(PriceSetV1,), feed_shards=1)
    return await make_store(types=(Strict,), feed_shards=1)


@pytest.mark.parametrize("offloaded_gone", [False, True], ids=["undecodable", "object-missing"])
async def test_a_poison_change_set_stops_a_subscription_on_every_restart(
    make_store: StoreFactory, offloaded_gone: bool
) -> None:
    store = await _poisoned_feed(make_store, offloaded_gone=offloaded_gone)
    for _ in range(2):  # the same place after a restart
        with anyio.fail_after(10), pytest.raises(IntegrityError):
            async with store.subscribe("view", poll_interval=0.01) as subscription:
                await anext(aiter(subscription))


@pytest.mark.parametrize("offloaded_gone", [False, True], ids=["undecodable", "object-missing"])
async def test_on_undecodable_raw_delivers_the_poison_change_set_and_moves_on(
    make_store: StoreFactory, offloaded_gone: bool
) -> None:
    store = await _poisoned_feed(make_store, offloaded_gone=offloaded_gone)
    settings: dict[str, Any] = {"poll_interval": 0.01, "on_undecodable": "raw"}
    with anyio.fail_after(10):
        async with store.subscribe("view", **settings) as subscription:
            poison = await anext(aiter(subscription))
            await subscription.checkpoint()
    assert poison.aggregate_id == "cart-1"
    raw = poison.events[0]
    assert isinstance(raw, RawEvent) and raw.error is not None
    if offloaded_gone:
        assert (raw.type, raw.data, raw.version) == ("", None, 0)
        assert "missing" in raw.error and poison.event_count == 100
    else:
        assert (raw.type, raw.version, raw.data["cents"]) == ("PriceSet", 1, 1)
        assert "cents" in raw.error
    with anyio.fail_after(10):  # the checkpoint moved past it: the next consumer goes on
        async with store.subscribe("view", poll_interval=0.01) as subscription:
            following = await anext(aiter(subscription))
    assert (following.aggregate_id, following.events) == ("cart-2", ({"fine": True},))


async def test_on_undecodable_is_checked(make_store: StoreFactory) -> None:
    store = await make_store(feed_shards=1)
    with pytest.raises(InvalidInputError, match="on_undecodable"):
        store.subscribe("view", on_undecodable="skip")  # type: ignore[arg-type]


# -- registration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upcasters", "problem"),
    [
        (None, "no upcaster from version 1 to 2"),
        ({1: v1_to_v2}, "no upcaster from version 2 to 3"),
        ({1: v1_to_v2, 2: v2_to_v3, 3: v2_to_v3}, "keys 3 are not versions 1..2"),
        ({0: v1_to_v2, 1: v1_to_v2, 2: v2_to_v3}, "keys 0 are not"),
        ({1: v1_to_v2, 2: "not a function"}, "must be a function"),
    ],
)
def test_missing_or_stray_upcasters_are_refused_at_register(upcasters: Any, problem: str) -> None:
    store = EventStore.in_memory()
    with pytest.raises(InvalidInputError, match=problem):
        store.register(PriceSet, version=3, upcasters=upcasters)


@pytest.mark.parametrize("version", [0, -1, True, 1.5, "2"])
def test_bad_versions_are_refused(version: Any) -> None:
    with pytest.raises(InvalidInputError, match="version"):
        EventStore.in_memory().register(PriceSet, version=version)


def test_a_name_or_alias_of_another_type_is_refused() -> None:
    store = EventStore.in_memory(types=[Basket])
    with pytest.raises(InvalidInputError, match="alias 'Basket' is already the name of Basket"):
        store.register(Cart, aliases=("Basket",))
    store.register(Cart, aliases=("Trolley",))
    with pytest.raises(InvalidInputError, match="'Cart' is already the name of Cart"):
        store.register(PriceSet, aliases=("Cart",))

    class Trolley(msgspec.Struct, frozen=True):
        lines: int

    with pytest.raises(InvalidInputError, match="'Trolley' is already the alias of Cart"):
        store.register(Trolley)
    with pytest.raises(InvalidInputError, match="own name"):
        store.register(Cart, aliases=("Cart",))
    with pytest.raises(InvalidInputError, match="tuple of older type names"):
        store.register(Cart, aliases="Trolley")


def test_re_registering_a_type_replaces_its_registration() -> None:
    codec = EventCodec(EventType(Cart, aliases=("Basket",)))
    payload = EventCodec(Basket).encode_events([Basket(lines=1)])
    assert codec.decode_events(payload) == (Cart(lines=1),)
    codec.register(Cart)  # without the alias now
    assert codec.decode_events(payload) == (RawEvent("Basket", {"type": "Basket", "lines": 1}),)
    codec.register(Basket)  # the name is free again


# -- formats ------------------------------------------------------------------------------


def test_format_bytes() -> None:
    """Until a type is registered above version 1, payloads are what the releases
    before versions wrote (0x01, 0x02): they can read them during a rolling upgrade."""
    plain = EventCodec(PriceSetV1)
    assert plain.encode_events([PriceSetV1(sku="a", cents=1)])[0] == FORMAT_MSGPACK
    assert plain.framed_header() == bytes((FORMAT_FRAMED,))
    versioned = EventCodec(PRICE_V3)
    assert versioned.encode_events([EXPECTED])[0] == FORMAT_MSGPACK_VERSIONED
    assert versioned.framed_header() == bytes((FORMAT_FRAMED_VERSIONED,))
    raw_v3 = RawEvent("PriceSet", {"product": "a", "amount": 1, "currency": "EUR"}, 3)
    assert plain.encode_events([raw_v3])[0] == FORMAT_MSGPACK_VERSIONED
    assert plain.framed_header([raw_v3]) == bytes((FORMAT_FRAMED_VERSIONED,))


def test_a_later_version_in_an_unversioned_stream_is_refused() -> None:
    codec = EventCodec()
    buffer = bytearray(codec.framed_header())
    raw_v3 = RawEvent("PriceSet", {"amount": 1}, 3)
    with pytest.raises(InvalidInputError, match="version 3"):
        codec.append_frame(buffer, 0, raw_v3, versioned=False)
    assert buffer == bytearray((FORMAT_FRAMED,))


names = st.text(min_size=1, max_size=12)
bodies = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=20)),
    max_size=5,
)
raw_events = st.builds(RawEvent, type=names, data=bodies, version=st.integers(1, 2**31))


@given(events=st.lists(st.one_of(raw_events, bodies), min_size=1, max_size=8))
def test_versioned_envelopes_round_trip(events: list[Any]) -> None:
    codec = EventCodec()
    expected = tuple(events)
    assert codec.decode_events(codec.encode_events(events)) == expected
    for versioned in (True, False):
        if not versioned and any(isinstance(e, RawEvent) and e.version != 1 for e in events):
            continue
        buffer = bytearray((FORMAT_FRAMED_VERSIONED if versioned else FORMAT_FRAMED,))
        for index, event in enumerate(events):
            codec.append_frame(buffer, index, event, versioned=versioned)
        assert codec.decode_events(bytes(buffer)) == expected


@given(cents=st.integers(-(2**63), 2**63 - 1), sku=st.text(max_size=20), stored=st.integers(1, 3))
def test_every_stored_version_upcasts_to_the_current_one(cents: int, sku: str, stored: int) -> None:
    bodies_by_version = {
        1: {"sku": sku, "cents": cents},
        2: {"sku": sku, "amount": cents, "currency": "EUR"},
        3: {"product": sku, "amount": cents, "currency": "EUR"},
    }
    payload = EventCodec().encode_events([RawEvent("PriceSet", bodies_by_version[stored], stored)])
    expected = PriceSet(product=sku, amount=cents, currency="EUR")
    assert EventCodec(PRICE_V3).decode_events(payload) == (expected,)


def test_a_struct_that_would_not_decode_back_is_refused_even_unregistered() -> None:
    """Registering its type later must not make the aggregate unloadable."""
    with pytest.raises(InvalidInputError, match=r"events\[0\]"):
        EventCodec().encode_events([PriceSetV1(sku="a", cents="250")])  # type: ignore[arg-type]


def test_a_stored_version_below_1_is_malformed() -> None:
    payload = bytes((FORMAT_MSGPACK_VERSIONED,)) + msgspec.msgpack.encode([["PriceSet", 0, {}]])
    with pytest.raises(IntegrityError, match="version 0"):
        EventCodec(PRICE_V3).decode_events(payload)


def test_several_types_register_at_version_1_as_before() -> None:
    store = EventStore.in_memory()
    store.register(Basket, PriceSetV1)
    with pytest.raises(InvalidInputError, match="one type at a time"):
        store.register(Cart, PriceSet, version=2, upcasters={1: v1_to_v2})


async def test_the_command_layer_folds_upcast_events(make_store: StoreFactory) -> None:
    old = await make_store(types=(PriceSetV1,))
    await old.append("cart-1", [PriceSetV1(sku="a", cents=250)], expected_version=0)
    new = await make_store(types=(PRICE_V3,))

    def evolve(state: list[Any], event: Any) -> list[Any]:
        return [*state, event]

    loaded = await new.repository(Decider(list, evolve)).get("cart-1")
    assert (loaded.version, loaded.state) == (1, [EXPECTED])
