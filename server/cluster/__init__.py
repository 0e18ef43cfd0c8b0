"""Replicas on one host for ``make cluster`` and its test: redis-server, replicas, nginx.

Tooling around the server, not part of it: nothing in ``server/`` imports this room.
"""
