"""Ports and adapters for state: SQL (durable, shared) and the ephemeral store (TTL'd)."""
