"""Reads: loads, streaming reads, records to the public models."""
