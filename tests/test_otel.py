"""OpenTelemetry: one span per attempt (sync and async tasks) with the messaging attributes, the outcome as
status, an enqueue span; the SDK's in-memory exporter in process, and OTEL_TRACES_EXPORTER=console on a real
worker process."""

from __future__ import annotations

import signal
import threading

import async_tasks_for_tests  # noqa: F401 - registers the async test tasks in this process too
import opentelemetry.sdk.trace as sdk
import pytest
import tasks_for_tests  # noqa: F401
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import job_state as _state
from conftest import wait_for
from pgjobs import otel
from pgjobs.admin import Admin
from pgjobs.config import Settings
from pgjobs.worker import Worker


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.enable(provider)
    yield exporter
    otel.disable()


def test_each_attempt_is_a_span_with_messaging_attributes_and_its_outcome(settings: Settings, admin: Admin, db,
                                                                         spans) -> None:
    settings = settings.with_(backoff_base=1.1)
    ok = admin.enqueue("pgjobs.noop", queue="default")
    flaky = admin.enqueue("tests.fail_until", {"succeed_on": 2}, max_attempts=3)
    aflaky = admin.enqueue("atests.fail_until", {"succeed_on": 2}, max_attempts=3)
    worker = Worker(settings, install_signals=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: all(_state(db, j) == "completed" for j in (ok, flaky, aflaky)), 20, "the jobs to complete")
    finally:
        worker.stop()
        thread.join(15)
    finished = spans.get_finished_spans()
    sends = [s for s in finished if s.kind == SpanKind.PRODUCER]
    assert sorted(int(s.attributes["messaging.message.id"]) for s in sends) == sorted([ok, flaky, aflaky])
    assert {s.name for s in sends} == {"send default"}
    assert all(s.attributes["messaging.operation.type"] == "send" for s in sends)
    runs = {}
    for s in finished:
        if s.kind == SpanKind.CONSUMER:
            runs.setdefault(int(s.attributes["messaging.message.id"]), []).append(s)
    assert [s.attributes["pgjobs.outcome"] for s in runs[ok]] == ["completed"]
    only = runs[ok][0]
    assert only.name == "process pgjobs.noop"
    assert {k: only.attributes[k] for k in ("messaging.system", "messaging.operation.type",
                                            "messaging.destination.name", "pgjobs.task", "pgjobs.attempt")} == {
        "messaging.system": "pgjobs", "messaging.operation.type": "process",
        "messaging.destination.name": "default", "pgjobs.task": "pgjobs.noop", "pgjobs.attempt": 1}
    for job_id in (flaky, aflaky):  # the sync and the async task alike
        first, second = sorted(runs[job_id], key=lambda s: s.attributes["pgjobs.attempt"])
        assert (first.attributes["pgjobs.outcome"], first.status.status_code) == ("failed", StatusCode.ERROR)
        assert [e.name for e in first.events] == ["exception"]
        assert "planned" in first.events[0].attributes["exception.message"]
        assert (second.attributes["pgjobs.outcome"], second.status.status_code) == ("completed", StatusCode.UNSET)


def test_otel_traces_exporter_console_prints_a_real_workers_spans(admin: Admin, db, workers) -> None:
    workers.start("--import", "tasks_for_tests", env={"OTEL_TRACES_EXPORTER": "console"})
    job_id = admin.enqueue("pgjobs.noop")
    wait_for(lambda: _state(db, job_id) == "completed", 15, "the job to complete")
    wait_for(lambda: '"name": "process pgjobs.noop"' in workers.logs(), 5, "the span on the console")
    logs = workers.logs()
    assert '"messaging.system": "pgjobs"' in logs and f'"messaging.message.id": "{job_id}"' in logs


def _run_until_done(settings: Settings, db, ids: list[int], cron_runs: int = 0) -> None:
    worker = Worker(settings, install_signals=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: all(_state(db, j) == "completed" for j in ids), 20, "the jobs to complete")
        wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.jobs WHERE slot IS NOT NULL AND state = "
                                    "'completed'").fetchone()[0] >= cron_runs, 20, "the cron-born runs")
    finally:
        worker.stop()
        thread.join(15)


