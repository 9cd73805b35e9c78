"""Jobs: filter by state, queue, task, schedule and time; keyset paging (newest first); job detail; retry,
cancel and delete, one job or many, each confirmed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from console import ui
from pgjobs.states import FINISHED_STATES, JOB_STATES, UNFINISHED_STATES

WINDOWS = {"any time": None, "last hour": 3600, "last 24 h": 86400, "last 7 d": 7 * 86400, "last 30 d": 30 * 86400}
ANY = "(any)"

st.title("Jobs")


def filters(admin: Any) -> dict[str, Any]:
    c1, c2, c3, c4, c5 = st.columns([3, 2, 2, 2, 2])
    states = c1.multiselect("State", JOB_STATES, key="jobs_states")
    queue = c2.text_input("Queue", key="jobs_queue")
    task = c3.text_input("Task", key="jobs_task")
    names = ui.run("schedule names", admin.schedule_names, None, 1000) or []
    schedule = c4.selectbox("Schedule", [ANY, *names], key="jobs_schedule")
    window = c5.selectbox("Enqueued", list(WINDOWS), key="jobs_window")
    seconds = WINDOWS[window]
    return {"state": states or None, "queue": queue.strip() or None, "task": task.strip() or None,
            "schedule": None if schedule == ANY else schedule,
            "since": datetime.now(UTC) - timedelta(seconds=seconds) if seconds else None}


def page_of_jobs(admin: Any, chosen: dict[str, Any]) -> list[dict[str, Any]]:
    size = st.session_state.get("jobs_size", 50)
    signature = repr({k: v for k, v in chosen.items() if k != "since"}) + repr(st.session_state.get("jobs_window"))
    if st.session_state.get("_jobs_signature") != signature + str(size):
        st.session_state["_jobs_signature"] = signature + str(size)
        st.session_state["jobs_cursors"] = []  # keyset: the before_id of each page we came through
    cursors: list[int] = st.session_state.setdefault("jobs_cursors", [])
    rows = ui.run("list jobs", admin.list_jobs, **chosen, limit=size + 1,
                  before_id=cursors[-1] if cursors else None)
    if rows is None:
        return []
    more, rows = len(rows) > size, rows[:size]
    counts = ui.run("counts", admin.job_state_counts)
    total = f"{'' if counts['exact'] else '≈ '}{counts['total']:,} jobs in total · " if counts else ""
    st.caption(f"{total}page {len(cursors) + 1} · newest first · times in {st.session_state.get('tz', 'UTC')}")
    now = datetime.now(UTC)
    shown = [{**r, "state_text": ui.job_state_text(r, now), "duration_text": ui.job_duration_text(r, now),
              "error_text": r["last_error"] or "", "worker_text": r["worker"] or "",
              "schedule_text": r.get("schedule") or ""} for r in rows]
    ui.table(shown, {"id": "Job", "state_text": "State", "task": "Task", "queue": "Queue",
                     "schedule_text": "Schedule", "attempt": "Attempt", "inserted_at": "Enqueued",
                     "started_at": "Started", "finished_at": "Finished", "duration_text": "Duration",
                     "worker_text": "Worker", "error_text": "Error"},
             times=["inserted_at", "started_at", "finished_at"], key="jobs_table")
    prev, _, size_col, nxt = st.columns([2, 5, 2, 2])
    if prev.button("Newer", icon=":material/chevron_left:", key="jobs_prev", disabled=not cursors):
        cursors.pop()
        st.rerun()
    size_col.selectbox("Per page", [25, 50, 100, 200], index=1, key="jobs_size", label_visibility="collapsed")
    if nxt.button("Older", icon=":material/chevron_right:", key="jobs_next", disabled=not more):
        cursors.append(rows[-1]["id"])
        st.rerun()
    return rows


ALLOWED = {"retry": FINISHED_STATES, "cancel": UNFINISHED_STATES, "delete": (*FINISHED_STATES, "available")}


def bulk(admin: Any, ids: list[int], key: str, state: str | None = None) -> None:
    """Retry / cancel / delete buttons for `ids`, each behind a confirmation; with the `state` of a single
    job, the actions that state does not allow are disabled (the admin API checks again)."""
    labels = {"retry": ("Retry", admin.retry_jobs), "cancel": ("Cancel", admin.cancel_jobs),
              "delete": ("Delete", admin.delete_jobs)}
    cols = st.columns(len(labels) + 3)
    for col, (action, (label, _)) in zip(cols, labels.items(), strict=False):
        allowed = state is None or state in ALLOWED[action]
        if col.button(label, key=f"{key}_{action}", disabled=not ids or not allowed):
            for other in labels:
                st.session_state.pop(f"_confirm_{key}_{other}", None)
            st.session_state[f"_pending_{key}"] = list(ids)
            ui.ask(f"{key}_{action}")
    pending = st.session_state.get(f"_pending_{key}", [])
    for action, (label, fn) in labels.items():
        what = f"job {pending[0]}" if len(pending) == 1 else f"{len(pending)} jobs"
        if ui.confirm(f"{key}_{action}", f"{label} {what}?", f"Yes, {label.lower()}"):
            ok, result = ui.attempt(action, fn, pending)
            if ok:
                if action == "cancel":
                    done = len(result["cancelled"]) + len(result["requested"])
                    note = f" ({len(result['requested'])} running: asked to stop)" if result["requested"] else ""
                else:
                    done, note = len(result), ""
                skipped = len(pending) - done
                ui.flash(f"{label}: {done} of {len(pending)} jobs{note}"
                         + (f"; {skipped} not in a state that allows it" if skipped else "") + ".",
                         "success" if done else "warning")
                st.session_state.pop(f"_pending_{key}", None)
                st.rerun()


def detail(admin: Any, rows: list[dict[str, Any]]) -> None:
    st.subheader("Job detail")
    if not rows and "jobs_detail_id" not in st.session_state:
        st.text("No jobs match.")
        return
    default = rows[0]["id"] if rows else 1
    job_id = st.number_input("Job id", min_value=1, value=default, step=1, key="jobs_detail_id")
    job = ui.run("job", admin.get_job, int(job_id))
    if job is None:
        return
    left, right = st.columns([2, 1])
    with left:
        fields = [("state", ui.job_state_text(job)), ("duration", ui.job_duration_text(job)), ("task", job["task"]), ("queue", job["queue"]),
                  ("attempts", f"{job['attempt']} of {job['max_attempts']}"), ("priority", job["priority"]),
                  ("schedule id", job["schedule_id"] or ""), ("slot", ui.when(job["slot"])),
                  ("enqueued", ui.when(job["inserted_at"])), ("scheduled", ui.when(job["scheduled_at"])),
                  ("started", ui.when(job["started_at"])), ("finished", ui.when(job["finished_at"])),
                  ("worker", job["worker"] or ""), ("unique key", job["unique_key"] or ""),
                  ("cancel requested", "yes" if job["cancel_requested"] else "no")]
        ui.table([{"field": k, "value": str(v)} for k, v in fields], {"field": "Field", "value": "Value"},
                 key="jobs_detail_fields", height="fit")
    with right:
        st.markdown("**Arguments**")
        st.json(job["args"] or {})
        st.markdown("**Result**")
        if job["result"] is None:
            st.text("none")
        else:
            st.json(job["result"])
    if job["errors"]:
        st.markdown("**Errors, one per attempt**")
        for err in job["errors"]:
            st.text(f"attempt {err.get('attempt')} at {ui.when_text(err.get('at'))} on {err.get('worker') or '?'}: "
                    f"{err.get('error')}")
            if err.get("traceback"):
                st.code(err["traceback"], language=None)
    elif job["last_error"]:
        st.code(job["last_error"], language=None)
    if ui.is_admin():
        bulk(admin, [job["id"]], "job_one", state=job["state"])


def render() -> None:
    admin = ui.admin()
    chosen = filters(admin)

    def listing() -> None:
        rows = page_of_jobs(admin, chosen)
        if ui.is_admin() and rows:
            st.subheader("Bulk actions")
            options = [r["id"] for r in rows]
            st.session_state["jobs_selected"] = [i for i in st.session_state.get("jobs_selected", [])
                                                 if i in options]
            selected = st.multiselect("Jobs on this page", options, key="jobs_selected",
                                      format_func=lambda i: f"{i}")
            if st.checkbox("Select every job on this page", key="jobs_all"):
                selected = options
            bulk(admin, selected, "jobs_bulk")
        detail(admin, rows)

    ui.live(listing)


render()
