"""Schedule detail: configuration, execution history over a window (outcomes, duration, lateness), stats,
the slot ledger (every slot's outcome and why a slot did not run), recent runs with their errors; run now /
pause / resume / edit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from console import ui

WINDOWS = {"1 h": 3600, "6 h": 6 * 3600, "12 h": 12 * 3600, "24 h": 86400, "3 d": 3 * 86400, "7 d": 7 * 86400,
           "14 d": 14 * 86400, "30 d": 30 * 86400}
BUCKETS = (10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
OUTCOME_COLORS = {"completed": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e", "cancelled": "#f9a825"}

st.title("Schedule detail")


def bucket_for(window: int) -> int:
    """The smallest bucket that draws the window in at most ~90 bars."""
    return next((b for b in BUCKETS if window / b <= 90), BUCKETS[-1])


def lines(frame: pd.DataFrame, x: alt.X, series: dict[str, str], title: str) -> alt.Chart:
    data = frame[["time", *series]].rename(columns=series).melt("time", var_name="series", value_name="value")
    return alt.Chart(data.dropna()).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title=title), color=alt.Color("series:N", title=None),
        tooltip=["time:T", "series:N", alt.Tooltip("value:Q", format=".3f")]).properties(height=200)


def pick_schedule(admin: Any) -> str | None:
    wanted = st.query_params.get("schedule") or st.session_state.get("detail_schedule")
    search = st.text_input("Find schedule", key="detail_search", placeholder="name contains ...")
    names = ui.run("schedule names", admin.schedule_names, search.strip() or None, 1000) or []
    if wanted and wanted not in names and not search:
        names = [wanted, *names]
    if not names:
        st.text("No schedules.")
        return None
    if st.session_state.get("detail_pick") not in names:
        st.session_state["detail_pick"] = wanted if wanted in names else names[0]
    name = st.selectbox("Schedule", names, key="detail_pick")
    st.session_state["detail_schedule"] = name
    return name


def configuration(admin: Any, sc: dict[str, Any]) -> None:
    st.subheader("Configuration")
    st.text(sc["name"])
    rows = [
        ("task", sc["task"]), ("cron", sc["cron"]), ("runs", ui.cron_text(sc["cron"], sc["timezone"])),
        ("timezone", sc["timezone"]), ("enabled", "yes" if sc["enabled"] else "paused"), ("queue", sc["queue"]),
        ("priority", sc["priority"]), ("max attempts", sc["max_attempts"]),
        ("timeout", ui.seconds_text(sc["timeout_seconds"]) or "none"), ("catch-up", sc["catchup"]),
        ("catch-up max", sc["catchup_max"]), ("overlap", sc["overlap"]), ("description", sc["description"]),
        ("next run", ui.when(sc["next_run_at"])), ("last slot", ui.when(sc["last_slot_at"])),
        ("updated", ui.when(sc["updated_at"])),
    ]
    left, right = st.columns([2, 1])
    with left:
        ui.table([{"field": k, "value": str(v)} for k, v in rows], {"field": "Field", "value": "Value"},
                 key="detail_config", height="fit")
    with right:
        st.markdown("**Arguments**")
        st.json(sc["args"] or {})
        if ui.is_admin():
            buttons = st.columns(3)
            if buttons[0].button("Run now", key="detail_run_now"):
                job_id = ui.run("run now", admin.run_now, sc["name"])
                if job_id is not None:
                    ui.flash(f"Enqueued job {job_id} for '{sc['name']}'.")
                    st.rerun()
            toggle = "Pause" if sc["enabled"] else "Resume"
            if buttons[1].button(toggle, key="detail_toggle"):
                fn = admin.pause_schedule if sc["enabled"] else admin.resume_schedule
                if ui.run(toggle.lower(), fn, sc["name"]) is not None:
                    ui.flash(f"{toggle}d '{sc['name']}'.")
                    st.rerun()
            if buttons[2].button("Edit", key="detail_edit"):
                for key in [k for k in st.session_state if str(k).startswith("form_")]:
                    del st.session_state[key]
                st.session_state["sch_mode"] = ("edit", sc["name"])
                st.switch_page("views/schedules.py")


LIFE = "since created"


def window_choices(created_at: datetime, now: datetime) -> tuple[dict[str, int], str]:
    """The windows to offer and the default: the schedule's whole life when it is younger than 24 h (a new
    schedule's runs fill the chart instead of one bar at its right edge), else 24 h."""
    life = max(60, int((now - created_at).total_seconds()))
    if life < 86400:
        return {LIFE: life, **WINDOWS}, LIFE
    return dict(WINDOWS), "24 h"


