"""OpenTelemetry traces (optional extra `otel`): one span per job attempt, and one per enqueue.

On when the OpenTelemetry API is installed and traces are configured: a host application set a tracer
provider before starting the worker, or `OTEL_TRACES_EXPORTER` names an exporter (`console`, or `otlp` with
`opentelemetry-exporter-otlp` installed), in which case `configure_from_env()` sets up the SDK from the standard
`OTEL_*` variables. Off, every hook costs one attribute check; `OTEL_SDK_DISABLED=true` keeps it off.

Spans follow the messaging semantic conventions where they fit:
- an attempt: `process <task>`, kind CONSUMER, `messaging.system = "pgjobs"`, `messaging.operation.type =
  "process"`, the queue as `messaging.destination.name`, the job id as `messaging.message.id`, and `pgjobs.task`,
  `pgjobs.attempt`, `pgjobs.schedule_id`, `pgjobs.slot`, `pgjobs.outcome`; status ERROR with the exception
  recorded when the attempt failed or timed out. It is the current span while the task runs, so the task's own
  spans (HTTP clients, database drivers) are its children; for an async task, in the task's own context.
- an enqueue: `send <queue>`, kind PRODUCER, `messaging.operation.type = "send"`, the job id once inserted
  (a bulk enqueue: one span, `messaging.batch.message_count`). Its W3C trace context (`traceparent`,
  `tracestate`; never baggage) is stored with the job (`jobs.trace_context`), and every attempt's span links
  to it, across processes: from the run to the request that enqueued it. A job nobody traced (a cron slot,
  an untraced caller) starts a trace of its own; a cron-born one names its schedule (`pgjobs.schedule`) and
  slot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("pgjobs.otel")

# The OpenTelemetry API is imported only when tracing may be on (an exporter is named, or the process already
# imported it, as an application that configured a tracer provider has): a worker without it pays no import.
_trace: Any = None
_context: Any = None

enabled = False           # set by enable(); read by every hook
_tracer: Any = None
FAILED_OUTCOMES = frozenset({"failed", "timed out"})


def _load() -> bool:
    """Import the OpenTelemetry API; False when the `otel` extra is not installed."""
    global _trace, _context
    if _trace is None:
        try:
            from opentelemetry import context, trace
        except ImportError:
            return False
        _trace, _context = trace, context
    return True


def configure_from_env() -> bool:
    """Turn tracing on for a worker process: keep a tracer provider the host set, or build the SDK's from
    `OTEL_TRACES_EXPORTER` (console, otlp). Returns whether tracing is on; a missing package is one log line."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if (not exporter or exporter == "none") and "opentelemetry.trace" not in sys.modules:
        return False  # nothing configured tracing in this process
    if not _load():
        if exporter and exporter != "none":
            log.warning("OTEL_TRACES_EXPORTER=%s but OpenTelemetry is not installed: pip install 'pgjobs[otel]'",
                        exporter)
        return False
    if not isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider):
        return enable()  # the host application configured tracing
    if not exporter or exporter == "none":
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        log.warning("OTEL_TRACES_EXPORTER=%s needs the OpenTelemetry SDK: pip install 'pgjobs[otel]'", exporter)
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                       "pgjobs-worker")}))
    for name in (e.strip() for e in exporter.split(",")):
        if name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http")
                continue
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r (use console or otlp)", name)
    _trace.set_tracer_provider(provider)
    return enable()


def tracing() -> bool:
    """For enqueues in application code: on once the application configured a tracer provider."""
    if enabled:
        return True
    if "opentelemetry.trace" not in sys.modules or not _load():
        return False
    if isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider):
        return False
    return enable()


def enable(tracer_provider: Any = None) -> bool:
    """Trace with `tracer_provider` (default: the global one). Tests pass an SDK provider of their own."""
    global enabled, _tracer
    if not _load():
        return False
    from pgjobs import __version__

    _tracer = (tracer_provider.get_tracer("pgjobs", __version__) if tracer_provider is not None
               else _trace.get_tracer("pgjobs", __version__))
    enabled = True
    return True


