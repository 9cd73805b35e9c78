"""The CLI contract: JSON output, and every bad input rejected with one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import psycopg
import pytest

from conftest import ROOT
from pgjobs.cli import main


def _counts(db: psycopg.Connection) -> tuple:
    return db.execute("SELECT (SELECT count(*) FROM pgjobs.schedules), (SELECT count(*) FROM pgjobs.jobs), "
                      "(SELECT count(*) FROM pgjobs.audit)").fetchone()


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


BAD = [
    (["schedule", "add", "x", "--cron", "*/61 * * * *", "--task", "pgjobs.noop"], "minute"),
    (["schedule", "add", "x", "--cron", "* * * *", "--task", "pgjobs.noop"], "cron '* * * *'"),
    (["schedule", "add", "x", "--cron", "@reboot", "--task", "pgjobs.noop"], "@reboot"),
    (["schedule", "add", "x", "--cron", "61 seconds", "--task", "pgjobs.noop"], "61"),
    (["schedule", "add", "x", "--cron", "* * * * *", "--task", "pgjobs.noop", "--timezone", "Mars/Base"],
     "unknown timezone 'Mars/Base'"),
    (["schedule", "add", "x", "--cron", "* * * * *", "--task", "app.missing"], "task 'app.missing' is not registered"),
    (["schedule", "add", "x", "--cron", "* * * * *", "--task", "bad task!"], "task 'bad task!'"),
    (["schedule", "add", "x", "--cron", "* * * * *", "--task", "pgjobs.noop", "--args", "{bad"], "invalid JSON"),
    (["schedule", "add", "x", "--cron", "* * * * *", "--task", "pgjobs.noop", "--args", "[1, 2]"],
     "must be a JSON object"),
    (["schedule", "add", "x", "--cron", "* * * * *", "--task", "pgjobs.refresh_materialized_view", "--args",
      json.dumps({"view": "v" * 80})], "longer than 63 bytes"),
    (["schedule", "add", " padded", "--cron", "* * * * *", "--task", "pgjobs.noop"], "schedule name ' padded'"),
    (["schedule", "add", "x", "--cron", "* * * * *", "--task", "pgjobs.noop", "--queue", "a b"], "queue 'a b'"),
    (["schedule", "add", "x", "--cron", "* * * * *", "--task", "pgjobs.noop", "--max-attempts", "0"],
     "max_attempts: 0 is outside"),
    (["schedule", "edit", "missing", "--cron", "* * * * *"], "schedule 'missing' does not exist"),
    (["schedule", "pause", "missing"], "schedule 'missing' does not exist"),
    (["enqueue", "pgjobs.noop", "--args", "nope"], "invalid JSON"),
    (["enqueue", "app.missing"], "not registered"),
    (["jobs", "list", "--state", "exploded"], "state 'exploded'"),
    (["--import", "no_such_module_xyz", "schedule", "list"], "cannot import task module 'no_such_module_xyz'"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a[:3]) + f"-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(capsys, db_url, db, argv, message) -> None:
    before = _counts(db)
    code, out, err = _run(capsys, "--database-url", db_url, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("pgjobs: error: "), err
    assert message in err
    assert _counts(db) == before


@pytest.mark.parametrize(("url", "message"), [
    ("htp://x", "scheme 'htp' is not postgresql://"),
    ("not a url", "expected postgresql://"),
    ("postgresql://x:y@127.0.0.1:1/db?sslmode=bogus", "invalid sslmode value"),
])
def test_bad_database_url_is_one_line(capsys, url, message) -> None:
    code, _, err = _run(capsys, "--database-url", url, "schedule", "list")
    assert code in (1, 2)
    assert err.count("\n") == 1 and message in err, err


def test_password_in_a_bad_url_is_not_printed(capsys) -> None:
    _, _, err = _run(capsys, "--database-url", "mysql://admin:s3cret@host/db", "status")
    assert "s3cret" not in err


def test_schedule_lifecycle_with_json_output(capsys, db_url, db) -> None:
    base = ["--database-url", db_url]
    code, out, _ = _run(capsys, *base, "schedule", "add", "otel", "--cron", "*/2 * * * *", "--task",
                        "pgjobs.refresh_materialized_view", "--args", '{"view": "otel_trace_summaries"}',
                        "--timezone", "Europe/Berlin")
    assert code == 0 and "created" in out
    code, out, _ = _run(capsys, *base, "schedule", "list", "--json")
    [row] = json.loads(out)
    assert row["name"] == "otel" and row["timezone"] == "Europe/Berlin" and row["enabled"] is True
    assert _run(capsys, *base, "schedule", "edit", "otel", "--cron", "*/5 * * * *")[0] == 0
    assert json.loads(_run(capsys, *base, "schedule", "show", "otel", "--json")[1])["cron"] == "*/5 * * * *"
    assert _run(capsys, *base, "schedule", "pause", "otel")[0] == 0
    assert json.loads(_run(capsys, *base, "schedule", "show", "otel", "--json")[1])["enabled"] is False
    assert _run(capsys, *base, "schedule", "resume", "otel")[0] == 0
    code, out, _ = _run(capsys, *base, "schedule", "run-now", "otel")
    assert code == 0 and "enqueued job" in out
    code, out, _ = _run(capsys, *base, "jobs", "list", "--schedule", "otel", "--json")
    [job] = json.loads(out)
    assert set(job) >= {"id", "task", "state", "schedule", "slot", "attempt", "inserted_at", "started_at",
                        "finished_at", "worker", "error"}
    assert job["schedule"] == "otel" and job["state"] == "available"
    assert _run(capsys, *base, "schedule", "remove", "otel")[0] == 0
    assert db.execute("SELECT count(*) FROM pgjobs.schedules").fetchone()[0] == 0
    code, out, _ = _run(capsys, *base, "audit", "list", "--json")
    actions = [a["action"] for a in json.loads(out)]
    assert actions == ["remove", "run-now", "resume", "pause", "edit", "create"]
    code, out, _ = _run(capsys, *base, "status", "--json")
    assert code == 0 and json.loads(out)["leader"] is None


def test_enqueue_with_a_unique_key_returns_the_existing_job(capsys, db_url, db) -> None:
    base = ["--database-url", db_url]
    first = _run(capsys, *base, "enqueue", "pgjobs.noop", "--unique-key", "k1")[1]
    second = _run(capsys, *base, "enqueue", "pgjobs.noop", "--unique-key", "k1")[1]
    assert first == second
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()[0] == 1


def test_schedule_check_describes_and_previews(capsys) -> None:
    code, out, _ = _run(capsys, "schedule", "check", "*/2 * * * *", "--timezone", "America/New_York", "--json")
    info = json.loads(out)
    assert code == 0 and len(info["next"]) == 5 and info["description"]


def test_python_dash_m_entry_point_exit_codes(db_url) -> None:
    env = {**os.environ, "PGJOBS_DATABASE_URL": db_url}
    ok = subprocess.run([sys.executable, "-m", "pgjobs", "schedule", "list"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "pgjobs", "schedule", "add", "x", "--cron", "nope", "--task",
                          "pgjobs.noop"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("pgjobs: error: cron 'nope'")
    no_url = subprocess.run([sys.executable, "-m", "pgjobs", "schedule", "list"], cwd=ROOT,
                            env={k: v for k, v in env.items() if k not in ("PGJOBS_DATABASE_URL", "DATABASE_URL")},
                            capture_output=True, text=True, timeout=60)
    assert no_url.returncode == 2 and "no database URL" in no_url.stderr


def test_unmigrated_database_says_run_migrate(capsys, empty_db_url) -> None:
    code, _, err = _run(capsys, "--database-url", empty_db_url, "schedule", "list")
    assert code == 2 and "pgjobs migrate" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "--database-url", empty_db_url, "status")
    assert code == 2 and "run pgjobs migrate" in err and len(err.strip().splitlines()) == 1


def test_status_of_a_database_whose_version_table_is_empty_says_not_migrated(capsys, db_url, db) -> None:
    # `alembic stamp base` (or a hand-made schema) leaves the tables with an empty alembic_version: status
    # reports no revision instead of failing on the missing row.
    db.execute("DELETE FROM pgjobs.alembic_version")
    code, out, err = _run(capsys, "--database-url", db_url, "status")
    assert code == 0, err
    assert "schema:   revision not migrated" in out
    code, out, _ = _run(capsys, "--database-url", db_url, "status", "--json")
    assert code == 0 and json.loads(out)["schema_revision"] is None


def test_status_is_formatted_for_people_and_json_for_machines(capsys, db_url, db, workers) -> None:
    from conftest import wait_for

    workers.start()
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.workers").fetchone()[0] == 1, timeout=30,
             what="the worker to register")
    code, out, _ = _run(capsys, "--database-url", db_url, "status")
    assert code == 0
    assert '["default"]' not in out and "[" not in out.split("workers:", 1)[1]
    assert "workers:  1 live" in out
    row = [line for line in out.splitlines() if " default " in f" {line} "][-1]
    assert re.search(r"\b\d+(\.\d)?s ago\b", row) and not re.search(r"\d\.\d{2,}", row), row
    assert all(line == line.rstrip() for line in out.splitlines()), "trailing padding"
    code, out, _ = _run(capsys, "--database-url", db_url, "status", "--json")
    data = json.loads(out)
    assert data["workers"][0]["queues"] == ["default"] and isinstance(data["workers"][0]["heartbeat_age"], float)


def test_tables_carry_no_trailing_padding(capsys, db_url, db) -> None:
    main(["--database-url", db_url, "schedule", "add", "a-rather-long-schedule-name-for-width", "--cron",
          "* * * * *", "--task", "pgjobs.noop", "--description", "x" * 80])
    main(["--database-url", db_url, "schedule", "add", "b", "--cron", "* * * * *", "--task", "pgjobs.noop"])
    capsys.readouterr()
    code, out, _ = _run(capsys, "--database-url", db_url, "schedule", "list")
    assert code == 0 and len(out.splitlines()) >= 3
    assert all(line == line.rstrip() for line in out.splitlines()), [line for line in out.splitlines()
                                                                     if line != line.rstrip()]


def test_a_demo_schedule_is_edited_without_import(db_url, db) -> None:
    """`pgjobs.demo.insert_spans` is pgjobs' own: no command needs `--import pgjobs.demo` for it."""
    env = {**os.environ, "PGJOBS_DATABASE_URL": db_url}
    env.pop("PGJOBS_IMPORTS", None)
    add = subprocess.run([sys.executable, "-m", "pgjobs", "schedule", "add", "demo-spans", "--cron", "5 seconds",
                          "--task", "pgjobs.demo.insert_spans"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert add.returncode == 0, add.stderr
    edit = subprocess.run([sys.executable, "-m", "pgjobs", "schedule", "edit", "demo-spans", "--cron",
                           "10 seconds"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert edit.returncode == 0, edit.stderr
    assert db.execute("SELECT cron FROM pgjobs.schedules WHERE name = 'demo-spans'").fetchone()[0] == "10 seconds"


def test_console_hash_password_help_prints_usage() -> None:
    done = subprocess.run([sys.executable, "-m", "console", "hash-password", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m console hash-password"), done
