"""The console, page by page and action by action, through Streamlit's AppTest against a real database.

Each test signs in (alice is an admin, vic a viewer), acts like an operator, and checks the database through
the admin API: what the console did, and that the audit names the signed-in user.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from conftest import wait_for
from console import auth, run
from pgjobs.admin import Admin, NotFound, PermissionDenied
from pgjobs.config import Settings

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "console" / "app.py")
ADMIN_PW, VIEWER_PW = "correct horse", "battery staple"
USERS = f"alice:admin:{auth.hash_password(ADMIN_PW)},vic:viewer:{auth.hash_password(VIEWER_PW)}"
PAGES = ["views/overview.py", "views/schedules.py", "views/schedule_detail.py", "views/jobs.py",
         "views/workers.py", "views/audit.py"]


@pytest.fixture
def console(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PGJOBS_DATABASE_URL", db_url)
    monkeypatch.setenv("PGJOBS_CONSOLE_USERS", USERS)
    for var in ("PGJOBS_CONSOLE_ADMIN_PASSWORD_HASH", "PGJOBS_CONSOLE_VIEWER_PASSWORD_HASH", run.INSECURE_ENV):
        monkeypatch.delenv(var, raising=False)
    yield
    st.cache_resource.clear()  # closes the console's pool before the database is dropped


def sign_in(user: str = "alice", password: str = ADMIN_PW, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.text_input(key="sign_in_user").input(user)
    at.text_input(key="sign_in_password").input(password)
    at.button[0].click().run()
    assert "user" in at.session_state, [e.value for e in at.error]
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def plain(markdown: str) -> str:
    """Markdown as the reader sees it: the console escapes special characters in names and errors."""
    return re.sub(r"\\(.)", r"\1", markdown)


def texts(at: AppTest) -> str:
    """Everything the page says, as one string (text, code, captions, alerts, markdown, metrics)."""
    parts = [e.value for kind in ("text", "code", "caption", "markdown", "error", "success", "warning", "title",
                                  "subheader") for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return plain("\n".join(str(p) for p in parts))


def frames(at: AppTest) -> str:
    return "\n".join(df.value.to_csv() for df in at.dataframe)


def errors(at: AppTest) -> list[str]:
    return [plain(e.value) for e in at.error]


def set_job(db_url: str, job_id: int, state: str, error: str | None = None, seconds: float = 1.0,
            attempt: int = 1) -> None:
    """Put a job in a finished state as a worker would have left it (test setup only)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE pgjobs.jobs SET state = %s, attempt = %s, started_at = now() - %s * interval '1 second', "
            "finished_at = now(), last_error = %s, worker = 'w1', errors = CASE WHEN %s::text IS NULL THEN "
            "'[]'::jsonb ELSE jsonb_build_array(jsonb_build_object('attempt', 1, 'error', %s::text, "
            "'traceback', 'Traceback: ' || %s::text)) END WHERE id = %s",
            (state, attempt, seconds, error, error, error, error, job_id))


# ---------------------------------------------------------------------- access
def test_sign_in_is_required_and_a_wrong_password_is_refused(console: None) -> None:
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert [t.key for t in at.text_input] == ["sign_in_user", "sign_in_password"]
    assert not at.dataframe and "Overview" not in texts(at)
    at.text_input(key="sign_in_user").input("alice")
    at.text_input(key="sign_in_password").input("wrong")
    at.button[0].click().run()
    assert "Wrong user or password." in errors(at)
    assert "user" not in at.session_state


def try_password(user: str, password: str) -> AppTest:
    """A fresh browser session (a new tab) that tries one sign-in."""
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input(key="sign_in_user").input(user)
    at.text_input(key="sign_in_password").input(password)
    return at.button[0].click().run()


