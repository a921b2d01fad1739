"""Oversized payloads in S3, through the ObjectStore protocol only."""
