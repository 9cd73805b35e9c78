"""examples/fastapi_app.py runs: its endpoint writes a row and enqueues a job in one transaction (a failed
request leaves neither), and a real worker process runs the job's async task."""

from __future__ import annotations

import importlib

# fastapi and httpx are in the dev extra: missing, the test fails at import (it never skips).
import fastapi  # noqa: F401
import httpx  # noqa: F401

from conftest import job_row, wait_for


def test_the_fastapi_example_enqueues_in_the_requests_transaction_and_a_worker_runs_it(
        db_url: str, db, workers, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    monkeypatch.setenv("PGJOBS_DATABASE_URL", db_url)
    example = importlib.import_module("examples.fastapi_app")
    with TestClient(example.app) as client:
        ok = client.post("/orders", json={"item": "book", "quantity": 2})
        assert ok.status_code == 200, ok.text
        refused = client.post("/orders", json={"item": "lamp", "quantity": 0})
        assert refused.status_code == 422
    created = ok.json()
    assert db.execute("SELECT id, item FROM example_orders").fetchall() == [(created["order_id"], "book")]
    assert db.execute("SELECT id FROM pgjobs.jobs").fetchall() == [(created["job_id"],)], \
        "the failed request's job was rolled back with its order"
    workers.start("--import", "examples.fastapi_app")
    wait_for(lambda: job_row(db, created["job_id"])["state"] == "completed", 15, "the worker to run the job")
    assert job_row(db, created["job_id"])["result"] == {"order_id": created["order_id"], "item": "book"}
    assert db.execute("SELECT receipt_sent_at IS NOT NULL FROM example_orders").fetchone()[0]
