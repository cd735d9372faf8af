"""Several evota nodes on one PostgreSQL (the system of record) and one Redis (coordination).

Unset ``EVOTA_REDIS_URL`` and nothing here runs: one node owns every connection and runner.
See docs/cluster.md for who talks to whom.
"""
