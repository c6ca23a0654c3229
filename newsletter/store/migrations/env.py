"""Alembic environment: runs against the engine the application hands over."""

from alembic import context

from newsletter.store.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # the alembic CLI, e.g. `alembic revision --autogenerate`
    from newsletter.store.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///subscribers.db")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