def test_failed_sign_ins_are_limited_per_user_across_sessions_and_audited(console: None, admin: Admin) -> None:
    from pgjobs.admin import SIGNIN_USER_FAILURES

    for _ in range(SIGNIN_USER_FAILURES):
        assert "Wrong user or password." in errors(try_password("alice", "wrong"))
    at = try_password("alice", ADMIN_PW)  # a new tab, the right password: still refused until the window ends
    assert "user" not in at.session_state
    assert any("Too many failed sign-ins" in e for e in errors(at)), errors(at)
    assert "user" in try_password("vic", VIEWER_PW).session_state  # another user is not locked out
    actions = [(a["action"], a["entity_name"]) for a in admin.audit(limit=10)]
    assert actions[:2] == [("sign-in", "vic"), ("sign-in-blocked", "alice")]
    assert actions[2:2 + SIGNIN_USER_FAILURES] == [("sign-in-failed", "alice")] * SIGNIN_USER_FAILURES


def test_failed_sign_ins_are_limited_per_client_address_across_user_names(admin: Admin) -> None:
    from pgjobs.admin import SIGNIN_CLIENT_FAILURES

    for i in range(SIGNIN_CLIENT_FAILURES):
        attempt_id, retry_at = admin.begin_signin(f"guess{i}", "10.9.8.7")
        assert retry_at is None
        admin.finish_signin(attempt_id, f"guess{i}", "10.9.8.7", ok=False)
    _, retry_at = admin.begin_signin("someone-new", "10.9.8.7")
    assert retry_at is not None and retry_at > datetime.now(UTC)
    assert admin.begin_signin("someone-new", "10.9.8.8")[1] is None  # another address is not limited
    assert admin.audit(limit=1)[0]["action"] == "sign-in-blocked"


def test_parallel_attempts_count_each_other(admin: Admin) -> None:
    """Each attempt is recorded before its password is checked: attempts begun together are all counted."""
    from pgjobs.admin import SIGNIN_USER_FAILURES

    begun = [admin.begin_signin("alice", f"10.0.0.{i}") for i in range(SIGNIN_USER_FAILURES + 3)]
    assert sum(retry_at is None for _, retry_at in begun) == SIGNIN_USER_FAILURES


def test_a_session_cookie_names_its_user_until_it_expires_or_the_password_changes() -> None:
    users = auth.load_users({"PGJOBS_CONSOLE_USERS": USERS})
    key = auth.session_key(users, {})
    cookie = auth.make_session(users["alice"], key, now=1000.0, ttl=60)
    assert auth.read_session(cookie, users, key, now=1059.0) == users["alice"]
    assert auth.read_session(cookie, users, key, now=1060.0) is None  # expired
    name, role, expires, sig = cookie.split(":")
    assert auth.read_session(f"{name}:viewer:{expires}:{sig}", users, key, now=1000.0) is None
    assert auth.read_session(f"{name}:{role}:{int(expires) + 999}:{sig}", users, key, now=1000.0) is None
    assert auth.read_session(f"vic:viewer:{expires}:{sig}", users, key, now=1000.0) is None
    assert auth.read_session("garbage", users, key, now=1000.0) is None
    changed = auth.load_users({"PGJOBS_CONSOLE_USERS": f"alice:admin:{auth.hash_password('new')}"})
    assert auth.read_session(cookie, changed, auth.session_key(changed, {}), now=1000.0) is None
    other_key = auth.session_key(users, {"PGJOBS_CONSOLE_SESSION_SECRET": "elsewhere"})
    assert auth.read_session(cookie, users, other_key, now=1000.0) is None


