"""A small order domain shared by the tests."""

from __future__ import annotations

import msgspec


class OrderPlaced(msgspec.Struct, tag=True, frozen=True):
    sku: str
    qty: int


class OrderShipped(msgspec.Struct, tag="shipped", frozen=True):
    carrier: str


EVENT_TYPES: tuple[type[msgspec.Struct], ...] = (OrderPlaced, OrderShipped)