def disable() -> None:
    global enabled, _tracer
    enabled, _tracer = False, None


def start_attempt(job: Any, schedule: str | None = None) -> tuple[Any, Any]:
    """Start the span of one attempt and make it current; returns what `end_attempt` needs. `schedule`: the
    name of a cron-born job's schedule (`pgjobs.schedule`)."""
    attrs = {
        "messaging.system": "pgjobs", "messaging.operation.type": "process", "messaging.operation.name": "process",
        "messaging.destination.name": job.queue, "messaging.message.id": str(job.id),
        "pgjobs.task": job.task, "pgjobs.attempt": job.attempt, "pgjobs.max_attempts": job.max_attempts,
    }
    if job.schedule_id is not None:
        attrs["pgjobs.schedule_id"] = job.schedule_id
    if schedule is not None:
        attrs["pgjobs.schedule"] = schedule
    if job.slot is not None:
        attrs["pgjobs.slot"] = job.slot.isoformat()
    span = _tracer.start_span(f"process {job.task}", kind=_trace.SpanKind.CONSUMER, attributes=attrs,
                              links=_links(job))
    token = _context.attach(_trace.set_span_in_context(span))
    return span, token


def end_attempt(started: tuple[Any, Any], outcome: str, exc: BaseException | None = None) -> None:
    span, token = started
    try:
        _context.detach(token)
    except Exception:  # noqa: BLE001 - a detach from another context must not fail the job
        pass
    span.set_attribute("pgjobs.outcome", outcome)
    if outcome in FAILED_OUTCOMES:
        if exc is not None:
            span.record_exception(exc)
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, outcome if exc is None else type(exc).__name__))
    span.end()


# A stored trace context is a traceparent (55 characters) and a tracestate (at most 512 by the W3C spec);
# anything larger is not a trace context this code wrote, and is not stored.
TRACE_CONTEXT_MAX = 1024


def trace_context() -> Any:
    """The current span's W3C trace context as the jsonb to store with a job, or None."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from psycopg.types.json import Jsonb

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    if not carrier.get("traceparent") or sum(len(k) + len(v) for k, v in carrier.items()) > TRACE_CONTEXT_MAX:
        return None
    return Jsonb(carrier)


@contextlib.contextmanager
def bulk_enqueue_span(task: str, queue: str, count: int) -> Iterator[str | None]:
    """One `send` span for a bulk enqueue, when tracing; yields the trace context as COPY text (or None)."""
    if not tracing():
        yield None
        return
    with _tracer.start_as_current_span(f"send {queue}", kind=_trace.SpanKind.PRODUCER, attributes={
            "messaging.system": "pgjobs", "messaging.operation.type": "send", "messaging.operation.name": "send",
            "messaging.destination.name": queue, "pgjobs.task": task, "messaging.batch.message_count": count}):
        stored = trace_context()
        yield None if stored is None else json.dumps(stored.obj)


def _links(job: Any) -> list[Any]:
    """The link from an attempt's span to the span that enqueued the job, when one was stored."""
    stored = getattr(job, "trace_context", None)
    if not isinstance(stored, dict):
        return []
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    try:
        ctx = TraceContextTextMapPropagator().extract({str(k): str(v) for k, v in stored.items()})
        span_context = _trace.get_current_span(ctx).get_span_context()
    except Exception:  # noqa: BLE001 - a malformed context must not fail the job
        return []
    return [_trace.Link(span_context, {"pgjobs.link": "enqueue"})] if span_context.is_valid else []


def enqueue_span(task: str, queue: str) -> Any:
    """The span of one enqueue (a context manager); the caller sets `messaging.message.id` on it."""
    return _tracer.start_as_current_span(f"send {queue}", kind=_trace.SpanKind.PRODUCER, attributes={
        "messaging.system": "pgjobs", "messaging.operation.type": "send", "messaging.operation.name": "send",
        "messaging.destination.name": queue, "pgjobs.task": task})
