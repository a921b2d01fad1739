"""Writes: append planning, checks, sending and settling, snapshot saves."""