def history(admin: Any, name: str, created_at: datetime) -> None:
    now = datetime.now(UTC)
    choices, default = window_choices(created_at, now)
    if st.session_state.get("detail_window") not in choices:
        st.session_state["detail_window"] = default
    window_label = st.selectbox("Window", list(choices), key="detail_window",
                                format_func=lambda k: f"{k} ({ui.seconds_text(choices[k])})" if k == LIFE else k)
    window = choices[window_label]
    since = now - timedelta(seconds=window)
    bucket = bucket_for(window)

    stats = ui.run("stats", admin.schedule_stats, name, since=since)
    if stats is not None:
        st.subheader("Stats")
        cols = st.columns(8)
        rate = stats["success_rate"]
        values = [("Runs", stats["total"]), ("Completed", stats["completed"]), ("Failed", stats["failed"]),
                  ("Retried", stats["retried"]), ("Success rate", "-" if rate is None else f"{100 * rate:.3g}%"),
                  ("Avg duration", ui.seconds_text(stats["avg_duration"]) or "-"),
                  ("p95 duration", ui.seconds_text(stats["p95_duration"]) or "-"),
                  ("Avg lateness", ui.seconds_text(stats["avg_lateness"]) or "-")]
        for col, (label, value) in zip(cols, values, strict=True):
            col.metric(label, value)
        if stats["capped"]:
            st.caption("Stats and charts cover the newest 20,000 runs of the window.")

    buckets = ui.run("history", admin.schedule_buckets, name, since=since, bucket_seconds=bucket) or []
    span = f"since created, {ui.seconds_text(window)} ago" if window_label == LIFE else f"last {window_label}"
    st.subheader(f"Execution history · {span} · {ui.seconds_text(bucket)} buckets")
    if not buckets:
        st.text("No runs in this window.")
    else:
        frame = pd.DataFrame(buckets)
        # Wall-clock times in the chosen zone, as naive values so the chart does not shift them again.
        frame["time"] = pd.to_datetime(frame["bucket"], utc=True).dt.tz_convert(str(ui.tz())).dt.tz_localize(None)
        x = alt.X("time:T", title=None, scale=alt.Scale(domain=[
            ui.naive_local(since), ui.naive_local(now)]), axis=alt.Axis(format="%m-%d %H:%M", labelAngle=0))
        outcome = frame[["time", *OUTCOME_COLORS]].melt("time", var_name="outcome", value_name="runs")
        st.markdown("**Outcome by time**")
        st.altair_chart(alt.Chart(outcome[outcome["runs"] > 0]).mark_bar().encode(
            x=x, y=alt.Y("sum(runs):Q", title="runs"),
            color=alt.Color("outcome:N", scale=alt.Scale(domain=list(OUTCOME_COLORS),
                                                         range=list(OUTCOME_COLORS.values()))),
            tooltip=["time:T", "outcome:N", "runs:Q"]).properties(height=220))
        left, right = st.columns(2)
        with left:
            st.markdown("**Duration per bucket (s): average and p95**")
            st.altair_chart(lines(frame, x, {"avg_duration": "average", "p95_duration": "p95"}, "seconds"))
        with right:
            st.markdown("**Lateness after the slot (s): average and max**")
            st.altair_chart(lines(frame, x, {"avg_lateness": "average", "max_lateness": "max"}, "seconds"))

    slot_ledger(admin, name)

    st.subheader("Recent runs")
    runs = ui.run("recent runs", admin.schedule_history, name, since=since, limit=50) or []
    if not runs:
        st.text("No runs in this window.")
        return
    ui.table([{**r, "duration_text": ui.seconds_text(r["duration"]), "lateness_text": ui.seconds_text(r["lateness"]),
               "state_text": ui.job_state_text(r), "error_text": r["last_error"] or "", "worker_text": r["worker"] or ""}
              for r in runs],
             {"id": "Job", "state_text": "State", "slot": "Slot", "inserted_at": "Enqueued", "started_at": "Started",
              "finished_at": "Finished", "duration_text": "Duration", "lateness_text": "Late by",
              "attempt": "Attempts", "worker_text": "Worker", "error_text": "Error"},
             times=["slot", "inserted_at", "started_at", "finished_at"], key="detail_runs")
    # newest real error first (a skipped slot's reason is not an error); skipped ones after
    errored = [r for r in runs if r["last_error"]]
    errored.sort(key=lambda r: (r["state"] == "skipped", -(r["finished_at"] or r["inserted_at"]).timestamp()))
    with_errors = [r["id"] for r in errored]
    if with_errors:
        job_id = st.selectbox("Error details for job", with_errors, key="detail_error_job")
        job = ui.run("job", admin.get_job, job_id)
        if job is not None:
            for err in job["errors"] or []:
                st.text(f"attempt {err.get('attempt')} at {ui.when_text(err.get('at'))} on "
                        f"{err.get('worker') or '?'}")
                st.code(err.get("traceback") or err.get("error") or "", language=None)
            if not job["errors"]:
                st.code(job["last_error"] or "", language=None)


def slot_ledger(admin: Any, name: str) -> None:
    """The latest slots with their outcome, and the reason for every slot that did not complete (the ledger
    outlives job history: `pgjobs schedule slots`)."""
    st.subheader("Slot ledger")
    rows = ui.run("slot ledger", admin.schedule_slots, name, limit=50) or []
    if not rows:
        st.text("No slots recorded yet.")
        return
    shown = []
    for r in reversed(rows):  # newest first
        count = r["slot_count"] if r["slot_count"] is not None else "many"
        shown.append({**r, "outcome": r["outcome"] + (" (backfilled)" if r["backfilled"] else ""),
                      "slots": f"{count} slots, until {ui.when(r['last_slot'])}" if r["last_slot"] else "1",
                      "lateness_text": ui.seconds_text(r["lateness"]), "reason": r["reason"] or ""})
    ui.table(shown, {"slot": "Slot", "outcome": "Outcome", "slots": "Slots", "started_at": "Started",
                     "lateness_text": "Late by", "job_id": "Job", "reason": "Why"},
             times=["slot", "started_at"], key="detail_ledger")


def render() -> None:
    admin = ui.admin()
    name = pick_schedule(admin)
    if name is None:
        return
    sc = ui.run("schedule", admin.get_schedule, name)
    if sc is None:
        return
    configuration(admin, sc)
    ui.live(lambda: history(admin, name, sc["created_at"]))


render()
