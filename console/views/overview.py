"""Overview: leader, workers, jobs by state, next runs, lateness of recent slots, overdue schedules (no
success within N intervals), failures in the last 24 h."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from console import ui
from pgjobs.admin import describe_horizon_holder

st.title("Overview")


def render() -> None:
    admin = ui.admin()
    now = datetime.now(UTC)
    status = ui.run("status", admin.status)
    if status is None:
        return
    st.caption(f"Times in {st.session_state.get('tz', 'UTC')} · updated {ui.when(now)}")
    for holder in status.get("horizon_holders", []):
        st.warning(f"Vacuum is held back: {describe_horizon_holder(holder)}")

    leader_col, workers_col, jobs_col = st.columns(3)
    with leader_col:
        st.subheader("Leader")
        leader = status["leader"]
        if leader:
            st.text(f"{leader['host']} pid {leader['pid']}\nsince {ui.when(leader['leader_since'])} "
                    f"({ui.ago(leader['leader_since'], now)})")
        else:
            st.warning("No leader: no worker holds the scheduling lock, so no cron slot is being enqueued.")
    with workers_col:
        st.subheader("Workers")
        workers = status["workers"]
        dead = [w for w in workers if not w.get("alive", True)]  # session gone: jobs being rescued
        st.metric("Live worker processes", len(workers) - len(dead),
                  delta=f"{len(dead)} dead, jobs being rescued" if dead else None, delta_color="inverse")
    with jobs_col:
        st.subheader("Last 24 h")
        last = status["last_24h"]
        st.metric("Failed", last.get("failed", 0))
        st.text(f"completed {last.get('completed', 0)} · skipped {last.get('skipped', 0)} · "
                f"cancelled {last.get('cancelled', 0)}")

    if workers:
        leader_id = leader["id"] if leader else None
        ui.table([{**w, "age": ui.seconds_text(w["heartbeat_age"]), "leads": "leader" if w["id"] == leader_id else ""}
                  for w in workers],
                 {"name": "Worker", "host": "Host", "pid": "PID", "age": "Heartbeat age", "running": "Running",
                  "leads": "Role"}, key="overview_workers")

    st.subheader("Jobs by state")
    counts = ui.run("job counts", admin.job_state_counts)
    if counts is not None:
        cols = st.columns(len(ui.JOB_STATE_ORDER))
        prefix = "" if counts["exact"] else "≈ "
        for col, state in zip(cols, ui.JOB_STATE_ORDER, strict=True):
            exact = state in ("available", "running")
            col.metric(state, f"{'' if exact else prefix}{counts['counts'].get(state, 0):,}")
        if not counts["exact"]:
            st.caption(f"≈ estimated from table statistics (about {counts['total']:,} jobs in total)")

    left, right = st.columns(2)
    with left:
        st.subheader("Next runs")
        rows = ui.run("next runs", admin.next_runs, 10) or []
        ui.table([{**r, "in": ui.ago(r["next_run_at"], now)} for r in rows],
                 {"name": "Schedule", "task": "Task", "cron": "Cron", "next_run_at": "Next run", "in": "In"},
                 times=["next_run_at"], key="overview_next")
    with right:
        st.subheader("Lateness of recent slots")
        late = ui.run("lateness", admin.recent_lateness, since=now - timedelta(hours=24), limit=200) or []
        if late:
            frame = pd.DataFrame({"slot": [r["slot"] for r in late],
                                  "lateness (s)": [float(r["lateness"]) for r in late]})
            frame["slot"] = pd.to_datetime(frame["slot"], utc=True).dt.tz_convert(str(ui.tz()))
            st.scatter_chart(frame, x="slot", y="lateness (s)", height=220)
            st.caption(f"last {len(late)} cron runs · p50 {ui.seconds_text(frame['lateness (s)'].median())} · "
                       f"max {ui.seconds_text(frame['lateness (s)'].max())}")
        else:
            st.text("No cron runs in the last 24 h.")

    overdue = ui.run("overdue schedules", admin.overdue_schedules)
    if overdue is not None and overdue["overdue"]:
        st.subheader("Overdue schedules")
        st.error(f"{len(overdue['overdue'])} enabled schedule(s) with no successful slot in the last "
                 f"{overdue['intervals']:g} of their intervals.")
        ui.table([{**r, "behind": ui.seconds_text(r["overdue_seconds"])} for r in overdue["overdue"]],
                 {"name": "Schedule", "cron": "Cron", "last_success_at": "Last success", "deadline": "Due by",
                  "behind": "Overdue by"}, times=["last_success_at", "deadline"], key="overview_overdue")

    st.subheader("Failures in the last 24 h")
    failures = ui.run("failures", admin.recent_failures, since=now - timedelta(hours=24), limit=20) or []
    if failures:
        ui.table(failures, {"id": "Job", "task": "Task", "schedule": "Schedule", "finished_at": "Failed at",
                            "attempt": "Attempt", "worker": "Worker", "last_error": "Error"},
                 times=["finished_at"], key="overview_failures")
    else:
        st.text("No failed jobs in the last 24 h.")


ui.live(render)
