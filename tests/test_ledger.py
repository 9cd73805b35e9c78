"""The slot ledger: what happened to every slot of a schedule, recorded apart from the jobs.

Real workers and real slots: each outcome (completed, failed, skipped, running/waiting, missed, paused) is
produced by a schedule and read back with `schedule slots`; pruning every job leaves the ledger whole;
lateness is the first attempt's start minus the slot, so a retry's delay is not lateness.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import tasks_for_tests  # noqa: F401 - registers the tests.* tasks the schedules below name
from psycopg_pool import ConnectionPool

from conftest import ROOT, wait_for
from pgjobs import cron
from pgjobs.maintenance import LeaderDuties
from pgjobs.queries import queries
from pgjobs.scheduler import plan_slots

IMPORT = ("--import", "tasks_for_tests")
FAST = {"PGJOBS_CATCHUP_GRACE": "2"}


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgjobs", "--database-url", db_url, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)


def outcomes(admin, name: str) -> list[str]:
    return [r["outcome"] for r in admin.schedule_slots(name, limit=1000)]


def settled(db: psycopg.Connection, name: str, outcome: str) -> int:
    return db.execute("SELECT count(*) FROM pgjobs.slots l JOIN pgjobs.schedules s ON s.id = l.schedule_id "
                      "WHERE s.name = %s AND l.outcome = %s", (name, outcome)).fetchone()[0]


def test_a_day_of_missed_one_second_slots_is_one_range_with_its_count():
    spec, utc = cron.parse_cron("1 second"), cron.load_timezone("UTC")
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    p = plan_slots(spec, utc, t0, t0 + timedelta(days=1, milliseconds=300), catchup="latest", grace=60)
    assert [s.slot for s in p.slots] == [t0 + timedelta(days=1)]
    first, last, count = p.missed
    assert (first, last, count) == (t0, t0 + timedelta(days=1) - timedelta(seconds=1), 86_400)
    # A cron expression is counted by enumerating, up to a cap: beyond it the count is "more than".
    every_second = cron.parse_cron("* * * * * *")
    p = plan_slots(every_second, utc, t0, t0 + timedelta(days=1, milliseconds=300), catchup="none", grace=60)
    assert p.slots == [] and p.missed[0] == t0 and p.missed[2] is None
    p = plan_slots(every_second, utc, t0, t0 + timedelta(minutes=10), catchup="none", grace=60)
    assert p.missed[2] == 601


def test_every_outcome_is_in_the_ledger_and_survives_pruning_every_job(admin, db, workers, settings, db_url):
    admin.add_schedule("ok", cron="1 second", task="pgjobs.noop", overlap="allow")
    admin.add_schedule("bad", cron="1 second", task="pgjobs.sleep", args={"seconds": 0, "fail": True},
                       max_attempts=1, overlap="allow")
    admin.add_schedule("slow", cron="1 second", task="pgjobs.sleep", args={"seconds": 2.5}, overlap="skip")
    workers.start(*IMPORT, env=FAST, concurrency=4)
    wait_for(lambda: settled(db, "ok", "completed") >= 3 and settled(db, "bad", "failed") >= 3
             and settled(db, "slow", "skipped") >= 2 and settled(db, "slow", "completed") >= 1, 20,
             "completed, failed and skipped slots in the ledger")
    live = set(outcomes(admin, "slow"))
    assert live <= {"completed", "skipped", "running", "waiting"} and "skipped" in live
    bad = admin.schedule_slots("bad", limit=5)
    assert all(r["reason"] and "failed on purpose" in r["reason"] for r in bad if r["outcome"] == "failed")
    skipped = [r for r in admin.schedule_slots("slow", limit=50) if r["outcome"] == "skipped"]
    assert all("still unfinished" in r["reason"] for r in skipped)
    workers.stop_all()

    before = {n: admin.schedule_slots(n, limit=1000) for n in ("ok", "bad", "slow")}
    # Prune with zero retention: every finished job goes; the ledger (settled first) keeps every slot.
    with ConnectionPool(db_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=True) as pool:
        duties = LeaderDuties(pool, queries("pgjobs"), settings.with_(retention_completed=0, retention_failed=0))
        db.execute("UPDATE pgjobs.jobs SET state = 'cancelled', finished_at = now(), worker_id = NULL "
                   "WHERE state IN ('available', 'running')")  # the workers are gone: end what they left
        duties.prune()
    assert db.execute("SELECT count(*) FROM pgjobs.jobs").fetchone()[0] == 0
    for name, rows in before.items():
        after = admin.schedule_slots(name, limit=1000)
        assert [r["slot"] for r in after] == [r["slot"] for r in rows], name
        for old, new in zip(rows, after, strict=True):
            if old["outcome"] in ("completed", "failed", "skipped"):
                assert (new["outcome"], new["started_at"], new["reason"]) == (
                    old["outcome"], old["started_at"], old["reason"]), (name, old, new)
    # Compact: one row per slot, nothing else.
    total = db.execute("SELECT count(*) FROM pgjobs.slots").fetchone()[0]
    assert total == sum(len(r) for r in before.values())

    out = cli(db_url, "schedule", "slots", "bad", "--json", "--limit", "3")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert len(listed) == 3 and all(r["outcome"] == "failed" for r in listed)
    assert [r["slot"] for r in listed] == sorted(r["slot"] for r in listed)
    text = cli(db_url, "schedule", "slots", "slow", "--since", "1h")
    assert text.returncode == 0 and "skipped" in text.stdout and "still unfinished" in text.stdout
    for bad_args in (["slots", "nope"], ["slots", "ok", "--since", "yesterday-ish"], ["slots", "ok", "--limit", "0"]):
        out = cli(db_url, "schedule", *bad_args)
        assert out.returncode == 2 and out.stderr.startswith("pgjobs: error: ") and out.stderr.count("\n") == 1


def test_downtime_is_one_missed_row_and_a_pause_one_paused_row(admin, db, workers):
    admin.add_schedule("down", cron="1 second", task="pgjobs.noop", catchup="latest")
    admin.add_schedule("held", cron="1 second", task="pgjobs.noop", catchup="none", enabled=False)
    # A day of downtime for one schedule; a pause of an hour for the other (next_run_at moved back, as a
    # long pause or a day without workers leaves them).
    db.execute("UPDATE pgjobs.schedules SET next_run_at = date_trunc('second', now()) - interval '1 day' "
               "WHERE name = 'down'")
    admin.pause_schedule("held")
    db.execute("UPDATE pgjobs.schedules SET next_run_at = date_trunc('second', now()) - interval '1 hour' "
               "WHERE name = 'held'")
    admin.resume_schedule("held")
    workers.start(env=FAST)
    wait_for(lambda: "completed" in outcomes(admin, "down") and len(outcomes(admin, "held")) >= 2, 20,
             "both schedules back on cadence")
    down = admin.schedule_slots("down", since=datetime.now(UTC) - timedelta(days=2), limit=10)
    missed = down[0]
    assert missed["outcome"] == "missed" and 86_390 <= missed["slot_count"] <= 86_410, missed
    assert missed["last_slot"] - missed["slot"] == timedelta(seconds=missed["slot_count"] - 1)
    assert "downtime" in missed["reason"] and "latest" in missed["reason"]
    assert down[1]["outcome"] in ("completed", "running", "waiting") and down[1]["slot"] > missed["last_slot"]
    held = admin.schedule_slots("held", since=datetime.now(UTC) - timedelta(days=2), limit=10)
    assert held[0]["outcome"] == "paused" and 3590 <= held[0]["slot_count"] <= 3610, held[0]
    assert "paused" in held[0]["reason"]
    assert db.execute("SELECT paused_since FROM pgjobs.schedules WHERE name = 'held'").fetchone()[0] is None
    # A day of one-second slots and an hour of them: one row each.
    assert db.execute("SELECT count(*) FROM pgjobs.slots WHERE outcome IN ('missed', 'paused')").fetchone()[0] == 2


def test_a_cron_edited_during_a_pause_or_downtime_keeps_the_old_crons_unrun_slots_in_the_ledger(admin, db):
    # An hour paused, then the cron changes: the next run restarts from now with the new cron, and the old
    # cron's hour of slots is one `paused` row saying why (it used to leave no trace). The same for a
    # schedule an hour behind with no leader: one `missed` row. No worker runs: the edit alone records it.
    admin.add_schedule("held", cron="1 second", task="pgjobs.noop", enabled=False)
    admin.add_schedule("behind", cron="1 second", task="pgjobs.noop")
    db.execute("UPDATE pgjobs.schedules SET next_run_at = date_trunc('second', now()) - interval '1 hour' "
               "WHERE name IN ('held', 'behind')")
    admin.edit_schedule("held", cron="*/5 * * * *")
    admin.edit_schedule("behind", timezone="Europe/Paris", cron="0 3 * * *")
    since = datetime.now(UTC) - timedelta(days=1)
    [held] = admin.schedule_slots("held", since=since)
    assert held["outcome"] == "paused" and 3595 <= held["slot_count"] <= 3605, held
    assert held["last_slot"] - held["slot"] == timedelta(seconds=held["slot_count"] - 1)
    assert "paused" in held["reason"] and "'1 second'" in held["reason"], held["reason"]
    [behind] = admin.schedule_slots("behind", since=since)
    assert behind["outcome"] == "missed" and 3595 <= behind["slot_count"] <= 3605, behind
    assert "downtime" in behind["reason"]
    # The new cron starts from now; an edit that keeps the cron records nothing more.
    next_run = db.execute("SELECT next_run_at > now() FROM pgjobs.schedules WHERE name = 'held'").fetchone()[0]
    assert next_run
    admin.edit_schedule("held", description="no cron change")
    assert len(admin.schedule_slots("held", since=since)) == 1


def test_lateness_is_the_first_attempts_start_not_the_retry(admin, db, workers):
    # Fails on attempt 1, succeeds on attempt 2 after a ~2 s backoff: the slot was on time.
    admin.add_schedule("retry", cron="*/4 * * * * *", task="tests.fail_until", args={"succeed_on": 2},
                       max_attempts=3)
    workers.start(*IMPORT, env={"PGJOBS_BACKOFF_BASE": "2"})
    wait_for(lambda: settled(db, "retry", "completed") >= 1, 25, "a slot completed on its second attempt")
    row = next(r for r in admin.schedule_slots("retry", limit=20) if r["outcome"] == "completed")
    job = admin.get_job(row["job_id"])
    assert job["attempt"] == 2 and (job["started_at"] - row["slot"]).total_seconds() >= 1.5
    assert row["lateness"] < 0.5, row
    status = admin.status()["slot_lateness"]
    assert status["max"] < 0.5, status
    chart = admin.recent_lateness(since=datetime.now(UTC) - timedelta(hours=1))
    assert chart and max(r["lateness"] for r in chart) < 0.5
