"""Alembic environment: runs against the engine the application hands over."""

from alembic import context

from newsletter.store.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # the alembic CLI, e.g. `alembic revision --autogenerate`
    from newsletter.store.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///subscribers.db")

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    raw = connection.connection.driver_connection if sqlite else None
    if raw is not None:
        # A batch migration rebuilds a table (copy, DROP, rename). With foreign keys
        # enforced, SQLite's DROP TABLE first deletes every row, and ON DELETE CASCADE
        # would empty the tables that reference it. Enforcement can only change outside
        # a transaction, so it is off for the migrations (which check the references
        # themselves: PRAGMA foreign_key_check) and on again before the connection goes
        # back to the pool.
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if raw is not None:
            connection.rollback()
            raw.execute("PRAGMA foreign_keys=ON")
