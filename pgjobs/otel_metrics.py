"""OpenTelemetry metrics (optional extra `otel`): the worker's Prometheus metrics (`metrics.py`), for users who
export only OTLP.

On in a worker when `OTEL_METRICS_EXPORTER` names an exporter (`console`, or `otlp` with
`opentelemetry-exporter-otlp-proto-http`; the SDK reads `OTEL_METRIC_EXPORT_INTERVAL` and the other standard
variables), or when the host application set a meter provider before starting the worker. Off, nothing is
imported. Fed by the same telemetry events as the Prometheus exporter, so the two always agree.

Each Prometheus metric has its OpenTelemetry twin, named with dots (units in `unit`, not in the name):

| Prometheus | OpenTelemetry | kind | attributes |
|---|---|---|---|
| pgjobs_job_runs_total | pgjobs.job.runs | counter | task, queue, outcome |
| pgjobs_job_duration_seconds | pgjobs.job.duration | histogram (s) | task |
| pgjobs_slot_lateness_seconds | pgjobs.slot.lateness | histogram (s) | |
| pgjobs_job_wait_seconds | pgjobs.job.wait | histogram (s) | queue |
| pgjobs_job_retries_total | pgjobs.job.retries | counter | task |
| pgjobs_schedule_slots_total | pgjobs.schedule.slots | counter | schedule, outcome |
| pgjobs_schedule_lateness_seconds | pgjobs.schedule.lateness | histogram (s) | schedule |
| pgjobs_schedule_auto_pauses_total | pgjobs.schedule.auto_pauses | counter | schedule |
| pgjobs_jobs_rescued_total | pgjobs.jobs.rescued | counter | state |
| pgjobs_leader | pgjobs.leader | gauge | |
| pgjobs_heartbeat_age_seconds | pgjobs.heartbeat.age | gauge (s) | |
| pgjobs_database_up | pgjobs.database.up | gauge | |
| pgjobs_jobs | pgjobs.jobs | gauge | queue, state |
| pgjobs_queue_lag_seconds | pgjobs.queue.lag | gauge (s) | queue |
| pgjobs_schedules_overdue | pgjobs.schedules.overdue | gauge | |
| pgjobs_schedules_max_overdue_seconds | pgjobs.schedules.max_overdue | gauge (s) | |
| pgjobs_xmin_horizon_age_seconds | pgjobs.xmin_horizon.age | gauge (s) | |
| pgjobs_xmin_horizon_holders | pgjobs.xmin_horizon.holders | gauge | kind |
| pgjobs_schedule_last_success_timestamp_seconds | pgjobs.schedule.last_success | gauge (unix s) | schedule |
| pgjobs_schedule_overdue | pgjobs.schedule.overdue | gauge | schedule |
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from pgjobs import telemetry

log = logging.getLogger("pgjobs.otel")

HORIZON_KINDS = ("transaction", "prepared transaction", "replication slot")


def configure_from_env(worker: Any) -> OtelMetrics | None:
    """The worker's OpenTelemetry metrics when configured (see the module docstring), else None."""
    exporter = os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower()
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if (not exporter or exporter == "none") and "opentelemetry.metrics" not in sys.modules:
        return None
    try:
        from opentelemetry import metrics
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:
        if exporter and exporter != "none":
            log.warning("OTEL_METRICS_EXPORTER=%s but OpenTelemetry is not installed: pip install 'pgjobs[otel]'",
                        exporter)
        return None
    current = metrics.get_meter_provider()
    if not isinstance(current, _ProxyMeterProvider):
        return OtelMetrics(worker, current)  # the host application configured metrics
    if not exporter or exporter == "none":
        return None
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            MetricExporter,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        log.warning("OTEL_METRICS_EXPORTER=%s needs the OpenTelemetry SDK: pip install 'pgjobs[otel]'", exporter)
        return None
    readers = []
    for name in (e.strip() for e in exporter.split(",")):
        chosen: MetricExporter | None = None
        if name == "console":
            chosen = ConsoleMetricExporter()
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            except ImportError:
                log.warning("OTEL_METRICS_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http")
                continue
            chosen = OTLPMetricExporter()
        else:
            log.warning("OTEL_METRICS_EXPORTER: unknown exporter %r (use console or otlp)", name)
            continue
        readers.append(PeriodicExportingMetricReader(chosen))
    if not readers:
        return None
    provider = MeterProvider(metric_readers=readers, resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "pgjobs-worker")}))
    return OtelMetrics(worker, provider, owned=True)


