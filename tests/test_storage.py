"""Segmented storage (storage.py, migration 0005): claims lock only live segments, reclaim is a TRUNCATE that a
held horizon cannot stop and a reader only postpones, finished jobs live in daily history partitions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from conftest import wait_for
from pgjobs import Admin, migrations, storage
from pgjobs.config import Settings
from pgjobs.queries import queries
from pgjobs.storage import Rotator, SegmentCache

q = queries("pgjobs")


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """No waiting between the ring's steps: the tests drive them one by one."""
    for name in ("ROTATE_EVERY", "ANNOUNCE", "CLOSE_GRACE", "RECLAIM_DELAY"):
        monkeypatch.setattr(storage, name, 0.0)


@pytest.fixture
def rotator(settings: Settings, fast: None) -> Iterator[Rotator]:
    with ConnectionPool(settings.database_url, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        yield Rotator(pool, q, settings)


def segments(db: psycopg.Connection) -> dict[int, str]:
    return dict(db.execute("SELECT seg, state FROM pgjobs.segments ORDER BY seg").fetchall())


def claim(conn: psycopg.Connection, segs: list[int], limit: int = 100) -> list[tuple]:
    return conn.execute(q.claim_jobs, {"queue": "default", "queues": ["default"], "limit": limit, "segs": segs,
                                       "worker_id": 1, "worker": "w"}, prepare=False).fetchall()


SEG = 11  # a claim row's column of the job's segment (worker.ClaimRow)


def complete(conn: psycopg.Connection, rows: list[tuple]) -> int:
    n = len(rows)
    return conn.execute(q.complete_jobs, {
        "ids": [r[0] for r in rows], "attempts": [r[4] for r in rows], "segs": [r[SEG] for r in rows],
        "in_segs": sorted({r[SEG] for r in rows}), "waited": [0.0] * n, "seconds": [0.0] * n,
        "results": [None] * n, "worker_id": 1}, prepare=False).rowcount


def locked_relations(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute(
        """SELECT c.relname FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
           WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND c.relkind IN ('r', 'p')""")}


def test_a_claim_locks_only_the_segments_it_names(admin: Admin, db_url: str) -> None:
    admin.enqueue_many("pgjobs.noop", [{}] * 5)
    with psycopg.connect(db_url) as conn:
        segs = SegmentCache(q).get(conn)
        conn.commit()
        assert segs == [0, 1, 2], "parked, the open segment and the announced one"
        rows = claim(conn, segs)
        assert len(rows) == 5
        locked = {r for r in locked_relations(conn) if r.startswith("jobs")}
        assert locked == {"jobs", "jobs_parked", "jobs_ring_1", "jobs_ring_2"}, locked
        conn.rollback()


def test_a_completion_moves_the_job_to_its_day_of_history(admin: Admin, db: psycopg.Connection) -> None:
    job_id = admin.enqueue("pgjobs.noop")
    with db.transaction():
        rows = claim(db, [0, 1, 2])
    assert complete(db, rows) == 1
    where = db.execute("SELECT tableoid::regclass::text, state FROM pgjobs.jobs WHERE id = %s", (job_id,)).fetchone()
    day = db.execute("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')").fetchone()[0]
    assert where == (f"pgjobs.jobs_done_{day}", "completed")


def test_a_held_horizon_does_not_stop_a_segment_from_being_truncated(admin: Admin, db: psycopg.Connection,
                                                                     db_url: str, rotator: Rotator) -> None:
    """An idle-in-transaction session holding an xid and a snapshot: every claimed and completed job of the
    segment is garbage vacuum could not remove; TRUNCATE removes it, and the segment starts empty again."""
    with psycopg.connect(db_url, application_name="horizon holder") as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT txid_current(), count(*) FROM pgjobs.schedules")
        admin.enqueue_many("pgjobs.noop", [{}] * 2000)
        for _ in range(20):
            with db.transaction():
                rows = claim(db, [0, 1, 2])
            complete(db, rows)
        assert db.execute("SELECT pg_relation_size('pgjobs.jobs_ring_1')").fetchone()[0] > 100_000
        assert rotator.rotate(db)
        assert segments(db)[1] == "closed" and segments(db)[2] == "open" and segments(db)[3] == "next"
        rotator.evacuate(db)
        assert segments(db)[1] == "reclaim"
        assert rotator.reclaim(db) == 1
        assert segments(db)[1] == "free"
        assert db.execute("SELECT pg_relation_size('pgjobs.jobs_ring_1')").fetchone()[0] == 0
        assert holder.execute("SELECT backend_xid IS NOT NULL FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                              ).fetchone()[0], "the horizon was held all along"
        holder.rollback()
    assert db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'completed'").fetchone()[0] == 2000


def test_leftovers_of_a_closed_segment_move_to_parked_and_keep_working(admin: Admin, db: psycopg.Connection,
                                                                       rotator: Rotator) -> None:
    """A job still running when its segment is reclaimed moves to parked: its completion finds it there."""
    running = admin.enqueue("pgjobs.noop")
    with db.transaction():
        rows = claim(db, [0, 1, 2], limit=1)
    waiting = admin.enqueue("pgjobs.noop")
    rotator.rotate(db)
    rotator.evacuate(db)
    assert rotator.reclaim(db) == 1
    place = dict(db.execute("SELECT id, seg FROM pgjobs.jobs").fetchall())
    assert place == {running: 0, waiting: 0}
    with db.transaction():
        assert [r[0] for r in claim(db, [0, 2, 3])] == [waiting]
    assert complete(db, rows) == 0, "not in the segment it was claimed from"
    assert complete(db, [(*rows[0][:SEG], 0, *rows[0][SEG + 1:])]) == 1, "found in parked"


def test_a_repeatable_read_reader_postpones_reclaim_without_blocking_claims(admin: Admin, db: psycopg.Connection,
                                                                            db_url: str, rotator: Rotator,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The reclaim waits a whole second for the reader: a claim queued behind it would wait that long too.
    monkeypatch.setattr(storage, "LOCK_TIMEOUT_MS", 1000)
    admin.enqueue_many("pgjobs.noop", [{}] * 10)
    with db.transaction():
        complete(db, claim(db, [0, 1, 2]))
    rotator.rotate(db)
    rotator.evacuate(db)
    assert segments(db)[1] == "reclaim"
    with psycopg.connect(db_url) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT state, count(*) FROM pgjobs.jobs GROUP BY state").fetchall()
        # The reclaim waits (up to its lock timeout) for the reader; claims meanwhile never wait for it.
        results: list[int] = []
        t = threading.Thread(target=lambda: results.append(rotator.reclaim(psycopg.connect(db_url, autocommit=True))))
        t.start()
        admin.enqueue_many("pgjobs.noop", [{}] * 5)
        slowest = 0.0
        with psycopg.connect(db_url, autocommit=True) as claimer:
            while t.is_alive():
                started = time.monotonic()
                claim(claimer, SegmentCache(q).get(claimer), limit=1)
                slowest = max(slowest, time.monotonic() - started)
        t.join()
        assert results == [0], "the reader holds the segment: skipped"
        assert slowest < 0.5, f"a claim waited {slowest:.3f}s behind the waiting TRUNCATE"
        assert segments(db)[1] == "reclaim"
        reader.rollback()
    assert rotator.reclaim(db) == 1


def test_the_ring_grows_while_no_segment_can_be_reclaimed(admin: Admin, db: psycopg.Connection, db_url: str,
                                                         rotator: Rotator) -> None:
    with psycopg.connect(db_url) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM pgjobs.jobs").fetchall()
        for _ in range(20):
            admin.enqueue("pgjobs.noop")
            rotator.rotate(db)
        reader.rollback()
    assert max(segments(db)) > 16, "segments were added instead of waiting for the reader"
    assert admin.enqueue_many("pgjobs.noop", [{}] * 3) == 3


def test_a_unique_key_stays_unique_across_rotations(admin: Admin, db: psycopg.Connection, rotator: Rotator) -> None:
    first = admin.enqueue("pgjobs.noop", unique_key="k")
    rotator.rotate(db)
    rotator.rotate(db)
    assert admin.enqueue("pgjobs.noop", unique_key="k") == first
    with pytest.raises(psycopg.errors.CheckViolation, match="ck_jobs_unique_parked"):
        db.execute("INSERT INTO pgjobs.jobs (task, unique_key) VALUES ('pgjobs.noop', 'k2')")


def test_a_cron_slot_is_fenced_by_job_slots(db: psycopg.Connection) -> None:
    sid = db.execute("INSERT INTO pgjobs.schedules (name, task, cron) VALUES ('s', 'pgjobs.noop', '* * * * *') "
                     "RETURNING id").fetchone()[0]
    params = {"schedule_id": [sid], "slot": ["2026-01-01T00:00:00Z"], "due": ["2026-01-01T00:00:00Z"],
              "state": ["available"], "note": [None], "backfilled": False, "overlap_allow": None}
    assert len(db.execute(q.insert_due_slots, params).fetchall()) == 1
    assert db.execute(q.insert_due_slots, params).fetchall() == [], "the same slot again: nothing"
    assert db.execute("SELECT count(*) FROM pgjobs.job_slots").fetchone()[0] == 1


def test_expired_history_days_are_truncated_and_dropped(db: psycopg.Connection, settings: Settings,
                                                        rotator: Rotator) -> None:
    db.execute("""INSERT INTO pgjobs.jobs (task, state, started_at, finished_at, seg)
                  SELECT 'pgjobs.noop', 'completed', now() - interval '20 days', now() - interval '20 days', 1
                  FROM generate_series(1, 100)""")
    rotator.maintain_history(db)  # an old day appears once the leftovers are evacuated: create it by hand
    day = db.execute("SELECT floor(extract(epoch FROM now() - interval '20 days') / 86400)::int").fetchone()[0]
    name = storage.history_name("done", day)
    db.execute(f"CREATE TABLE pgjobs.{name} PARTITION OF pgjobs.jobs FOR VALUES FROM ({100000 + day}) TO "
               f"({100001 + day})")
    rotator.rotate(db)
    rotator.evacuate(db)
    assert db.execute("SELECT count(*) FROM pgjobs.jobs WHERE seg = %s", (100000 + day,)).fetchone()[0] == 100
    rotator.maintain_history(db)
    assert db.execute("SELECT to_regclass(%s)", (f"pgjobs.{name}",)).fetchone()[0] is None
    today = db.execute("SELECT floor(extract(epoch FROM now()) / 86400)::int").fetchone()[0]
    assert db.execute("SELECT to_regclass(%s)", (f"pgjobs.{storage.history_name('failed', today + 7)}",)
                      ).fetchone()[0] is not None, "a week ahead is ready"


def test_upgrade_to_segmented_storage_keeps_every_job(empty_db_url: str) -> None:
    settings = Settings.load(database_url=empty_db_url)
    migrations.upgrade(settings, "0004")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        sid = conn.execute("INSERT INTO pgjobs.schedules (name, task, cron) VALUES ('s', 'pgjobs.noop', "
                           "'* * * * *') RETURNING id").fetchone()[0]
        conn.execute("""INSERT INTO pgjobs.jobs (task, state, started_at, finished_at, schedule_id, slot) VALUES
                        ('a', 'completed', now() - interval '3 days', now() - interval '3 days', %s, '2026-01-01'),
                        ('b', 'failed', now(), now(), NULL, NULL),
                        ('c', 'available', NULL, NULL, NULL, NULL),
                        ('d', 'running', now(), NULL, NULL, NULL)""", (sid,))
        conn.execute("INSERT INTO pgjobs.jobs (task, unique_key) VALUES ('e', 'key')")
        before = conn.execute("SELECT id, task, state FROM pgjobs.jobs ORDER BY id").fetchall()
    migrations.upgrade(settings)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT id, task, state FROM pgjobs.jobs ORDER BY id").fetchall() == before
        where = dict(conn.execute("SELECT task, tableoid::regclass::text FROM pgjobs.jobs").fetchall())
        assert where["c"] == where["d"] == "pgjobs.jobs_ring_1" and where["e"] == "pgjobs.jobs_parked"
        assert where["a"].startswith("pgjobs.jobs_done_") and where["b"].startswith("pgjobs.jobs_failed_")
        assert conn.execute("SELECT count(*) FROM pgjobs.job_slots").fetchone()[0] == 1
        new = conn.execute("INSERT INTO pgjobs.jobs (task) VALUES ('f') RETURNING id").fetchone()[0]
        assert new > max(r[0] for r in before)
    migrations.downgrade(settings, "0004")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT id, task, state FROM pgjobs.jobs WHERE task <> 'f' ORDER BY id").fetchall() == before
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO pgjobs.jobs (task, schedule_id, slot) VALUES ('g', %s, '2026-01-01')", (sid,))


def test_a_worker_rotates_and_reclaims_on_its_own(admin: Admin, db: psycopg.Connection, workers) -> None:
    workers.start()
    admin.enqueue_many("pgjobs.noop", [{}] * 50)
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'completed'").fetchone()[0] == 50,
             timeout=20, what="jobs done")
    admin.enqueue_many("pgjobs.noop", [{}] * 50)
    wait_for(lambda: 1 in {s for s, st in segments(db).items() if st == "free"}, timeout=30,
             what="segment 1 reclaimed")
