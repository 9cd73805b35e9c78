"""Exact liveness, fenced outcomes and timeouts, with real worker processes killed for real.

A worker is dead exactly when Postgres says its session is gone (its liveness lock is free), never because a
heartbeat is old. Each fault test prints what it measured (`pytest -s` shows it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psycopg
import tasks_for_tests  # noqa: F401 - registers the test tasks in this process too

from conftest import job_row as _job
from conftest import job_state as _state
from conftest import lock_holder_backend, wait_for, worker_pid_of_leader
from pgjobs.admin import Admin

IMPORT = ("--import", "tasks_for_tests")
HOST = socket.gethostname()




def _worker_id(db: psycopg.Connection, pid: int) -> int | None:
    row = db.execute("SELECT id FROM pgjobs.workers WHERE pid = %s", (pid,)).fetchone()
    return row[0] if row else None


def _backends(db: psycopg.Connection, pid: int, kind: str = "") -> list[int]:
    """Backends of worker process `pid` (application_name carries host:pid); `kind` e.g. 'leader-lock'."""
    return [r[0] for r in db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s AND application_name LIKE %s",
        (f"%{HOST}:{pid}%", f"%{kind}%"))]


def _running_on(db: psycopg.Connection, job_id: int, pid: int) -> bool:
    return bool(db.execute("SELECT 1 FROM pgjobs.jobs WHERE id = %s AND state = 'running' AND worker = %s",
                           (job_id, f"{HOST}:{pid}")).fetchone())


def _settled(db: psycopg.Connection, pid: int) -> bool:
    """The lock session of worker `pid` is older than maintenance.SETTLE: as leader it declares the dead at once."""
    from pgjobs.maintenance import SETTLE

    return bool(db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s) AND backend_start < now() - %s * "
                           "interval '1 second'", (_backends(db, pid, "leader-lock"), SETTLE + 0.2)).fetchone())


def _leading(db: psycopg.Connection, pid: int) -> bool:
    backend = lock_holder_backend(db)
    return backend is not None and backend in _backends(db, pid, "leader-lock")


def test_kill_9_mid_job_frees_its_jobs_within_2_s(admin: Admin, db, workers) -> None:
    """The leader serves another queue; the victim runs two jobs, one with attempts left and one without."""
    leader = workers.start(*IMPORT, "--queues", "elsewhere")
    wait_for(lambda: _leading(db, leader.pid), 15, "the first worker to lead")
    victim = workers.start(*IMPORT, concurrency=2)
    retried = admin.enqueue("tests.python_loop", {"seconds": 60}, max_attempts=3)
    last_try = admin.enqueue("tests.python_loop", {"seconds": 60}, max_attempts=1)
    wait_for(lambda: _running_on(db, retried, victim.pid) and _running_on(db, last_try, victim.pid), 15,
             "both jobs to run on the victim")
    victim_id = _worker_id(db, victim.pid)
    wait_for(lambda: _settled(db, leader.pid), 10, "the leader's session to be settled")
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: _state(db, retried) != "running" and _state(db, last_try) != "running", 10,
             "the killed worker's jobs to be rescued")
    rescued_in = time.monotonic() - killed
    print(f"\nrescue after kill -9: {rescued_in:.3f}s")
    assert rescued_in < 2.0, f"rescue took {rescued_in:.3f}s"
    assert _job(db, retried)["state"] == "available" and _job(db, retried)["attempt"] == 1
    assert _job(db, last_try)["state"] == "failed"
    assert "rescued" in _job(db, last_try)["last_error"] and "session" in _job(db, last_try)["last_error"]
    wait_for(lambda: _worker_id(db, victim.pid) is None, 5, "the dead worker's row to be removed")
    assert victim_id is not None
    assert f"removed dead worker {victim_id}" in workers.logs()
    assert leader.poll() is None


def test_skip_overlap_schedule_runs_again_soon_after_its_worker_is_killed(admin: Admin, db, workers) -> None:
    """A 1-second 'skip' schedule whose job dies with its worker: slots are skipped only until the rescue."""
    leader = workers.start(*IMPORT, "--queues", "elsewhere")
    wait_for(lambda: _leading(db, leader.pid), 15, "the first worker to lead")
    admin.add_schedule("long-skip", cron="1 seconds", task="tests.python_loop", args={"seconds": 60},
                       overlap="skip", max_attempts=1)
    victim = workers.start(*IMPORT, concurrency=1)
    first = wait_for(lambda: db.execute("SELECT id FROM pgjobs.jobs WHERE state = 'running' AND worker = %s",
                                        (f"{HOST}:{victim.pid}",)).fetchone(), 20, "a slot's job on the victim")[0]
    wait_for(lambda: _settled(db, leader.pid), 10, "the leader's session to be settled")
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    db.execute("SELECT 1")
    killed_at = db.execute("SELECT clock_timestamp()").fetchone()[0]
    workers.start(*IMPORT, concurrency=1)
    wait_for(lambda: db.execute("SELECT 1 FROM pgjobs.jobs WHERE id > %s AND state = 'running'",
                                (first,)).fetchone(), 15, "a later slot to run")
    resumed_in = time.monotonic() - killed
    skipped = db.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'skipped' AND slot > %s",
                         (killed_at,)).fetchone()[0]
    print(f"\nskip-overlap schedule runs again {resumed_in:.3f}s after kill -9 ({skipped} slot(s) skipped meanwhile)")
    assert _state(db, first) == "failed"
    assert resumed_in < 5.0, f"the schedule ran again only after {resumed_in:.3f}s"
    assert skipped <= 4


def test_the_killed_leaders_jobs_are_rescued_by_the_new_leader(admin: Admin, db, workers) -> None:
    first = workers.start(*IMPORT, concurrency=1)
    wait_for(lambda: _leading(db, first.pid), 15, "the first worker to lead")
    job_id = admin.enqueue("tests.python_loop", {"seconds": 60}, max_attempts=3)
    wait_for(lambda: _running_on(db, job_id, first.pid), 15, "the job to run on the leader")
    second = workers.start(*IMPORT, "--queues", "elsewhere")
    wait_for(lambda: _worker_id(db, second.pid), 15, "the second worker")
    wait_for(lambda: _settled(db, second.pid), 10, "the follower's session to be settled")
    first.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: _leading(db, second.pid), 5, "the second worker to lead")
    took_over = time.monotonic() - killed
    wait_for(lambda: _state(db, job_id) == "available", 10, "the new leader to rescue the job")
    rescued_in = time.monotonic() - killed
    print(f"\nleader kill -9: takeover {took_over:.3f}s, its job rescued after {rescued_in:.3f}s")
    assert rescued_in < 2.0, f"rescue took {rescued_in:.3f}s"


def test_a_stale_completion_is_refused_after_a_rescue(admin: Admin, db, workers) -> None:
    """The paused worker's session is ended (as a network cut would), its job rescued and run elsewhere;
    when it resumes, its completion of the old attempt is refused by the database, and it joins again."""
    stale = workers.start(*IMPORT, concurrency=1)
    wait_for(lambda: _leading(db, stale.pid), 15, "the first worker to lead")
    job_id = admin.enqueue("pgjobs.sleep", {"seconds": 3}, max_attempts=3)
    wait_for(lambda: _running_on(db, job_id, stale.pid), 15, "the job to run")
    other = workers.start(*IMPORT, concurrency=1)
    wait_for(lambda: _worker_id(db, other.pid), 15, "the other worker")
    stale_id = _worker_id(db, stale.pid)
    stale.send_signal(signal.SIGSTOP)
    try:
        for backend in _backends(db, stale.pid, "leader-lock"):
            db.execute("SELECT pg_terminate_backend(%s)", (backend,))
        wait_for(lambda: _job(db, job_id)["state"] == "completed", 20, "the rescued job to complete elsewhere")
        done = _job(db, job_id)
        assert done["attempt"] == 2 and done["worker"] == f"{HOST}:{other.pid}"
    finally:
        stale.send_signal(signal.SIGCONT)
    wait_for(lambda: "completion(s) refused" in workers.logs(), 15, "the stale completion to be refused")
    after = _job(db, job_id)
    assert (after["state"], after["attempt"], after["worker"]) == ("completed", 2, f"{HOST}:{other.pid}")
    assert [e["attempt"] for e in after["errors"]] == [1] and "rescued" in after["errors"][0]["error"]
    wait_for(lambda: _worker_id(db, stale.pid) == stale_id, 10, "the resumed worker to join again under its id")
    again = admin.enqueue("pgjobs.noop")
    wait_for(lambda: _state(db, again) == "completed", 15, "jobs to run after the resume")
    assert stale.poll() is None and other.poll() is None


def test_a_worker_whose_lock_connection_drops_takes_its_lock_back_and_keeps_its_job(
        admin: Admin, db, workers) -> None:
    leader = workers.start(*IMPORT, "--queues", "elsewhere")
    wait_for(lambda: _leading(db, leader.pid), 15, "the first worker to lead")
    proc = workers.start(*IMPORT, concurrency=1)
    job_id = admin.enqueue("pgjobs.sleep", {"seconds": 4}, max_attempts=3)
    wait_for(lambda: _running_on(db, job_id, proc.pid), 15, "the job to run")
    worker_id = _worker_id(db, proc.pid)
    old = _backends(db, proc.pid, "leader-lock")
    for backend in old:
        db.execute("SELECT pg_terminate_backend(%s)", (backend,))
    cut = time.monotonic()
    wait_for(lambda: (new := _backends(db, proc.pid, "leader-lock")) and not set(new) & set(old), 5,
             "a new lock connection")
    wait_for(lambda: db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                "AND objid = %s AND pid = ANY(%s)", (worker_id, _backends(db, proc.pid))
                                ).fetchone()[0] >= 1, 5, "the liveness lock to be taken back")
    back_in = time.monotonic() - cut
    wait_for(lambda: _state(db, job_id) == "completed", 15, "the job to complete")
    job = _job(db, job_id)
    print(f"\nlock connection terminated: liveness lock back after {back_in:.3f}s; job kept (attempt {job['attempt']})")
    assert job["attempt"] == 1 and job["errors"] == [], "the live worker's job was not rescued"
    assert _worker_id(db, proc.pid) == worker_id


def test_a_worker_takes_its_lock_back_from_a_session_that_still_holds_it(admin: Admin, db_url, db,
                                                                         workers) -> None:
    """After a network cut the server may keep the worker's old session (and its liveness lock) until its
    keepalives fire; the reconnected worker ends that session and takes its lock back at once. Here a second
    session of the test stands in for the stale one."""
    from pgjobs.queries import queries

    proc = workers.start(*IMPORT, concurrency=1)
    worker_id = wait_for(lambda: _worker_id(db, proc.pid), 15, "the worker")
    job_id = admin.enqueue("pgjobs.sleep", {"seconds": 3}, max_attempts=3)
    wait_for(lambda: _running_on(db, job_id, proc.pid), 15, "the job to run")
    stale = psycopg.connect(db_url, autocommit=True, application_name="stale stand-in")
    outcome: list[BaseException | None] = []

    def queue_for_the_lock() -> None:  # granted the moment the worker's session ends
        try:
            stale.execute("SELECT pg_advisory_lock(%(wcls)s, %(wkey)s)", queries("pgjobs").worker_lock(worker_id))
            outcome.append(None)
            stale.execute("SELECT pg_sleep(60)")
        except psycopg.Error as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=queue_for_the_lock, daemon=True)
    waiter.start()
    stand_in = stale.info.backend_pid
    wait_for(lambda: db.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", (stand_in,)).fetchone(),
             10, "the stand-in to queue for the worker's lock")
    for backend in _backends(db, proc.pid, "leader-lock"):
        db.execute("SELECT pg_terminate_backend(%s)", (backend,))
    wait_for(lambda: "took the liveness lock of worker" in workers.logs(), 10, "the worker to take it back")
    waiter.join(10)
    assert outcome and outcome[0] is None, "the stand-in held the lock for a moment"
    assert len(outcome) == 2 and isinstance(outcome[1], psycopg.OperationalError), "and was ended by the worker"
    stale.close()
    wait_for(lambda: _state(db, job_id) == "completed", 15, "the job to complete")
    assert _job(db, job_id)["attempt"] == 1, "the live worker kept its job"


def test_a_killed_workers_sql_stops_running_in_postgres(admin: Admin, db, workers) -> None:
    proc = workers.start(*IMPORT)
    job_id = admin.enqueue("tests.sql_sleep", {"seconds": 120}, max_attempts=1)
    backend = wait_for(lambda: db.execute("SELECT max(backend_pid) FROM pgjobs.jobs WHERE id = %s AND state = 'running'",
                                          (job_id,)).fetchone()[0], 15, "the SQL job's backend")
    # The pid is recorded as the task's connection opens, a moment before its statement starts: wait for it.
    wait_for(lambda: db.execute("SELECT state = 'active' AND query LIKE '%%pg_sleep%%' FROM pg_stat_activity "
                                "WHERE pid = %s", (backend,)).fetchone()[0], 15, "the job's pg_sleep to run")
    proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: not db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone(), 10,
             "the dead worker's pg_sleep backend to end")
    gone_in = time.monotonic() - killed
    print(f"\nkill -9 during pg_sleep(120): its backend ended after {gone_in:.3f}s")
    assert gone_in < 3.0


def test_killed_followers_leave_no_lock_wait_behind_and_never_lead(admin: Admin, db, workers) -> None:
    leader = workers.start()
    wait_for(lambda: _leading(db, leader.pid), 15, "the first worker to lead")
    followers = [workers.start() for _ in range(3)]
    survivor = workers.start()
    for p in [*followers, survivor]:
        wait_for(lambda p=p: _backends(db, p.pid, "leader-lock"), 15, "a follower's lock connection")
    waits = {p.pid: _backends(db, p.pid, "leader-lock") for p in followers}
    for p in followers:
        p.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    dead = [b for bs in waits.values() for b in bs]
    wait_for(lambda: not db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (dead,)).fetchone(), 10,
             "the killed followers' lock waits to end")
    gone_in = time.monotonic() - killed
    waiters = {r[0] for r in db.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = %s "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", (0x706A,))}
    print(f"\nkill -9 of 3 followers: their lock waits ended after {gone_in:.3f}s; waiting now: {len(waiters)}")
    assert waiters <= set(_backends(db, survivor.pid, "leader-lock")), "only the surviving follower waits"
    leader.send_signal(signal.SIGKILL)
    wait_for(lambda: _leading(db, survivor.pid), 5, "the surviving follower to lead")
    assert worker_pid_of_leader(db) in (survivor.pid, leader.pid)


def test_timeouts_end_failed_after_every_attempt_never_cancelled(admin: Admin, db, workers) -> None:
    """12 x pgjobs.sleep 3 s with a 0.5 s timeout and 3 attempts: all 12 end `failed` after 3 attempts."""
    workers.start(*IMPORT, concurrency=6, env={"PGJOBS_BACKOFF_BASE": "1"})
    ids = [admin.enqueue("pgjobs.sleep", {"seconds": 3}, max_attempts=3, timeout=0.5) for _ in range(12)]
    started = time.monotonic()
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.jobs WHERE id = ANY(%s) AND finished_at IS NOT NULL",
                                (ids,)).fetchone()[0] == 12, 90, "every job to finish")
    rows = db.execute("SELECT state, attempt, jsonb_array_length(errors), last_error FROM pgjobs.jobs "
                      "WHERE id = ANY(%s)", (ids,)).fetchall()
    states = sorted({r[0] for r in rows})
    print(f"\n12 timed-out jobs finished in {time.monotonic() - started:.1f}s: states {states}, "
          f"attempts {sorted(r[1] for r in rows)}")
    assert states == ["failed"], rows
    assert all(r[1] == 3 and r[2] == 3 for r in rows), rows
    assert all("timed out after 0.5s" in r[3] for r in rows), rows


def test_a_foreign_session_holding_the_leader_lock_is_named_with_the_way_to_end_it(admin: Admin, db_url, db,
                                                                                    workers) -> None:
    from pgjobs.queries import queries

    q = queries("pgjobs")
    squatter = psycopg.connect(db_url, autocommit=True, application_name="left over")
    try:
        squatter.execute(q.try_leader_lock, q.lock)
        pid = squatter.info.backend_pid
        proc = workers.start()
        wait_for(lambda: _worker_id(db, proc.pid), 15, "the worker")
        status = admin.status()
        assert status["leader"] is None
        holder = status["foreign_lock_holder"]
        assert holder["pid"] == pid and holder["application_name"] == "left over"
        assert holder["clear_with"] == f"SELECT pg_terminate_backend({pid})"
        wait_for(lambda: f"pg_terminate_backend({pid})" in workers.logs(), 15, "the worker to name the holder")
        out = subprocess.run([sys.executable, "-m", "pgjobs", "status"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PGJOBS_DATABASE_URL": db_url}).stdout
        line = next(line for line in out.splitlines() if line.startswith("leader:"))
        print(f"\n{line}")
        assert f"held by backend {pid}" in line and "'left over'" in line
        assert f"SELECT pg_terminate_backend({pid})" in line
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: _leading(db, proc.pid), 5, "the worker to lead once the session is gone")
        status = admin.status()
        assert status["leader"]["pid"] == proc.pid and status["foreign_lock_holder"] is None
    finally:
        squatter.close()


def test_a_dead_workers_row_is_never_named_leader(admin: Admin, db, workers) -> None:
    proc = workers.start()
    wait_for(lambda: _leading(db, proc.pid), 15, "the worker to lead")
    wait_for(lambda: worker_pid_of_leader(db) == proc.pid, 10, "its row to say so")
    proc.send_signal(signal.SIGSTOP)
    try:
        for backend in _backends(db, proc.pid, "leader-lock"):
            db.execute("SELECT pg_terminate_backend(%s)", (backend,))
        wait_for(lambda: lock_holder_backend(db) is None, 5, "the lock to be free")
        assert admin.status()["leader"] is None, "a row saying leader_since is not a leader"
    finally:
        proc.send_signal(signal.SIGCONT)
    wait_for(lambda: admin.status()["leader"] is not None, 10, "the resumed worker to lead again")


def test_the_pools_reconnect_attempts_are_never_more_than_about_a_second_apart() -> None:
    """psycopg_pool alone doubles its reconnect delay without bound (1, 2, 4 ... 64 s); EnginePool caps it."""
    import logging

    from pgjobs.worker import POOL_RECONNECT_MAX_DELAY, EnginePool

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    attempts: list[float] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "error connecting" in record.getMessage():
                attempts.append(time.monotonic())

    logger = logging.getLogger("psycopg.pool")
    handler, level = Count(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    pool = EnginePool(f"postgresql://postgres@127.0.0.1:{port}/x?connect_timeout=1", min_size=1, max_size=1,
                      open=False, reconnect_timeout=3600)
    try:
        pool.open(wait=False)
        wait_for(lambda: len(attempts) >= 6, 15, "six reconnect attempts")
    finally:
        pool.close(timeout=1)
        logger.removeHandler(handler)
        logger.setLevel(level)
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    print(f"\npool reconnect gaps: {', '.join(f'{g:.2f}' for g in gaps)} s")
    assert max(gaps) < POOL_RECONNECT_MAX_DELAY * 1.1 + 0.5, gaps


def test_an_outage_is_logged_when_it_starts_once_a_minute_and_when_it_ends(caplog) -> None:
    import logging

    from pgjobs.logs import Outage

    outage = Outage(logging.getLogger("pgjobs.test"), "database unavailable", every=0.2)
    with caplog.at_level(logging.WARNING, logger="pgjobs.test"):
        for _ in range(50):
            outage.failed("connection refused")
        time.sleep(0.25)  # past `every`, so the next failure reports again (time is what is tested)
        outage.failed("connection refused")
        outage.ok()
        outage.ok()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0] == "database unavailable: connection refused; retrying"
    assert "(51 failed attempts)" in lines[1] and lines[2].startswith("database unavailable: recovered after")


def test_a_worker_started_while_postgres_is_down_runs_jobs_within_a_second_of_it_coming_up(pg_server, tmp_path):
    from conftest import WorkerProcs, migrated_database
    from pgjobs.config import Settings

    url = migrated_database(pg_server)
    job_id = Admin(Settings.load(database_url=url), actor="test").enqueue("pgjobs.noop")
    pg_server.stop("fast")
    workers = WorkerProcs(url, tmp_path)
    try:
        proc = workers.start()
        time.sleep(6)  # the worker waits for a database that is not there (the fault itself)
        assert proc.poll() is None, workers.logs()
        pg_server.start()
        with psycopg.connect(url, autocommit=True) as db:
            up = db.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
            started = wait_for(lambda: db.execute("SELECT started_at FROM pgjobs.jobs WHERE id = %s AND state = "
                                                  "'completed'", (job_id,)).fetchone(), 20, "the job")[0]
        waited = (started - up).total_seconds()
        print(f"\nworker started during an outage: first job {waited:.2f}s after Postgres started")
        assert waited < 2.0
        assert workers.logs().count("database unavailable at start") == 2, "one line when it began, one at its end"
    finally:
        workers.stop_all()



class _TcpForwarder:
    """A plain TCP forwarder from a free local port to Postgres, opened when the test says: until then its
    port refuses connections, as a server that is down does."""

    def __init__(self, target_port: int) -> None:
        from pgserver import free_port

        self.port = free_port()
        self._target = target_port
        self._listener: socket.socket | None = None

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()


def test_a_worker_whose_lock_url_is_unreachable_at_start_waits_for_it(admin: Admin, db, db_url, tmp_path):
    """The start's second check (is the lock URL pooled?) meets an outage after the schema check passed: the
    worker waits for the lock URL, as for the database, and runs once it answers (it used to exit 1 with
    "database unavailable: ..." when Postgres went away between the two checks)."""
    from conftest import WorkerProcs

    job_id = admin.enqueue("pgjobs.noop")
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    forwarder = _TcpForwarder(int(info.get("port") or 5432))
    lock_url = psycopg.conninfo.make_conninfo(db_url, port=str(forwarder.port))
    workers = WorkerProcs(db_url, tmp_path)
    try:
        proc = workers.start(env={"PGJOBS_LOCK_DATABASE_URL": lock_url})
        wait_for(lambda: "database unavailable at start" in workers.logs(), 20, "the worker to report the outage")
        assert proc.poll() is None, workers.logs()
        assert _state(db, job_id) == "available", "no claims before the worker holds its liveness lock"
        forwarder.open()
        wait_for(lambda: _state(db, job_id) == "completed", 20, "the job once the lock URL answers")
        assert proc.poll() is None, workers.logs()
    finally:
        workers.stop_all()
        forwarder.close()