class OtelMetrics:
    """The metrics of one worker process as OpenTelemetry instruments, fed by telemetry events."""

    def __init__(self, worker: Any, meter_provider: Any, *, owned: bool = False) -> None:
        from opentelemetry.metrics import Observation

        from pgjobs import __version__
        from pgjobs.metrics import DatabaseGauges

        self._provider = meter_provider if owned else None
        self._last_heartbeat = time.monotonic()
        self._database = DatabaseGauges(worker.settings)
        self._queue_names: tuple[str, ...] = tuple(worker.settings.queues)
        meter = meter_provider.get_meter("pgjobs", __version__)
        self.runs = meter.create_counter("pgjobs.job.runs", "{run}", "Job runs finished by this worker, by outcome.")
        self.duration = meter.create_histogram("pgjobs.job.duration", "s", "Run time of jobs, per task.")
        self.lateness = meter.create_histogram("pgjobs.slot.lateness", "s",
                                               "Cron jobs: seconds from the slot to the start of the run.")
        self.wait = meter.create_histogram("pgjobs.job.wait", "s", "Seconds from a job's scheduled_at to its start.")
        self.retries = meter.create_counter("pgjobs.job.retries", "{run}",
                                            "Failed runs put back in the queue for another attempt.")
        self.slots = meter.create_counter("pgjobs.schedule.slots", "{slot}",
                                          "Slots recorded in the ledger by this worker while leader.")
        self.schedule_lateness = meter.create_histogram(
            "pgjobs.schedule.lateness", "s", "Per schedule: seconds from the slot to the start of its first attempt.")
        self.auto_pauses = meter.create_counter("pgjobs.schedule.auto_pauses", "{pause}",
                                                "Schedules paused by pause_after_failures.")
        self.rescues = meter.create_counter("pgjobs.jobs.rescued", "{job}",
                                            "Jobs rescued by this worker while leader.")

        def gauge(name: str, unit: str, description: str,
                  read: Callable[[], Iterable[tuple[float, dict[str, str]]]]) -> None:
            def callback(_options: Any) -> Iterable[Any]:
                return [Observation(value, attrs) for value, attrs in read()]

            meter.create_observable_gauge(name, [callback], unit, description)

        gauge("pgjobs.leader", "1", "1 while this worker is the leader.",
              lambda: [(1.0 if worker.is_leader() else 0.0, {})])
        gauge("pgjobs.heartbeat.age", "s", "Seconds since this worker's last successful heartbeat.",
              lambda: [(time.monotonic() - self._last_heartbeat, {})])
        gauge("pgjobs.database.up", "1", "1 if the last metrics query reached the database.",
              lambda: [(1.0 if self._database.health() is not None else 0.0, {})])
        gauge("pgjobs.jobs", "{job}", "Unfinished jobs by queue and state.", self._jobs)
        gauge("pgjobs.queue.lag", "s", "How long the oldest due job of the queue has waited.", self._lag)
        gauge("pgjobs.schedules.overdue", "{schedule}", "Enabled schedules whose next slot is over 5 s late.",
              lambda: self._health_value("schedules_overdue"))
        gauge("pgjobs.schedules.max_overdue", "s", "How far the most overdue schedule is behind.",
              lambda: self._health_value("max_overdue_seconds"))
        gauge("pgjobs.xmin_horizon.age", "s", "Age of the oldest transaction holding the xmin horizon.",
              lambda: self._health_value("horizon_oldest_seconds"))
        gauge("pgjobs.xmin_horizon.holders", "{holder}", "Sessions, prepared transactions and slots holding the "
              "horizon back for longer than PGJOBS_HORIZON_WARN_AGE, by kind.", self._holders)
        gauge("pgjobs.schedule.last_success", "s", "Unix time of the schedule's last completed slot.",
              self._last_success)
        gauge("pgjobs.schedule.overdue", "1", "1 when the schedule has had no success for "
              "PGJOBS_OVERDUE_INTERVALS of its intervals.", self._overdue)
        self._detach = telemetry.attach(self.on_event)

    # ------------------------------------------------------------------ events (the Prometheus exporter's)
    def on_event(self, event: str, f: dict[str, Any]) -> None:
        if event == "job.ran":
            self.runs.add(1, {"task": f["task"], "queue": f["queue"], "outcome": f["outcome"]})
            self.duration.record(f["seconds"], {"task": f["task"]})
        elif event == "job.claimed":
            if f["lateness"] is not None:
                self.lateness.record(max(0.0, f["lateness"]))
            self.wait.record(max(0.0, f["wait"]), {"queue": f["queue"]})
        elif event == "job.recorded" and f["state"] == "available":
            self.retries.add(1, {"task": f["task"]})
        elif event == "slot.recorded":
            self.slots.add(f["count"], {"schedule": f["schedule"], "outcome": f["outcome"]})
            if f["lateness"] is not None:
                self.schedule_lateness.record(max(0.0, f["lateness"]), {"schedule": f["schedule"]})
        elif event == "schedule.paused":
            self.auto_pauses.add(1, {"schedule": f["schedule"]})
        elif event == "job.rescued":
            self.rescues.add(1, {"state": f["state"]})
        elif event == "worker.heartbeat":
            self._last_heartbeat = time.monotonic()

    # ------------------------------------------------------------------ database gauges (read when exported)
    def _health_value(self, key: str) -> list[tuple[float, dict[str, str]]]:
        h = self._database.health()
        return [] if h is None else [(float(h[key]), {})]

    def _queues(self) -> list[dict[str, Any]]:
        h = self._database.health()
        if h is None:
            return []
        empty = {"available": 0, "scheduled": 0, "running": 0, "lag": 0.0}
        by_queue: dict[str, dict[str, Any]] = {name: {"queue": name, **empty} for name in self._queue_names}
        by_queue.update({q["queue"]: dict(q) for q in h["queues"]})
        return list(by_queue.values())

    def _jobs(self) -> list[tuple[float, dict[str, str]]]:
        return [(float(q[state]), {"queue": q["queue"], "state": state})
                for q in self._queues() for state in ("available", "scheduled", "running")]

    def _lag(self) -> list[tuple[float, dict[str, str]]]:
        return [(float(q["lag"]), {"queue": q["queue"]}) for q in self._queues()]

    def _holders(self) -> list[tuple[float, dict[str, str]]]:
        h = self._database.health()
        if h is None:
            return []
        return [(float(sum(1 for x in h["horizon_holders"] if x["kind"] == kind)), {"kind": kind})
                for kind in HORIZON_KINDS]

    def _last_success(self) -> list[tuple[float, dict[str, str]]]:
        h = self._database.health()
        return [(s["last_success_at"].timestamp(), {"schedule": s["name"]})
                for s in ((h or {}).get("schedules") or []) if s["last_success_at"] is not None]

    def _overdue(self) -> list[tuple[float, dict[str, str]]]:
        h = self._database.health()
        return [(1.0 if s["overdue"] else 0.0, {"schedule": s["name"]}) for s in ((h or {}).get("schedules") or [])]

    def close(self) -> None:
        """Stop observing; a meter provider this module made is shut down (its last export runs now)."""
        self._detach()
        if self._provider is not None:
            try:
                self._provider.shutdown()
            except Exception as exc:  # noqa: BLE001 - a failing exporter must not fail the shutdown
                log.warning("OpenTelemetry metrics: shutdown: %s", exc)
