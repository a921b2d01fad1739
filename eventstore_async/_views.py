"""Read-model documents written by projections (``Subscription.project``)."""

from __future__ import annotations

import re
from typing import Any

from ._errors import InvalidInputError
from ._validation import check_aggregate_id

__all__ = ["check_name", "check_view_key", "check_view_name"]

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_name(value: Any, argument: str) -> str:
    """Subscription and view names: 1 to 64 letters, digits and ._-"""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidInputError(argument, "must be 1 to 64 characters of letters, digits and ._-")
    return value


def check_view_name(value: Any) -> str:
    return check_name(value, "view")


def check_view_key(value: Any) -> str:
    """Document keys follow the rules of aggregate ids."""
    return check_aggregate_id(value, "key")
