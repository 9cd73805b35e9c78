"""Alembic environment for pgjobs.

- The URL comes from `config.attributes["connection"]` (a host application's or pgjobs' own), else
  `sqlalchemy.url`, else PGJOBS_DATABASE_URL / DATABASE_URL.
- Every table and Alembic's version table live in the pgjobs schema (PGJOBS_SCHEMA, default `pgjobs`), so
  pgjobs' history never collides with a host application's own Alembic history.
- Migrations run under a transaction-scoped advisory lock: two deploys migrating at once take turns.
"""

from __future__ import annotations

from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from sqlalchemy import Connection, create_engine, pool, text
from sqlalchemy.schema import CreateSchema

from alembic import context
from pgjobs.config import Settings, sqlalchemy_url
from pgjobs.schema import build_metadata

config = context.config
settings = Settings.load()
schema = config.attributes.get("pgjobs_schema") or settings.schema
target_metadata = build_metadata(schema)

# The key pgjobs' migrations serialize on: classid 'pj' (0x706a), objid 0.
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(28778, 0)"


# The partitions of `jobs` (ring segments, parked, daily history) are created and dropped at run time
# (pgjobs/storage.py): they are not in the metadata, which describes their parent.
PARTITION_PREFIXES = ("jobs_ring_", "jobs_parked", "jobs_done_", "jobs_failed_")


def include_name(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    if type_ == "schema":
        return name == schema
    if type_ == "table":
        return name is not None and not name.startswith(PARTITION_PREFIXES)
    return True


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=include_name,
        compare_type=True,
        compare_server_default=False,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or sqlalchemy_url(settings.require_database()),
        target_metadata=target_metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=include_name,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or sqlalchemy_url(settings.require_database())
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        connection.execute(text(MIGRATION_LOCK))
        connection.execute(CreateSchema(schema, if_not_exists=True))
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
