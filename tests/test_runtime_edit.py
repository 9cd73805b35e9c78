"""Runtime editing: a running leader follows schedule changes at once, with no worker restart, and every
change is in the audit log with who made it and the values before and after."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from datetime import datetime, timedelta

import psycopg

from conftest import ROOT, wait_for

SECOND = timedelta(seconds=1)


def db_now(db: psycopg.Connection) -> datetime:
    return db.execute("SELECT clock_timestamp()").fetchone()[0]


def jobs_of(db: psycopg.Connection, name: str) -> list[tuple[datetime, datetime]]:
    return db.execute(
        "SELECT j.slot, j.inserted_at FROM pgjobs.jobs j JOIN pgjobs.schedules s ON s.id = j.schedule_id "
        "WHERE s.name = %s AND j.slot IS NOT NULL ORDER BY j.slot", (name,)).fetchall()


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgjobs", "--database-url", db_url, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)


def wait_leader(db: psycopg.Connection) -> None:
    wait_for(lambda: db.execute("SELECT count(*) FROM pgjobs.workers WHERE leader_since IS NOT NULL").fetchone()[0],
             15, "a leader")


def test_a_cron_edit_reaches_the_sleeping_leader_at_once(admin, db, workers):
    admin.add_schedule("report", cron="0 0 1 1 *", task="pgjobs.noop", overlap="allow")  # next run: new year
    proc = workers.start()
    wait_leader(db)  # nothing due for months: the leader sleeps (up to 60 s between checks)

    edited = admin.edit_schedule("report", cron="1 second")
    edit_at = db_now(db)
    # next_run_at recomputed from now, not kept from the old cron
    assert edit_at - SECOND <= edited["next_run_at"] <= edit_at + SECOND
    first = wait_for(lambda: jobs_of(db, "report"), 5, "the first job of the edited cron")[0]
    assert first[0] == edited["next_run_at"]
    assert first[1] - first[0] < timedelta(milliseconds=500), "the leader was woken by the change, not by polling"

    # Every second -> every other second: from the next pass on, only even seconds.
    n_before = len(jobs_of(db, "report"))
    edited = admin.edit_schedule("report", cron="2 seconds")
    assert edited["next_run_at"].timestamp() % 2 == 0
    wait_for(lambda: len(jobs_of(db, "report")) >= n_before + 2, 8, "two slots of the 2-second cron")
    new_slots = [s for s, _ in jobs_of(db, "report") if s >= edited["next_run_at"]]
    assert len(new_slots) >= 2 and all(int(s.timestamp()) % 2 == 0 for s in new_slots)
    assert [b - a for a, b in zip(new_slots, new_slots[1:], strict=False)] == [2 * SECOND] * (len(new_slots) - 1)
    assert proc.poll() is None  # the same worker process throughout


def test_pause_resume_remove_while_running_and_audited(admin, db, workers, db_url):
    admin.add_schedule("tick", cron="1 second", task="pgjobs.noop", catchup="none", overlap="allow")
    proc = workers.start(env={"PGJOBS_CATCHUP_GRACE": "2"})
    wait_for(lambda: len(jobs_of(db, "tick")) >= 2, 15, "tick on cadence")

    paused = admin.pause_schedule("tick")
    assert paused["enabled"] is False
    count = len(jobs_of(db, "tick"))
    paused_at = db_now(db)
    wait_for(lambda: db_now(db) > paused_at + 3 * SECOND, 10, "three slots to pass while paused")
    # At most the slot that was being inserted as we paused; then nothing.
    assert len(jobs_of(db, "tick")) <= count + 1
    count = len(jobs_of(db, "tick"))

    resumed = admin.resume_schedule("tick")
    assert resumed["enabled"] is True
    resumed_at = db_now(db)
    wait_for(lambda: len(jobs_of(db, "tick")) >= count + 2, 8, "tick again after resume")
    after = [s for s, _ in jobs_of(db, "tick")][count:]
    # catch-up 'none' with a 2 s grace: no paused second older than that is run late, then back on cadence
    assert after[0] >= resumed_at - 3 * SECOND
    assert [b - a for a, b in zip(after, after[1:], strict=False)] == [SECOND] * (len(after) - 1)

    # A CLI edit: the audit actor is the OS user.
    out = cli(db_url, "schedule", "edit", "tick", "--description", "edited from the shell")
    assert out.returncode == 0, out.stderr

    history = len(jobs_of(db, "tick"))
    admin.remove_schedule("tick")
    removed_at = db_now(db)
    assert db.execute("SELECT count(*) FROM pgjobs.schedules WHERE name = 'tick'").fetchone()[0] == 0
    wait_for(lambda: db_now(db) > removed_at + 2 * SECOND, 10, "two slots after the removal")
    kept = db.execute("SELECT count(*), count(*) FILTER (WHERE inserted_at > %s + interval '0.2 s') "
                      "FROM pgjobs.jobs WHERE schedule_id IS NULL AND slot IS NOT NULL", (removed_at,)).fetchone()
    assert kept[0] >= history and kept[1] == 0  # history kept (schedule_id NULL); no new jobs
    assert proc.poll() is None

    out = cli(db_url, "audit", "list", "--json", "--name", "tick")
    assert out.returncode == 0, out.stderr
    entries = list(reversed(json.loads(out.stdout)))  # oldest first
    assert [e["action"] for e in entries] == ["create", "pause", "resume", "edit", "remove"]
    by_action = {e["action"]: e for e in entries}
    assert all(e["actor"] == "test" for e in entries if e["action"] != "edit")
    assert by_action["edit"]["actor"] == f"os:{getpass.getuser()}"
    assert by_action["create"]["before"] is None and by_action["create"]["after"]["cron"] == "1 second"
    assert by_action["pause"]["before"]["enabled"] is True and by_action["pause"]["after"]["enabled"] is False
    assert by_action["resume"]["before"]["enabled"] is False and by_action["resume"]["after"]["enabled"] is True
    assert by_action["edit"]["before"]["description"] == ""
    assert by_action["edit"]["after"]["description"] == "edited from the shell"
    assert by_action["remove"]["before"]["name"] == "tick" and by_action["remove"]["after"] is None
    assert all(e["at"] and e["entity"] == "schedule" for e in entries)


def test_a_cron_edit_is_audited_with_before_and_after(admin, db_url):
    admin.add_schedule("nightly", cron="0 3 * * *", task="pgjobs.noop", timezone="Europe/Berlin")
    admin.edit_schedule("nightly", cron="30 2 * * *")
    entries = admin.audit(entity_name="nightly")
    edit = entries[0]
    assert edit["action"] == "edit" and edit["actor"] == "test"
    assert edit["before"]["cron"] == "0 3 * * *" and edit["after"]["cron"] == "30 2 * * *"
    assert edit["before"]["next_run_at"] != edit["after"]["next_run_at"]
