"""Operators' views of a table: the integrity check, the feed read-only."""
