"""Leader election with one session-level advisory lock.

Algorithm
- Every worker process keeps one dedicated connection (the lock connection, autocommit, TCP keepalives on
  both ends). A follower blocks in `pg_advisory_lock(class, key)` on it; Postgres queues the waiters. The
  wait runs in a DO block that commits every WAIT_SLICE_MS (`queries.wait_leader_lock`), so a follower
  never holds a snapshot older than that: a plain blocking SELECT would hold back vacuum for the whole
  database as long as it waits.
- The holder is the leader. When its process dies, even by `kill -9`, the kernel closes its socket, Postgres
  ends the backend and releases the lock, and the next waiter gets it at once: takeover is milliseconds,
  not a lease period. A clean shutdown unlocks explicitly.
- The leader watches its lock connection's socket. Any traffic it did not ask for (a FATAL from
  `pg_terminate_backend`, a server shutdown, a closed socket) makes it check the connection; if the lock is
  gone it steps down at once and reconnects as a follower.
- The same connection carries the worker's liveness lock (`on_connected` takes it, see worker.py), so leader
  and liveness end together, when the session ends. On `stop()` the elector steps down but keeps the session
  (and so the liveness lock) until `close()`: a worker finishing its jobs on shutdown is not declared dead.
- A killed follower's backend is blocked in the lock wait, not reading its socket; `client_connection_check_
  interval` (PostgreSQL 14+, `LOCK_CLIENT_CHECK_MS`) makes it notice the closed socket and end within 0.2 s.
  A dead follower can therefore be granted the lock only in that moment, and even then it ends when it sends
  the result (the socket is closed): it never schedules anything.
- The lock connection never goes through a pooler: a connection that looks pooled is refused (`pooled_reason`)
  and no campaign starts on it. It never uses server-side prepared statements (`prepare_threshold=None`).
- Reconnects back off from 50 ms to RECONNECT_MAX_DELAY and keep trying for as long as it takes.

Invariants
- `is_leader` is set only while this process has seen its lock granted on a connection that is still open.
- Before every scheduling pass the scheduler calls `confirm()`, which asks Postgres whether this backend
  still holds the lock; a stale leader (e.g. a partitioned one) therefore stops scheduling after one pass at
  most, and even that pass cannot double a slot: the schedule rows are locked FOR UPDATE SKIP LOCKED and
  jobs are unique on (schedule_id, slot).

Events: `on_gained()` and `on_lost(reason)`, and `on_connected(conn)` / `on_disconnected()` for the session
itself, called from the elector thread.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from typing import TypedDict

import psycopg

from pgjobs.logs import Outage
from pgjobs.queries import Queries
from pgjobs.rows import one

log = logging.getLogger("pgjobs.leadership")


class Keepalives(TypedDict):
    keepalives: int
    keepalives_idle: int
    keepalives_interval: int
    keepalives_count: int
    connect_timeout: int


# libpq parameters of every connection that must notice a dead peer (`**KEEPALIVES` into psycopg.connect).
KEEPALIVES: Keepalives = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "connect_timeout": 5,
}


# How often a backend running a statement for us checks that we are still there (PostgreSQL 14+). The lock
# connection checks more often: a follower's backend sits in a lock wait while it holds the worker's liveness
# lock, and only this check ends it when the worker dies (a poll() every 200 ms; the wait already wakes every
# WAIT_SLICE_MS).
CLIENT_CHECK_MS = 1000
LOCK_CLIENT_CHECK_MS = 200
# Longest pause between two reconnect attempts of the lock connection: after an outage of any length the
# worker has its lock back within this much of Postgres answering (the leader waits longer than this before
# it declares anyone dead, maintenance.SETTLE).
RECONNECT_MAX_DELAY = 0.5
POOLED_RETRY = 5.0


class PooledConnection(Exception):  # noqa: N818 - a refusal, not a crash
    """The lock connection looks pooled: session advisory locks are not safe on it."""


def prepare_session(conn: psycopg.Connection, queries: Queries, check_ms: int = CLIENT_CHECK_MS) -> None:
    """Server-side liveness for a direct session: TCP keepalives on the server's end of the socket (a host
    that vanishes is noticed in about 11 s) and, on PostgreSQL 14+, client_connection_check_interval."""
    conn.execute(queries.set_server_keepalives)
    if conn.info.server_version >= 140000:
        conn.execute(queries.set_client_connection_check, {"ms": str(check_ms)})


def pooled_message(reason: str) -> str:
    return (f"the leader-lock connection goes through a pooler ({reason}): session advisory locks are unsafe "
            "there; set PGJOBS_LOCK_DATABASE_URL to a direct Postgres URL")


# A follower's lock wait commits this often (milliseconds): the oldest snapshot it holds, and about ten
# server-side wakeups a second per follower (0.1 ms of CPU each); no queries from the worker.
WAIT_SLICE_MS = 100


class Leadership:
    """Runs the election in a background thread; `is_leader` tells the current state."""

    def __init__(
        self,
        conninfo: str,
        queries: Queries,
        *,
        on_gained: Callable[[], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
        on_connected: Callable[[psycopg.Connection], None] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        name: str = "pgjobs",
    ) -> None:
        self._conninfo = conninfo
        self._q = queries
        self._on_gained = on_gained or (lambda: None)
        self._on_lost = on_lost or (lambda reason: None)
        self._on_connected = on_connected or (lambda conn: None)
        self._on_disconnected = on_disconnected or (lambda: None)
        self._name = name
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._outage = Outage(log, "leader election: lock connection unavailable")
        self._conn: psycopg.Connection | None = None
        self._conn_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.is_leader = threading.Event()
        self.pooled_warning: str | None = None
        self.session_started: float | None = None  # monotonic time the current lock session was opened

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pgjobs-elector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Step down at once (unlock) so a follower takes over without waiting; keep the session (and the
        worker's liveness lock on it) until `close()`."""
        self._stop.set()
        conn = self._conn
        if conn is not None and not self.is_leader.is_set():
            try:
                conn.cancel_safe(timeout=2)  # interrupt a blocking pg_advisory_lock
            except Exception:  # noqa: BLE001 - best effort while shutting down
                pass
        deadline = time.monotonic() + timeout
        while self.is_leader.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self, timeout: float = 5.0) -> None:
        """End the session: the liveness lock goes with it. Call after `stop()`."""
        self._stop.set()
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    def confirm(self) -> bool:
        """Ask Postgres whether this process still holds the lock. Steps down if not."""
        if not self.is_leader.is_set():
            return False
        try:
            with self._conn_lock:
                conn = self._conn
                if conn is None or conn.closed:
                    raise psycopg.OperationalError("lock connection is closed")
                held: bool = one(conn.execute(self._q.holds_leader_lock, self._q.lock))[0]
        except psycopg.Error as exc:
            self._step_down(f"lock connection failed: {_first_line(exc)}")
            return False
        if not held:
            self._step_down("advisory lock no longer held")
        return held

    # ------------------------------------------------------------------ elector thread
    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            pause = None
            try:
                self._connect()
                self._outage.ok()
                backoff = 0.05
                self._campaign()
                if self._stop.is_set():
                    self._closing.wait()  # shutting down: keep the session until close()
            except PooledConnection as exc:
                self.pooled_warning = str(exc)
                self._outage.failed(str(exc))
                pause = POOLED_RETRY  # a configuration problem: it will not go away in milliseconds
            except psycopg.Error as exc:
                if self.is_leader.is_set():
                    self._step_down(f"lock connection failed: {_first_line(exc)}")
                if not self._stop.is_set():
                    self._outage.failed(_first_line(exc))
            finally:
                self._close()
            if self._stop.wait(pause or backoff):
                break
            backoff = min(backoff * 2, RECONNECT_MAX_DELAY)
        self._close()

    def _connect(self) -> None:
        # No server-side prepared statements: a lock connection must be a plain session, and if it is
        # not, a prepared statement would fail (`_pg3_0 does not exist`) before the pooler check says why.
        conn = psycopg.connect(self._conninfo, autocommit=True, application_name=f"{self._name} leader-lock",
                               prepare_threshold=None, **KEEPALIVES)
        with self._conn_lock:
            self._conn = conn
            self.session_started = time.monotonic()
        reason = pooled_reason(conn, self._q)
        if reason:
            raise PooledConnection(pooled_message(reason))
        prepare_session(conn, self._q, LOCK_CLIENT_CHECK_MS)
        self._on_connected(conn)

    def _campaign(self) -> None:
        conn = self._conn
        assert conn is not None
        got = one(conn.execute(self._q.try_leader_lock, self._q.lock))[0]
        if not got:
            conn.execute(self._q.wait_leader_lock_settings, {**self._q.lock, "slice_ms": WAIT_SLICE_MS})
        while not got and not self._stop.is_set():
            try:
                conn.execute(self._q.wait_leader_lock, self._q.lock)  # blocks until the leader is gone
                got = True
            except psycopg.errors.QueryCanceled:
                if self._stop.is_set():
                    return
        if self._stop.is_set():
            if got:
                conn.execute(self._q.release_leader_lock, self._q.lock)
            return
        self.is_leader.set()
        log.info("gained leadership")
        self._on_gained()
        self._watch(conn)

    def _watch(self, conn: psycopg.Connection) -> None:
        """Hold the lock until stopped or the connection breaks; no queries while all is well."""
        fd = conn.fileno()
        while not self._stop.is_set() and self.is_leader.is_set():
            readable, _, _ = select.select([fd], [], [], 0.5)
            if readable and self._conn_lock.acquire(timeout=1):
                try:
                    # Something arrived that we did not ask for: usually the server ending our session.
                    conn.execute(self._q.ping)
                finally:
                    self._conn_lock.release()
        if self.is_leader.is_set():  # stopping: unlock so a follower takes over now, not at disconnect
            try:
                with self._conn_lock:
                    conn.execute(self._q.release_leader_lock, self._q.lock)
            except psycopg.Error:
                pass
            self._step_down("shutting down")

    def _step_down(self, reason: str) -> None:
        if self.is_leader.is_set():
            self.is_leader.clear()
            log.warning("lost leadership: %s", reason) if reason != "shutting down" else log.info("released leadership")
            self._on_lost(reason)

    def _close(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._on_disconnected()


def pooled_reason(conn: psycopg.Connection, queries: Queries) -> str | None:
    """Why this connection is not a plain Postgres session, or None.

    Two signs, neither fooled by a port mapping or a TCP proxy: the backend that runs our statements is not
    the one that greeted us (poolers, PgBouncer among them, hand out their own BackendKeyData), or it changes
    between statements (transaction pooling).
    """
    pids = {one(conn.execute(queries.backend_pid))[0] for _ in range(3)}
    if len(pids) > 1:
        return "the server backend changes between statements"
    greeted = conn.info.backend_pid
    if greeted and greeted not in pids:
        return f"the backend key it was given ({greeted}) is not the backend that runs its statements ({pids.pop()})"
    return None


def check_lock_connection(conninfo: str, queries: Queries) -> str | None:
    """One connection with the lock URL: the refusal message when it looks pooled, else None."""
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None, **KEEPALIVES) as conn:
        reason = pooled_reason(conn, queries)
    return pooled_message(reason) if reason else None


def pooler_suspected(conn: psycopg.Connection, queries: Queries) -> str | None:
    """Why this connection looks pooled or proxied, or None: `pooled_reason`, or the port we connected to is
    not the port the server listens on (PgBouncer and most proxies listen on their own port). Used to turn
    prepared statements off on pool connections, where a false alarm costs little."""
    reason = pooled_reason(conn, queries)
    if reason:
        return reason
    server_port = one(conn.execute(queries.server_port))[0]
    client_port = conn.info.port
    if server_port is not None and client_port and int(client_port) != int(server_port):
        return f"connected to port {client_port}, the server listens on {server_port}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

