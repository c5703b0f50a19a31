"""Durable storage: SQLAlchemy Core on SQLite (embedded default) or PostgreSQL (asyncpg)."""
