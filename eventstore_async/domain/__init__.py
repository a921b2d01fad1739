"""Command handling for DDD: deciders, repositories that re-decide on conflict.

The public names are re-exported from :mod:`eventstore_async`.
"""

from ._aggregate import Aggregate, applies
from ._cache import Loaded
from ._decider import Decider
from ._repository import Outcome, Repository

__all__ = ["Aggregate", "Decider", "Loaded", "Outcome", "Repository", "applies"]
