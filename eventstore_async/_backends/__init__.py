"""Storage backends: the protocol the store is written against, the in-memory twin, AWS."""
