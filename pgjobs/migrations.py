"""Run pgjobs' Alembic migrations from code (`pgjobs migrate`), with clear errors.

`alembic upgrade head` with the repository's alembic.ini does the same; this module finds that file and
turns Alembic's failures (no database, a database migrated by newer code) into one-line messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgjobs.config import Settings, sqlalchemy_url

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent

# The revisions this code ships, oldest first. A worker checks the database against these at start-up
# without importing Alembic and SQLAlchemy (about 0.3 s of its start); tests/test_migrations.py checks
# them against Alembic's script directory, so a new migration cannot leave them behind.
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010", "0011", "0012")
HEAD_REVISION = REVISIONS[-1]


class MigrationError(RuntimeError):
    pass


# The migrations ship inside the package (pgjobs/_alembic is a link to the top-level alembic/ folder that
# the wheel build turns into a copy), so an installed pgjobs can migrate without a checkout.
PACKAGED_SCRIPTS = Path(__file__).resolve().parent / "_alembic"


def alembic_config(settings: Settings) -> Config:
    """The repository's alembic.ini when there is one (or PGJOBS_ALEMBIC_INI), else the packaged scripts."""
    from alembic.config import Config

    ini_env = os.environ.get("PGJOBS_ALEMBIC_INI")
    ini = Path(ini_env) if ini_env else ROOT / "alembic.ini"
    if ini.exists():
        cfg = Config(str(ini))
    elif ini_env:
        raise MigrationError(f"alembic.ini not found at {ini} (PGJOBS_ALEMBIC_INI)")
    else:
        cfg = Config()
        cfg.set_main_option("script_location", str(PACKAGED_SCRIPTS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(settings.require_database()).replace("%", "%%"))
    cfg.attributes["pgjobs_schema"] = settings.schema
    return cfg


def head_revision(settings: Settings) -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head() or ""


def known_revisions(settings: Settings) -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(alembic_config(settings)).walk_revisions()}


def upgrade(settings: Settings, revision: str = "head") -> None:
    from alembic import command

    cfg = alembic_config(settings)
    try:
        command.upgrade(cfg, revision)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Can't locate revision" in text:
            raise MigrationError(
                f"the database is migrated to a revision this pgjobs does not know ({text}); it was upgraded by "
                "newer code: deploy that version or downgrade the database with it") from None
        raise MigrationError(f"migration failed: {text}") from None


def downgrade(settings: Settings, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(settings), revision)


def upgrade_connection(connection: Any, *, schema: str = "pgjobs", revision: str = "head") -> None:
    """Run pgjobs' migrations on a host application's SQLAlchemy `connection`, e.g. at the end of the host's
    own Alembic env.py. pgjobs keeps its own history (`<schema>.alembic_version`), so the host's version
    table is untouched. In an open transaction the work joins it (and commits or rolls back with it); on a
    connection with no transaction open it commits on its own."""
    from alembic.config import Config

    from alembic import command

    ini = Path(os.environ.get("PGJOBS_ALEMBIC_INI", ROOT / "alembic.ini"))
    if not ini.exists():
        raise MigrationError(f"alembic.ini not found at {ini}; set PGJOBS_ALEMBIC_INI")
    cfg = Config(str(ini))
    cfg.attributes["connection"] = connection
    cfg.attributes["pgjobs_schema"] = schema
    # Called from inside the host's env.py, this is an Alembic run nested in another. Alembic keeps its
    # running environment in module-level proxies (`alembic.context`, `alembic.op`) that the inner run
    # removes when it ends: put the host's back so its own run finishes normally.
    import alembic.context
    import alembic.op

    outer = getattr(alembic.context, "_proxy", None), getattr(alembic.op, "_proxy", None)
    try:
        command.upgrade(cfg, revision)
    finally:
        for proxy in outer:
            if proxy is not None:
                proxy._install_proxy()


def database_revision(settings: Settings) -> str | None:
    """The revision recorded in the database's pgjobs version table; None if pgjobs was never migrated there.

    Raises psycopg.OperationalError when the database cannot be reached."""
    import psycopg

    from pgjobs.queries import queries

    with psycopg.connect(settings.require_database(), connect_timeout=5, application_name="pgjobs schema check") as conn:
        try:
            row = conn.execute(queries(settings.schema).schema_revision).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None


def schema_problem(schema: str, revision: str | None, head: str, known: set[str]) -> str | None:
    """Why code whose latest revision is `head` cannot run on a database at `revision`; None when it can.

    - not migrated, or at an older revision this code knows: a problem (run `pgjobs migrate`);
    - at head: fine;
    - at a revision this code does not know: the database was upgraded by newer code. Not a problem for a
      running worker (pgjobs migrations are additive within a release, so old workers keep working during a
      rolling deploy); `pgjobs migrate` refuses it instead (see `upgrade`).
    """
    if revision is None:
        return f"schema '{schema}' is not migrated: run `pgjobs migrate` (or `alembic upgrade head`)"
    if revision != head and revision in known:
        return (f"schema '{schema}' is at revision {revision}, this pgjobs needs {head}: "
                "run `pgjobs migrate` (or `alembic upgrade head`)")
    return None


def check_schema(settings: Settings) -> str | None:
    """`schema_problem` for the configured database (raises psycopg.OperationalError if unreachable)."""
    return schema_problem(settings.schema, database_revision(settings), HEAD_REVISION, set(REVISIONS))
