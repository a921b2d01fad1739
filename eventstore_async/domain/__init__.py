"""Command handling for DDD: deciders, repositories that re-decide on conflict.

The public names are re-exported from :mod:`eventstore_async`.
"""

from ._cache import Loaded
from ._decider import Decider
from ._repository import Outcome, Repository

__all__ = ["Decider", "Loaded", "Outcome", "Repository"]
