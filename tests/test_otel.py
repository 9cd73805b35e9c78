"""OpenTelemetry: one span per attempt (sync and async tasks) with the messaging attributes, the outcome as
status, an enqueue span; the SDK's in-memory exporter in process, and OTEL_TRACES_EXPORTER=console on a real
worker process."""

from __future__ import annotations

import threading

import async_tasks_for_tests  # noqa: F401 - registers the async test tasks in this process too
import pytest
import tasks_for_tests  # noqa: F401

from conftest import job_state as _state
from conftest import wait_for
from pgjobs import otel
from pgjobs.admin import Admin
from pgjobs.config import Settings
from pgjobs.worker import Worker

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402


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
