"""The Alembic migrations produce exactly the schema of ``schema.py``, on both backends."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from healthid.store.sql.engine import create_engine, current_revision, upgrade
from healthid.store.sql.schema import metadata


async def test_migrations_match_schema_and_are_idempotent(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert await current_revision(engine) is None
        await upgrade(engine)
        await upgrade(engine)  # a second run changes nothing
        assert await current_revision(engine) == "0004"
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), metadata)
            )
        assert diff == []
    finally:
        await engine.dispose()