def test_a_runs_span_links_to_the_span_that_enqueued_it_and_a_cron_job_starts_its_own_trace(
        settings: Settings, admin: Admin, db, spans) -> None:
    tracer = otel._tracer
    with tracer.start_as_current_span("POST /orders") as request:
        job_id = admin.enqueue("pgjobs.noop")
        bulk = admin.enqueue_many("pgjobs.noop", [{}, {}])
    assert bulk == 2
    stored = db.execute("SELECT id, trace_context FROM pgjobs.jobs ORDER BY id").fetchall()
    assert all(ctx and ctx["traceparent"].startswith("00-") and set(ctx) <= {"traceparent", "tracestate"}
               for _, ctx in stored), stored
    admin.add_schedule("cron-born", cron="1 seconds", task="pgjobs.noop")
    wait_cron = settings.with_(catchup_grace=5.0)
    _run_until_done(wait_cron, db, [r[0] for r in stored], cron_runs=1)
    finished = spans.get_finished_spans()
    sends = {int(s.attributes["messaging.message.id"]): s for s in finished
             if s.kind == SpanKind.PRODUCER and "messaging.message.id" in s.attributes}
    [batch] = [s for s in finished if s.kind == SpanKind.PRODUCER and "messaging.batch.message_count" in s.attributes]
    assert batch.attributes["messaging.batch.message_count"] == 2
    for s in (sends[job_id], batch):
        assert s.context.trace_id == request.get_span_context().trace_id, "the enqueue is part of the request"
    runs = [s for s in finished if s.kind == SpanKind.CONSUMER]
    by_job = {int(s.attributes["messaging.message.id"]): s for s in runs}
    one = by_job[job_id]
    assert [(link.context.trace_id, link.context.span_id) for link in one.links] == [
        (sends[job_id].context.trace_id, sends[job_id].context.span_id)], "the run links to its enqueue"
    for bulk_id in [r[0] for r in stored if r[0] != job_id]:
        assert [link.context.span_id for link in by_job[bulk_id].links] == [batch.context.span_id]
    cron = next(s for s in runs if "pgjobs.slot" in s.attributes)
    assert cron.links == () or list(cron.links) == [], "nobody traced the slot's enqueue"
    assert cron.parent is None and "pgjobs.schedule_id" in cron.attributes
    assert cron.attributes["pgjobs.schedule"] == "cron-born", "a cron-born trace names its schedule"


def test_a_real_worker_process_links_its_span_to_the_enqueue_of_this_process(admin: Admin, db, workers,
                                                                             spans) -> None:
    with otel._tracer.start_as_current_span("POST /orders"):
        job_id = admin.enqueue("pgjobs.noop")
    send = next(s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER)
    workers.start("--import", "tasks_for_tests", env={"OTEL_TRACES_EXPORTER": "console"})
    wait_for(lambda: _state(db, job_id) == "completed", 15, "the job to complete")
    wait_for(lambda: '"name": "process pgjobs.noop"' in workers.logs(), 5, "the span on the console")
    logs = workers.logs()
    assert f'"trace_id": "0x{send.context.trace_id:032x}"' in logs, "the worker's span links to our trace"
    assert f'"span_id": "0x{send.context.span_id:016x}"' in logs


def test_otel_metrics_mirror_the_prometheus_ones(settings: Settings, admin: Admin, db) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from pgjobs.metrics import WorkerMetrics
    from pgjobs.otel_metrics import OtelMetrics

    settings = settings.with_(backoff_base=1.1)
    ids = [admin.enqueue("pgjobs.noop"), admin.enqueue("tests.fail_until", {"succeed_on": 2}, max_attempts=3),
           admin.enqueue("tests.fail_until", {"succeed_on": 9}, max_attempts=1)]
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    worker = Worker(settings, install_signals=False)
    prom, om = WorkerMetrics(worker), OtelMetrics(worker, provider)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: _state(db, ids[0]) == _state(db, ids[1]) == "completed" and _state(db, ids[2]) == "failed",
                 20, "the jobs to finish")
    finally:
        worker.stop()
        thread.join(15)
        om.close()
        prom.close()
    data = {m.name: m for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics}
    runs = {(p.attributes["task"], p.attributes["outcome"]): p.value for p in data["pgjobs.job.runs"].data.data_points}
    expected = {(s.labels["task"], s.labels["outcome"]): s.value for fam in prom.registry.collect()
                if fam.name == "pgjobs_job_runs" for s in fam.samples if s.name.endswith("_total")}
    assert runs == expected and runs[("tests.fail_until", "failed")] == 2, (runs, expected)
    retries = {p.attributes["task"]: p.value for p in data["pgjobs.job.retries"].data.data_points}
    assert retries == {"tests.fail_until": 1}
    assert sum(p.count for p in data["pgjobs.job.duration"].data.data_points) == 4
    jobs = {(p.attributes["queue"], p.attributes["state"]): p.value for p in data["pgjobs.jobs"].data.data_points}
    assert jobs[("default", "available")] == 0 and [p.value for p in data["pgjobs.database.up"].data.data_points] == [1]
    assert {"pgjobs.leader", "pgjobs.heartbeat.age", "pgjobs.queue.lag", "pgjobs.xmin_horizon.age"} <= set(data)


def test_otel_metrics_exporter_console_prints_a_real_workers_metrics(admin: Admin, db, workers) -> None:
    proc = workers.start(env={"OTEL_METRICS_EXPORTER": "console", "OTEL_METRIC_EXPORT_INTERVAL": "300"})
    job_id = admin.enqueue("pgjobs.noop")
    wait_for(lambda: _state(db, job_id) == "completed", 15, "the job to complete")
    wait_for(lambda: '"name": "pgjobs.job.runs"' in workers.logs(), 10, "the metrics on the console")
    workers.kill(proc, signal.SIGTERM)
    logs = workers.logs()
    assert '"outcome": "completed"' in logs and '"name": "pgjobs.jobs"' in logs
    assert "OpenTelemetry metrics on" in logs
