"""The async API on a real Postgres: enqueue_async in the caller's transaction (psycopg AsyncConnection and
SQLAlchemy AsyncSession), the bulk variant, and AsyncAdmin's validation and errors."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

import pgjobs
from pgjobs.admin import AdminError, NotFound, PermissionDenied
from pgjobs.config import Settings


def _jobs(db) -> list[tuple]:
    return db.execute("SELECT task, args, state FROM pgjobs.jobs ORDER BY id").fetchall()


def test_a_rolled_back_enqueue_async_leaves_no_job_and_a_committed_one_exists(db_url: str, db) -> None:
    settings = Settings.load(database_url=db_url)

    async def scenario() -> int:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            await conn.execute("CREATE TABLE orders (id int)")
            await conn.commit()
            async with conn.transaction(force_rollback=True):
                await conn.execute("INSERT INTO orders VALUES (1)")
                await pgjobs.enqueue_async("pgjobs.noop", {"order": 1}, conn=conn, settings=settings)
            async with conn.transaction():
                await conn.execute("INSERT INTO orders VALUES (2)")
                return await pgjobs.enqueue_async("pgjobs.noop", {"order": 2}, conn=conn, settings=settings)

    job_id = asyncio.run(scenario())
    assert _jobs(db) == [("pgjobs.noop", {"order": 2}, "available")]
    assert db.execute("SELECT id FROM pgjobs.jobs").fetchone()[0] == job_id
    assert db.execute("SELECT array_agg(id) FROM orders").fetchone()[0] == [2]


def test_enqueue_async_in_a_sqlalchemy_async_session_commits_with_it(db_url: str, db) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    settings = Settings.load(database_url=db_url)
    engine = create_async_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))

    async def scenario() -> None:
        async with AsyncSession(engine) as session:
            await session.execute(text("SELECT 1"))
            await pgjobs.enqueue_async("pgjobs.noop", {"n": 1}, conn=session, settings=settings)
            await session.rollback()
        async with AsyncSession(engine) as session, session.begin():
            await pgjobs.enqueue_async("pgjobs.noop", {"n": 2}, conn=session, settings=settings)
            await pgjobs.enqueue_many_async("pgjobs.noop", [{"n": 3}, {"n": 4}], conn=session, settings=settings)
        await engine.dispose()

    asyncio.run(scenario())
    assert [r[1] for r in _jobs(db)] == [{"n": 2}, {"n": 3}, {"n": 4}]


def test_enqueue_many_async_checks_every_argument_set(db_url: str, db) -> None:
    settings = Settings.load(database_url=db_url)

    async def scenario() -> int:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            with pytest.raises(AdminError, match="job 2: args: must be a JSON object"):
                await pgjobs.enqueue_many_async("pgjobs.noop", [{}, [1, 2]], conn=conn, settings=settings)
            await conn.rollback()
            n = await pgjobs.enqueue_many_async("pgjobs.noop", [{"i": i} for i in range(100)], conn=conn,
                                                settings=settings)
            await conn.commit()
            return n

    assert asyncio.run(scenario()) == 100
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()[0] == 100


def test_enqueue_async_refuses_bad_input_before_sending_anything(db_url: str, db) -> None:
    settings = Settings.load(database_url=db_url)

    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            with pytest.raises(AdminError, match="task 'app.nope' is not registered"):
                await pgjobs.enqueue_async("app.nope", {}, conn=conn, settings=settings)
            with pytest.raises(AdminError, match="priority"):
                await pgjobs.enqueue_async("pgjobs.noop", {}, conn=conn, settings=settings, priority=10**6)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE, "nothing was sent"
        with psycopg.connect(db_url) as sync_conn:
            with pytest.raises(AdminError, match="takes a psycopg AsyncConnection"):
                await pgjobs.enqueue_async("pgjobs.noop", {}, conn=sync_conn, settings=settings)

    asyncio.run(scenario())
    assert _jobs(db) == []


def test_async_admin_has_the_admin_api_with_its_errors(db_url: str, db) -> None:
    settings = Settings.load(database_url=db_url)
    admin = pgjobs.AsyncAdmin(settings, actor="test")

    async def scenario() -> None:
        job_id = await admin.enqueue("pgjobs.noop", {"x": 1})
        assert (await admin.get_job(job_id))["args"] == {"x": 1}
        assert [j["id"] for j in await admin.list_jobs(state="available")] == [job_id]
        with pytest.raises(NotFound, match="job 999999 does not exist"):
            await admin.get_job(999999)
        with pytest.raises(AdminError, match="cron"):
            await admin.add_schedule("bad", cron="*/61 * * * *", task="pgjobs.noop")
        with pytest.raises(PermissionDenied):
            await admin.as_user("viewer1", "viewer").enqueue("pgjobs.noop")
        # Two calls at once, each on its own thread and connection.
        a, b = await asyncio.gather(admin.enqueue("pgjobs.noop"), admin.enqueue("pgjobs.noop"))
        assert a != b

    asyncio.run(scenario())
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM pgjobs.audit WHERE action = 'enqueue'").fetchone()[0] == 3
