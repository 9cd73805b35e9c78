"""Prometheus metrics and Kubernetes probes for one worker process (`pgjobs worker --metrics-port N`).

Endpoints (one small HTTP server on a daemon thread):
- `/metrics`: Prometheus text format. Counters and histograms come from the engine's telemetry events
  (`telemetry.py`), so they cost nothing between scrapes; the database gauges (jobs by queue and state,
  queue lag, overdue schedules) come from one cheap query set (`Admin.health`, unfinished jobs only), run
  on scrape and at most once per `REFRESH_SECONDS`.
- `/healthz`: 200 while the process serves HTTP (liveness: restart me if this stops answering).
- `/readyz`: 200 when the worker is registered, the database answers and its schema is one this code runs
  on (`migrations.schema_problem`); else 503 with the reason on one line.

Counters are per process: sum them across workers in PromQL (`sum by (task) (rate(...))`).
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from psycopg.rows import DictRow

from pgjobs import telemetry
from pgjobs.config import Settings

log = logging.getLogger("pgjobs.metrics")

REFRESH_SECONDS = 5.0
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class DatabaseGauges:
    """A collector whose gauges are read from the database when scraped, at most every REFRESH_SECONDS."""

    def __init__(self, settings: Settings, refresh: float = REFRESH_SECONDS) -> None:
        self._settings = settings
        self._refresh = refresh
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._health: dict[str, Any] | None = None

    def health(self) -> dict[str, Any] | None:
        with self._lock:
            if time.monotonic() - self._at >= self._refresh:
                from pgjobs.admin import Admin

                try:
                    admin = Admin(self._settings, actor="metrics", role="viewer")
                    self._health = admin.health()
                    self._health["schedules"] = admin.overdue_schedules()["schedules"]
                except Exception as exc:  # noqa: BLE001 - a scrape reports the database down, it does not fail
                    log.warning("metrics: could not read job counts: %s", str(exc).strip().splitlines()[0])
                    self._health = None
                self._at = time.monotonic()
            return self._health

    def collect(self) -> Any:
        h = self.health()
        up = GaugeMetricFamily("pgjobs_database_up", "1 if the last metrics query reached the database.")
        up.add_metric([], 1.0 if h is not None else 0.0)
        yield up
        if h is None:
            return
        jobs = GaugeMetricFamily("pgjobs_jobs", "Unfinished jobs by queue and state ('scheduled' = available "
                                 "with a future scheduled_at).", labels=["queue", "state"])
        lag = GaugeMetricFamily("pgjobs_queue_lag_seconds",
                                "How long the oldest due job of the queue has waited (0 when none).", labels=["queue"])
        empty = {"available": 0, "scheduled": 0, "running": 0, "lag": 0.0}
        # idle queues read 0
        by_queue: dict[str, DictRow] = {name: {"queue": name, **empty} for name in self._settings.queues}
        by_queue.update({q["queue"]: q for q in h["queues"]})
        for q in by_queue.values():
            for state in ("available", "scheduled", "running"):
                jobs.add_metric([q["queue"], state], float(q[state]))
            lag.add_metric([q["queue"]], float(q["lag"]))
        yield jobs
        yield lag
        overdue = GaugeMetricFamily("pgjobs_schedules_overdue",
                                    "Enabled schedules whose next slot is more than 5 s in the past (no leader?).")
        overdue.add_metric([], float(h["schedules_overdue"]))
        yield overdue
        worst = GaugeMetricFamily("pgjobs_schedules_max_overdue_seconds", "How far the most overdue schedule is behind.")
        worst.add_metric([], float(h["max_overdue_seconds"]))
        yield worst
        horizon = GaugeMetricFamily(
            "pgjobs_xmin_horizon_age_seconds",
            "Age of the oldest transaction of this database holding a snapshot or an xid: while it runs, "
            "vacuum cannot remove dead job rows.")
        horizon.add_metric([], float(h["horizon_oldest_seconds"]))
        yield horizon
        holders = GaugeMetricFamily(
            "pgjobs_xmin_horizon_holders",
            "Sessions, prepared transactions and replication slots holding the xmin horizon back for longer "
            "than PGJOBS_HORIZON_WARN_AGE (inactive slots always), by kind.", labels=["kind"])
        for kind in ("transaction", "prepared transaction", "replication slot"):
            holders.add_metric([kind], float(sum(1 for x in h["horizon_holders"] if x["kind"] == kind)))
        yield holders
        success = GaugeMetricFamily(
            "pgjobs_schedule_last_success_timestamp_seconds",
            "Unix time of the last slot of the schedule that completed (its finish); absent when none has.",
            labels=["schedule"])
        overdue_by = GaugeMetricFamily(
            "pgjobs_schedule_overdue",
            "1 when the enabled schedule has had no successful slot for PGJOBS_OVERDUE_INTERVALS of its "
            "intervals (`pgjobs schedule overdue`).", labels=["schedule"])
        for s in (h.get("schedules") or []):
            if s["last_success_at"] is not None:
                success.add_metric([s["name"]], s["last_success_at"].timestamp())
            overdue_by.add_metric([s["name"]], 1.0 if s["overdue"] else 0.0)
        yield success
        yield overdue_by


class WorkerMetrics:
    """The metrics of one worker process, fed by telemetry events and read from the worker's state."""

    def __init__(self, worker: Any, registry: CollectorRegistry | None = None) -> None:
        self.worker = worker
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._last_heartbeat = time.monotonic()
        self.runs = Counter("pgjobs_job_runs", "Job runs finished by this worker, by outcome "
                            "(completed, failed, skipped, cancelled).", ["task", "queue", "outcome"], registry=r)
        self.duration = Histogram("pgjobs_job_duration_seconds", "Run time of jobs, per task.", ["task"],
                                  buckets=DURATION_BUCKETS, registry=r)
        self.lateness = Histogram("pgjobs_slot_lateness_seconds",
                                  "Cron jobs: seconds from the slot to the start of the run.",
                                  buckets=LATENESS_BUCKETS, registry=r)
        self.wait = Histogram("pgjobs_job_wait_seconds", "Seconds from a job's scheduled_at to its start.",
                              ["queue"], buckets=LATENESS_BUCKETS, registry=r)
        self.retries = Counter("pgjobs_job_retries", "Failed runs put back in the queue for another attempt.",
                               ["task"], registry=r)
        self.slots = Counter("pgjobs_schedule_slots", "Slots recorded in the ledger by this worker while "
                             "leader, per schedule and outcome (completed, failed, cancelled, skipped, missed, "
                             "paused; a missed range counts every slot).", ["schedule", "outcome"], registry=r)
        self.schedule_lateness = Histogram(
            "pgjobs_schedule_lateness_seconds", "Per schedule: seconds from the slot to the start of its first "
            "attempt (observed by the leader when the slot's outcome is recorded).", ["schedule"],
            buckets=LATENESS_BUCKETS, registry=r)
        self.auto_pauses = Counter("pgjobs_schedule_auto_pauses", "Schedules paused by pause_after_failures, "
                                   "per schedule.", ["schedule"], registry=r)
        self.rescues = Counter("pgjobs_jobs_rescued", "Jobs rescued by this worker while leader (their worker's "
                               "session ended), by the state they were moved to.", ["state"], registry=r)
        leader = Gauge("pgjobs_leader", "1 while this worker is the leader.", registry=r)
        leader.set_function(lambda: 1.0 if worker.is_leader() else 0.0)
        heartbeat = Gauge("pgjobs_heartbeat_age_seconds", "Seconds since this worker's last successful heartbeat.",
                          registry=r)
        heartbeat.set_function(lambda: time.monotonic() - self._last_heartbeat)
        ProcessCollector(registry=r)
        self.database = DatabaseGauges(worker.settings)
        r.register(self.database)
        self._detach = telemetry.attach(self.on_event)

    def on_event(self, event: str, f: dict[str, Any]) -> None:
        if event == "job.ran":
            self.runs.labels(f["task"], f["queue"], f["outcome"]).inc()
            self.duration.labels(f["task"]).observe(f["seconds"])
        elif event == "job.claimed":
            if f["lateness"] is not None:
                self.lateness.observe(max(0.0, f["lateness"]))
            self.wait.labels(f["queue"]).observe(max(0.0, f["wait"]))
        elif event == "job.recorded" and f["state"] == "available":
            self.retries.labels(f["task"]).inc()
        elif event == "slot.recorded":
            self.slots.labels(f["schedule"], f["outcome"]).inc(f["count"])
            if f["lateness"] is not None:
                self.schedule_lateness.labels(f["schedule"]).observe(max(0.0, f["lateness"]))
        elif event == "schedule.paused":
            self.auto_pauses.labels(f["schedule"]).inc()
        elif event == "job.rescued":
            self.rescues.labels(f["state"]).inc()
        elif event == "worker.heartbeat":
            self._last_heartbeat = time.monotonic()

    def close(self) -> None:
        self._detach()

    # ------------------------------------------------------------------ probes
    def readiness(self) -> tuple[bool, str]:
        """(ready, one-line reason) for /readyz."""
        from pgjobs import migrations

        if not self.worker.ready.is_set():
            return False, "worker is starting (not registered yet)"
        if not self.worker.alive.is_set():
            return False, "lock connection down: not claiming until this worker holds its liveness lock again"
        settings = self.worker.settings
        try:
            revision = migrations.database_revision(settings)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the database means not ready
            return False, f"database unavailable: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}"
        head, known = migrations.HEAD_REVISION, set(migrations.REVISIONS)
        problem = migrations.schema_problem(settings.schema, revision, head, known)
        if problem:
            return False, problem
        note = "" if revision == head else f" (the database is ahead of this code, which knows up to {head})"
        return True, f"ok: connected, schema revision {revision}{note}"


def _handler(metrics: WorkerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ready, reason = metrics.readiness()
                self._send(200 if ready else 503, (reason + "\n").encode())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep probes out of the logs
            pass

    return Handler


def serve_metrics(worker: Any, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104 - a probe port
    """Start the /metrics, /healthz and /readyz server for `worker` on a daemon thread; returns the server."""
    metrics = WorkerMetrics(worker)
    server = ThreadingHTTPServer((host, port), _handler(metrics))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="pgjobs-metrics", daemon=True).start()
    log.info("serving /metrics, /healthz and /readyz on %s:%d", host, server.server_address[1])
    return server
