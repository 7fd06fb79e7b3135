"""Redis-backed stores: the coordinator's system of record."""
