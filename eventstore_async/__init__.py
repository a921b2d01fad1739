"""eventstore_async."""