def test_without_users_a_public_console_refuses_to_serve(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGJOBS_DATABASE_URL", db_url)
    monkeypatch.delenv("PGJOBS_CONSOLE_USERS", raising=False)
    monkeypatch.delenv(run.INSECURE_ENV, raising=False)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert any("No console users are configured" in e for e in errors(at))
    assert not at.dataframe


def test_launcher_refuses_a_public_address_without_auth_unless_insecure() -> None:
    env = {"PGJOBS_DATABASE_URL": "postgresql://x@localhost/db"}
    with pytest.raises(SystemExit, match="refusing to listen on '0.0.0.0' without sign-in"):
        run.plan(["--server.address", "0.0.0.0"], env)
    with pytest.raises(SystemExit, match="refusing"):
        run.plan(["--server.address=10.1.2.3"], env)
    cmd, child = run.plan([], env)  # default: loopback only
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    cmd, child = run.plan(["--server.address", "0.0.0.0", "--insecure"], env)
    assert child[run.INSECURE_ENV] == "1" and "--insecure" not in cmd
    cmd, child = run.plan(["--server.address", "0.0.0.0"],
                          {**env, "PGJOBS_CONSOLE_ADMIN_PASSWORD_HASH": auth.hash_password("pw")})
    assert cmd[-6:-4] == ["--server.address", "0.0.0.0"] or "0.0.0.0" in cmd
    with pytest.raises(SystemExit, match="PGJOBS_CONSOLE_USERS: user 'bob': unknown password hash format"):
        run.plan([], {**env, "PGJOBS_CONSOLE_USERS": "bob:admin:plaintext"})


def test_password_hashes_round_trip_and_the_hash_helper_prints_one() -> None:
    encoded = auth.hash_password("s3cret")
    assert encoded.startswith("scrypt$14$8$1$")
    assert auth.verify_password("s3cret", encoded) and not auth.verify_password("s3cret ", encoded)
    out = subprocess.run([sys.executable, "-m", "console.auth", "hash"], input="from stdin\n", text=True,
                         capture_output=True, cwd=ROOT, check=True).stdout.strip()
    assert auth.verify_password("from stdin", out)
    users = auth.load_users({"PGJOBS_CONSOLE_USERS": f"a:viewer:{out}", "PGJOBS_CONSOLE_ADMIN_PASSWORD_HASH": out})
    assert {u.name: u.role for u in users.values()} == {"a": "viewer", "admin": "admin"}


def test_a_viewer_sees_every_page_but_no_control_and_the_api_refuses(console: None, admin: Admin) -> None:
    admin.add_schedule("nightly", cron="0 3 * * *", task="pgjobs.noop")
    admin.enqueue("pgjobs.noop")
    at = sign_in("vic", VIEWER_PW)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception and not errors(at), (page, errors(at))
        labels = {b.label for b in at.button}
        assert not labels & {"New schedule", "Edit", "Pause", "Resume", "Run now", "Delete", "Retry",
                             "Cancel"}, (page, labels)
    from console import ui  # the admin API itself refuses the viewer, whatever the page shows

    st.session_state["user"] = {"name": "vic", "role": "viewer"}
    try:
        with pytest.raises(PermissionDenied, match="viewer"):
            ui.admin().run_now("nightly")
    finally:
        del st.session_state["user"]


# ---------------------------------------------------------------------- pages
def test_every_page_loads_and_shows_the_data(console: None, admin: Admin, db_url: str) -> None:
    admin.add_schedule("refresh-traces", cron="*/2 * * * *", task="pgjobs.noop", timezone="Europe/Paris")
    job = admin.run_now("refresh-traces")
    set_job(db_url, job, "failed", error="view <b>otel</b> **missing**")
    admin.enqueue("pgjobs.noop", queue="reports")
    at = sign_in()
    assert "Overview" in texts(at) and "Failures in the last 24 h" in texts(at)
    assert "view <b>otel</b> **missing**" in frames(at)  # the error as data, not markup
    assert all("<b>" not in m.value for m in at.markdown)
    at.switch_page("views/schedules.py").run()
    assert "refresh-traces" in frames(at) and "every 2 minutes" in texts(at) and "0% of 1" in frames(at)
    at.switch_page("views/schedule_detail.py").run()
    assert "refresh-traces" in texts(at) and "Execution history" in texts(at)
    at.switch_page("views/jobs.py").run()
    assert "reports" in frames(at) and "refresh-traces" in frames(at)
    at.switch_page("views/workers.py").run()
    assert "No workers are running" in texts(at)
    at.switch_page("views/audit.py").run()
    assert "run-now" in frames(at) and "create" in frames(at)


def test_times_follow_the_chosen_timezone_and_refresh_is_selectable(console: None, admin: Admin) -> None:
    admin.add_schedule("tokyo", cron="0 9 * * *", task="pgjobs.noop", timezone="Asia/Tokyo")
    at = sign_in(page="views/schedules.py")
    at.selectbox(key="tz").select("Asia/Tokyo").run()
    assert " 09:00" in frames(at) and "09:00:00" in texts(at)
    at.selectbox(key="tz").select("UTC").run()
    assert " 00:00" in frames(at) and "00:00:00" in texts(at)
    at.selectbox(key="refresh").select("5 s").run()
    assert not at.exception


# ---------------------------------------------------------------------- schedules: actions
def test_create_a_schedule_with_a_live_preview(console: None, admin: Admin) -> None:
    at = sign_in(page="views/schedules.py")
    at.button(key="sch_new").click().run()
    at.text_input(key="form_name").input("refresh traces")
    at.text_area(key="form_args").input('{"view": "otel_trace_summaries"}')
    at.selectbox(key="form_task").select("pgjobs.refresh_materialized_view")
    at.text_input(key="form_cron").input("30 2 * * *")
    at.selectbox(key="form_timezone").select("America/New_York").run()
    assert "Runs at 02:30 every day (America/New_York)" in texts(at)
    assert texts(at).count("02:30:00 E") == 5  # five fire times, in the schedule's zone (EST / EDT)
    at.selectbox(key="form_overlap").select("buffer_one")
    at.selectbox(key="form_catchup").select("none")
    at.button(key="form_save").click().run()
    assert not errors(at), errors(at)
    sc = admin.get_schedule("refresh traces")
    assert (sc["cron"], sc["timezone"], sc["overlap"], sc["catchup"]) == ("30 2 * * *", "America/New_York",
                                                                         "buffer_one", "none")
    assert sc["args"] == {"view": "otel_trace_summaries"}
    assert "Created 'refresh traces'" in texts(at)
    assert admin.audit(limit=1)[0]["actor"] == "console:alice"


def test_edit_with_a_bad_cron_shows_the_error_and_changes_nothing(console: None, admin: Admin) -> None:
    admin.add_schedule("nightly", cron="0 3 * * *", task="pgjobs.noop")
    at = sign_in(page="views/schedules.py")
    at.selectbox(key="sch_selected").select("nightly")
    at.button(key="sch_edit").click().run()
    at.text_input(key="form_cron").input("*/61 * * * *").run()
    assert [e for e in errors(at) if "must be 1-59" in e] == [
        "cron '*/61 * * * *': minute field '*/61': step '61' must be 1-59"]  # once, in the preview
    assert at.button(key="form_save").disabled
    assert admin.get_schedule("nightly")["cron"] == "0 3 * * *"
    at.text_input(key="form_cron").input("15 4 * * 1-5").run()
    assert not at.button(key="form_save").disabled
    at.button(key="form_save").click().run()
    assert admin.get_schedule("nightly")["cron"] == "15 4 * * 1-5"
    assert admin.audit(limit=1)[0]["action"] == "edit"


HOSTILE_FORM_INPUTS = [
    ("form_name", "two\nlines", "name"),
    ("form_name", "x" * 5000, "name"),
    ("form_cron", "* " * 100_000, "cron"),
    ("form_args", '{"a": "nul \\u0000 inside"}', "args"),
    ("form_args", '{"a": "lone \\ud800 surrogate"}', "args"),
    ("form_args", "[" * 10_000 + "]" * 10_000, "args"),
    ("form_args", '["not", "an", "object"]', "args"),
    ("form_args", "{not json", "args"),
    ("form_args", '{"big": "' + "x" * (1024 * 1024 + 10) + '"}', "args"),
]


def test_the_schedule_form_refuses_hostile_input_with_one_short_line_and_writes_nothing(
        console: None, admin: Admin) -> None:
    # The console goes through the same validation as the API and the CLI (pgjobs/validation.py): each bad
    # value is one line that names its field and echoes at most ~80 characters of it; nothing is written.
    at = sign_in(page="views/schedules.py")
    audit_before = len(admin.audit(limit=1000))  # the sign-in is audited
    for key, value, field in HOSTILE_FORM_INPUTS:
        if not any(b.key == "form_save" for b in at.button):  # the form stays open after a refusal
            at.button(key="sch_new").click().run()
        at.text_input(key="form_name").input("hostile")  # every other field valid
        at.text_input(key="form_cron").input("0 3 * * *")
        at.text_area(key="form_args").input("{}")
        widget = at.text_area(key=key) if key == "form_args" else at.text_input(key=key)
        widget.input(value).run()
        if not at.button(key="form_save").disabled:
            at.button(key="form_save").click().run()
        shown = errors(at)
        assert shown, f"{key} {value[:40]!r}: no error shown"
        assert all("\n" not in e and len(e) < 400 for e in shown), shown
        assert any(field in e for e in shown), (value[:40], shown)
        assert admin.count_schedules() == 0, value[:40]
        assert len(admin.audit(limit=1000)) == audit_before, value[:40]


def test_save_sends_only_changed_fields_and_keeps_a_timezone_without_a_slash(console: None, admin: Admin) -> None:
    admin.add_schedule("berlin-ish", cron="0 3 * * *", task="pgjobs.noop", timezone="CET")
    at = sign_in(page="views/schedules.py")
    zones = at.selectbox(key="tz").options
    assert {"CET", "GMT", "EST5EDT", "Japan", "Europe/Berlin", "UTC"} <= set(zones)
    at.selectbox(key="sch_selected").select("berlin-ish")
    at.button(key="sch_edit").click().run()
    assert at.selectbox(key="form_timezone").value == "CET"
    at.number_input(key="form_priority").set_value(5)
    at.button(key="form_save").click().run()
    assert not errors(at), errors(at)
    sc = admin.get_schedule("berlin-ish")
    assert (sc["timezone"], sc["priority"], sc["version"]) == ("CET", 5, 2)
    edit = admin.audit(limit=1)[0]
    changed = {k for k in edit["after"] if edit["before"].get(k) != edit["after"][k]}
    assert changed <= {"priority", "version", "updated_at"}, changed


def test_saving_over_a_newer_version_fails_and_shows_the_difference(console: None, admin: Admin,
                                                                      settings: Settings) -> None:
    admin.add_schedule("nightly", cron="0 3 * * *", task="pgjobs.noop")
    at = sign_in(page="views/schedules.py")
    at.selectbox(key="sch_selected").select("nightly")
    at.button(key="sch_edit").click().run()
    Admin(settings, actor="cli:bob").pause_schedule("nightly")  # from another terminal, while the form is open
    at.text_input(key="form_cron").input("15 4 * * *").run()
    at.button(key="form_save").click().run()
    assert any(re.match(r"Not saved: 'nightly' was changed by cli:bob at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
                        r"\(UTC\) since you opened it\.$", e) for e in errors(at)), errors(at)
    diff = next(df.value for df in at.dataframe if "Field" in df.value.columns)
    assert diff.set_index("Field").loc["enabled"].tolist() == ["True", "False", "(not changed)"]
    assert diff.set_index("Field").loc["cron"].tolist() == ["0 3 * * *", "0 3 * * *", "15 4 * * *"]
    sc = admin.get_schedule("nightly")
    assert (sc["cron"], sc["enabled"]) == ("0 3 * * *", False)  # the pause stands, nothing overwritten


def test_pause_resume_run_now_and_delete(console: None, admin: Admin) -> None:
    admin.add_schedule("hourly", cron="0 * * * *", task="pgjobs.noop")
    at = sign_in(page="views/schedules.py")
    at.button(key="sch_pause").click().run()
    assert admin.get_schedule("hourly")["enabled"] is False
    at.button(key="sch_resume").click().run()
    assert admin.get_schedule("hourly")["enabled"] is True
    at.button(key="sch_run_now").click().run()
    jobs = admin.list_jobs(schedule="hourly")
    assert len(jobs) == 1 and f"Enqueued job {jobs[0]['id']}" in texts(at)
    at.button(key="sch_delete").click().run()
    assert admin.get_schedule("hourly")  # nothing happens before the confirmation
    at.button(key="_confirm_yes_delete_hourly").click().run()
    with pytest.raises(NotFound):
        admin.get_schedule("hourly")
    assert [a["action"] for a in admin.audit(limit=6)] == ["remove", "run-now", "resume", "pause", "sign-in", "create"]
    assert {a["actor"] for a in admin.audit(limit=4)} == {"console:alice"}


def test_schedule_detail_shows_stats_and_runs_with_errors(console: None, admin: Admin, db_url: str) -> None:
    admin.add_schedule("every-minute", cron="* * * * *", task="pgjobs.noop")
    ids = [admin.run_now("every-minute") for _ in range(4)]
    for job_id, state in zip(ids, ["completed", "completed", "completed", "failed"], strict=True):
        set_job(db_url, job_id, state, error="boom: view is locked" if state == "failed" else None,
                seconds=2.0, attempt=2 if state == "failed" else 1)
    at = sign_in()
    st_state = at.session_state
    st_state["detail_schedule"] = "every-minute"
    at.switch_page("views/schedule_detail.py").run()
    shown = texts(at)
    assert "Runs 4" in shown and "Completed 3" in shown and "Failed 1" in shown and "Retried 1" in shown
    assert "Success rate 75%" in shown and "Avg duration 2.0 s" in shown
    assert "Traceback: boom: view is locked" in shown
    at.selectbox(key="detail_window").select("30 d").run()
    assert "Runs 4" in texts(at) and not at.exception
    at.button(key="detail_run_now").click().run()
    assert len(admin.list_jobs(schedule="every-minute")) == 5


def test_schedule_detail_shows_the_slot_ledger_with_the_reason_for_every_gap(console: None, admin: Admin,
                                                                               db_url: str) -> None:
    sc = admin.add_schedule("ledgered", cron="* * * * *", task="pgjobs.noop")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO pgjobs.slots (schedule_id, slot, last_slot, slot_count, outcome, reason) VALUES
              (%(id)s, '2026-12-01 00:00+00', '2026-12-01 09:59+00', 600, 'missed',
               'no worker was leading (downtime); catch-up ''latest'' ran only the latest due slot'),
              (%(id)s, '2026-12-01 10:01+00', NULL, 1, 'skipped', 'skipped: the previous run is still unfinished')
            """, {"id": sc["id"]})
    at = sign_in()
    at.session_state["detail_schedule"] = "ledgered"
    at.switch_page("views/schedule_detail.py").run()
    assert not at.exception
    shown = frames(at)
    assert "Slot ledger" in texts(at)
    assert "missed" in shown and "600 slots, until" in shown and "downtime" in shown
    assert "skipped" in shown and "still unfinished" in shown


def test_the_schedule_form_sets_window_jitter_and_pause_after_failures(console: None, admin: Admin) -> None:
    at = sign_in(page="views/schedules.py")
    at.button(key="sch_new").click().run()
    at.text_input(key="form_name").input("spread")
    at.selectbox(key="form_overlap").select("cancel_previous")
    at.number_input(key="form_catchup_window").set_value(3600.0)
    at.number_input(key="form_jitter").set_value(30.0)
    at.number_input(key="form_pause_after").set_value(2)
    at.button(key="form_save").click().run()
    assert not errors(at), errors(at)
    sc = admin.get_schedule("spread")
    assert (sc["overlap"], sc["catchup_window_seconds"], sc["jitter_seconds"], sc["pause_after_failures"]) == (
        "cancel_previous", 3600.0, 30.0, 2)


def test_overview_lists_overdue_schedules(console: None, admin: Admin, db_url: str) -> None:
    admin.add_schedule("stalled", cron="* * * * *", task="pgjobs.noop")
    with psycopg.connect(db_url, autocommit=True) as conn:  # an old schedule that never succeeded
        conn.execute("UPDATE pgjobs.schedules SET created_at = now() - interval '1 hour', "
                     "updated_at = now() - interval '1 hour' WHERE name = 'stalled'")
    at = sign_in()
    assert not at.exception
    assert "Overdue schedules" in texts(at) and "stalled" in frames(at)


# ---------------------------------------------------------------------- jobs: actions
def test_jobs_filter_page_and_act_on_one_or_many(console: None, admin: Admin, db_url: str) -> None:
    waiting = [admin.enqueue("pgjobs.noop", {"n": i}) for i in range(3)]
    failed = admin.enqueue("pgjobs.noop", {"n": "f"}, queue="reports")
    set_job(db_url, failed, "failed", error="ValueError: bad input")
    at = sign_in(page="views/jobs.py")
    at.multiselect(key="jobs_states").select("failed").run()
    assert "ValueError: bad input" in frames(at) and str(waiting[0]) not in at.dataframe[0].value["Job"].astype(str).tolist()
    # single job: retry from its detail view, confirmed
    at.number_input(key="jobs_detail_id").set_value(failed).run()
    assert "Traceback: ValueError: bad input" in texts(at)
    at.button(key="job_one_retry").click().run()
    at.button(key="_confirm_yes_job_one_retry").click().run()
    assert admin.get_job(failed)["state"] == "available"
    # bulk: cancel two waiting jobs, then delete them
    at.multiselect(key="jobs_states").unselect("failed").select("available").run()
    at.multiselect(key="jobs_selected").select(waiting[0]).select(waiting[1]).run()
    at.button(key="jobs_bulk_cancel").click().run()
    assert "Cancel 2 jobs?" in texts(at)
    at.button(key="_confirm_yes_jobs_bulk_cancel").click().run()
    assert [admin.get_job(i)["state"] for i in waiting] == ["cancelled", "cancelled", "available"]
    assert "Cancel: 2 of 2 jobs." in texts(at)
    at.multiselect(key="jobs_states").unselect("available").select("cancelled").run()
    at.checkbox(key="jobs_all").check().run()
    at.button(key="jobs_bulk_delete").click().run()
    at.button(key="_confirm_yes_jobs_bulk_delete").click().run()
    assert len(admin.list_jobs(state="cancelled")) == 0
    actions = [(a["action"], a["actor"]) for a in admin.audit(limit=5)]
    assert actions[:2] == [("delete", "console:alice")] * 2


def test_jobs_keyset_paging(console: None, admin: Admin) -> None:
    admin.enqueue_many("pgjobs.noop", [{"i": i} for i in range(60)])
    at = sign_in(page="views/jobs.py")
    first = at.dataframe[0].value["Job"].tolist()
    assert len(first) == 50 and first == sorted(first, reverse=True)
    at.button(key="jobs_next").click().run()
    second = at.dataframe[0].value["Job"].tolist()
    assert len(second) == 10 and max(second) < min(first)
    at.button(key="jobs_prev").click().run()
    assert at.dataframe[0].value["Job"].tolist() == first


def test_audit_shows_who_changed_what_before_and_after(console: None, admin: Admin) -> None:
    admin.add_schedule("nightly", cron="0 3 * * *", task="pgjobs.noop")
    admin.edit_schedule("nightly", cron="0 4 * * *")
    at = sign_in(page="views/audit.py")
    assert at.dataframe[0].value["Action"].tolist()[0] == "sign-in"  # sign-ins are audited too
    at.text_input(key="audit_entity").input("nightly").run()
    table = at.dataframe[0].value
    assert table["Action"].tolist()[:2] == ["edit", "create"] and table["Who"].tolist()[0] == "test"
    assert [json.loads(j.value)["cron"] for j in at.json[:2]] == ["0 3 * * *", "0 4 * * *"]


def test_overview_counts_and_lateness(console: None, admin: Admin, db_url: str) -> None:
    admin.add_schedule("soon", cron="* * * * *", task="pgjobs.noop")
    with psycopg.connect(db_url, autocommit=True) as conn:  # a cron run that started 2 s after its slot
        slot = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        conn.execute("INSERT INTO pgjobs.jobs (task, schedule_id, slot, scheduled_at, state, attempt, started_at, "
                     "finished_at) SELECT 'pgjobs.noop', id, %s, %s, 'completed', 1, %s, %s FROM pgjobs.schedules",
                     (slot, slot, slot + timedelta(seconds=2), slot + timedelta(seconds=3)))
    admin.enqueue("pgjobs.noop")
    at = sign_in()
    shown = texts(at)
    assert "available 1" in shown and "completed 1" in shown
    assert "p50 2.0 s" in shown and "soon" in frames(at)


def test_overview_warns_about_a_transaction_holding_the_horizon(console: None, db_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGJOBS_HORIZON_WARN_AGE", "0.2")
    holder = psycopg.connect(db_url, application_name="weekly-export")
    try:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 1 FROM pgjobs.jobs LIMIT 1")
        wait_for(lambda: Admin(Settings.load(database_url=db_url, horizon_warn_age=0.2),
                               actor="test").health()["horizon_holders"], 10, "the holder")
        shown = texts(sign_in())
        assert "Vacuum is held back" in shown and "weekly-export" in shown
        assert f"pg_terminate_backend({holder.info.backend_pid})" in shown
    finally:
        holder.close()


def test_jobs_show_retry_state_duration_and_no_none_for_successes(console: None, admin: Admin,
                                                                   db_url: str) -> None:
    done = admin.enqueue("pgjobs.noop", {})
    set_job(db_url, done, "completed", seconds=2.5)
    retrying = admin.enqueue("pgjobs.noop", {}, max_attempts=3)
    with psycopg.connect(db_url, autocommit=True) as conn:  # as a worker leaves a job after a failed attempt
        conn.execute("UPDATE pgjobs.jobs SET attempt = 1, started_at = now() - interval '3 s', "
                     "scheduled_at = now() + interval '1 hour', last_error = 'ValueError: flaky' WHERE id = %s",
                     (retrying,))
    at = sign_in(page="views/jobs.py")
    table = at.dataframe[0].value.set_index("Job")
    assert table.loc[done, "State"] == "completed" and table.loc[done, "Duration"] == "2.5 s"
    assert table.loc[done, "Error"] == "" and table.loc[done, "Worker"] == "w1"
    assert re.fullmatch(r"retry at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(attempt 2 of 3\)", table.loc[retrying, "State"])
    assert table.loc[retrying, "Duration"] == ""
    assert "None" not in table.astype(str).to_csv()


def test_error_details_default_to_the_newest_real_error(console: None, admin: Admin, db_url: str) -> None:
    admin.add_schedule("flaky", cron="0 0 1 1 *", task="pgjobs.noop")
    old = admin.run_now("flaky")
    set_job(db_url, old, "failed", error="OldError: first")
    new = admin.run_now("flaky")
    set_job(db_url, new, "failed", error="NewError: latest")
    skipped = admin.run_now("flaky")
    set_job(db_url, skipped, "skipped", error="skipped: the previous run was still going")
    at = sign_in()
    st_state = at.session_state
    st_state["detail_schedule"] = "flaky"
    at.switch_page("views/schedule_detail.py").run()
    assert at.selectbox(key="detail_error_job").value == new
    assert "Traceback: NewError: latest" in texts(at)


def test_a_young_schedules_charts_default_to_its_life_and_a_1_h_window_exists(console: None, admin: Admin,
                                                                               db_url: str) -> None:
    admin.add_schedule("young", cron="* * * * *", task="pgjobs.noop")
    set_job(db_url, admin.run_now("young"), "completed")
    at = sign_in()
    at.session_state["detail_schedule"] = "young"
    at.switch_page("views/schedule_detail.py").run()
    window = at.selectbox(key="detail_window")
    assert window.value == "since created" and "1 h" in window.options
    assert any("Execution history · since created" in s.value for s in at.subheader)
    assert not at.exception
    with psycopg.connect(db_url, autocommit=True) as conn:  # a schedule older than a day: 24 h by default
        conn.execute("UPDATE pgjobs.schedules SET created_at = now() - interval '3 days'")
    at = sign_in()
    at.session_state["detail_schedule"] = "young"
    at.switch_page("views/schedule_detail.py").run()
    assert at.selectbox(key="detail_window").value == "24 h"
    at.selectbox(key="detail_window").select("1 h").run()
    assert any("last 1 h · 60.0 s buckets" in s.value for s in at.subheader), [s.value for s in at.subheader]
