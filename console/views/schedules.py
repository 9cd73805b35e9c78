"""Schedules: a searchable, sortable, paged table; create / edit with live cron validation; pause, resume,
run now, delete (confirmed). Every rule (cron, timezone, task, args) is checked by the admin API."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from console import ui
from pgjobs.admin import DEFAULTS, AdminError, EditConflict, describe_cron
from pgjobs.states import CATCHUP_POLICIES, OVERLAP_POLICIES

SORTS = {"name": "Name", "task": "Task", "next_run": "Next run", "last_slot": "Last slot"}
ENABLED = {"all": None, "enabled": True, "paused": False}
FIELDS = ("task", "args", "cron", "timezone", "enabled", "queue", "priority", "max_attempts", "timeout_seconds",
          "catchup", "catchup_max", "overlap", "description", "catchup_window_seconds", "jitter_seconds",
          "pause_after_failures")

st.title("Schedules")


def success_rate(row: dict[str, Any]) -> str:
    finished = (row["completed"] or 0) + (row["failed"] or 0)
    return f"{100 * row['completed'] / finished:.0f}% of {finished}" if finished else ""


def schedule_table(admin: Any) -> list[dict[str, Any]]:
    c1, c2, c3, c4 = st.columns([4, 1, 1, 1])
    search = c1.text_input("Search name or task", key="sch_search", placeholder="refresh, reports.daily, ...")
    enabled = c2.selectbox("Show", list(ENABLED), key="sch_enabled")
    sort = c3.selectbox("Sort by", list(SORTS), format_func=SORTS.get, key="sch_sort")
    size = c4.selectbox("Per page", [25, 50, 100, 200], index=1, key="sch_size")
    signature = (search, enabled, sort, size)
    if st.session_state.get("_sch_signature") != signature:
        st.session_state["_sch_signature"] = signature
        st.session_state["sch_page"] = 0
    page = st.session_state.get("sch_page", 0)
    rows = ui.run("list schedules", admin.console_schedules, search=search.strip() or None,
                  enabled=ENABLED[enabled], sort=sort, limit=size + 1, offset=page * size)
    if rows is None:
        return []
    more, rows = len(rows) > size, rows[:size]
    total = ui.run("count", admin.count_schedules, search.strip() or None)
    st.caption(f"{total} schedules match · page {page + 1} · success rate over the last 7 days (at most 200 "
               f"runs each) · times in {st.session_state.get('tz', 'UTC')}")
    # Every column fits at 1280 px: the task and the cron in words are shown for the selected schedule below.
    ui.table([{**r, "rate": success_rate(r), "state": "enabled" if r["enabled"] else "paused",
               "last": f"{r['last_state']}, {ui.when_short(r['last_run_at'])}" if r["last_state"] else "",
               "next": ui.when_short(r["next_run_at"]), "policies": f"{r['catchup']} / {r['overlap']}"}
              for r in rows],
             {"name": "Name", "cron": "Cron", "timezone": "Timezone", "state": "State", "last": "Last run",
              "next": "Next run", "rate": "Success (7 d)", "policies": "Catch-up / overlap"}, key="sch_table")
    prev, _, nxt = st.columns([2, 6, 2])
    if prev.button("Previous", key="sch_prev", disabled=page == 0, icon=":material/chevron_left:"):
        st.session_state["sch_page"] = page - 1
        st.rerun()
    if nxt.button("Next", key="sch_next", disabled=not more, icon=":material/chevron_right:"):
        st.session_state["sch_page"] = page + 1
        st.rerun()
    return rows


def actions(admin: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        st.text("No schedules.")
        return
    by_name = {r["name"]: r for r in rows}
    if st.session_state.get("sch_selected") not in by_name:
        st.session_state.pop("sch_selected", None)
    st.subheader("Selected schedule")
    name = st.selectbox("Schedule", list(by_name), key="sch_selected")
    row = by_name[name]
    st.text(f"Task {row['task']} · runs {ui.cron_text(row['cron'], row['timezone'])} ({row['timezone']}) · "
            f"next run {ui.when(row['next_run_at']) or 'none'}")
    buttons = st.columns(6)
    if buttons[0].button("Details", key="sch_details"):
        st.session_state["detail_schedule"] = name
        st.switch_page("views/schedule_detail.py")
    if not ui.is_admin():
        return
    if buttons[1].button("Edit", key="sch_edit"):
        open_form(("edit", name))
        st.rerun()
    if row["enabled"]:
        if buttons[2].button("Pause", key="sch_pause"):
            if ui.run("pause", admin.pause_schedule, name) is not None:
                ui.flash(f"Paused '{name}'.")
                st.rerun()
    elif buttons[2].button("Resume", key="sch_resume"):
        if ui.run("resume", admin.resume_schedule, name) is not None:
            ui.flash(f"Resumed '{name}'; missed slots follow its catch-up policy ({row['catchup']}).")
            st.rerun()
    if buttons[3].button("Run now", key="sch_run_now"):
        job_id = ui.run("run now", admin.run_now, name)
        if job_id is not None:
            ui.flash(f"Enqueued job {job_id} for '{name}'.")
            st.rerun()
    if buttons[4].button("Delete", key="sch_delete"):
        ui.ask(f"delete_{name}")
    if ui.confirm(f"delete_{name}", f"Delete schedule '{name}'? Its past jobs stay in the history.",
                  "Yes, delete"):
        ok, _ = ui.attempt("delete", admin.remove_schedule, name)
        if ok:
            ui.flash(f"Deleted '{name}'.")
            st.session_state.pop("sch_selected", None)
            st.rerun()


def open_form(mode: tuple[str, ...]) -> None:
    for key in [k for k in st.session_state if str(k).startswith("form_")]:
        del st.session_state[key]
    st.session_state["sch_mode"] = mode


def form(admin: Any, mode: tuple[str, ...]) -> None:
    creating = mode[0] == "create"
    if creating:
        st.subheader("New schedule")
        current: dict[str, Any] = dict(DEFAULTS, task="pgjobs.noop", cron="*/2 * * * *")
    else:
        st.subheader("Edit schedule")
        st.text(mode[1])
        if "form_opened" not in st.session_state:  # the version the user edits: read once, when opened
            st.session_state["form_opened"] = ui.run("load", admin.get_schedule, mode[1])
        current = st.session_state["form_opened"]
        if current is None:
            st.session_state.pop("sch_mode", None)
            return
    tasks = ui.task_names()
    if current["task"] not in tasks:
        tasks = [current["task"], *tasks]
    zones = ui.timezones()
    if current["timezone"] not in zones:  # never offer a different zone than the schedule's own
        zones = [current["timezone"], *zones]
    left, right = st.columns(2)
    with left:
        name = st.text_input("Name", key="form_name") if creating else mode[1]
        task = st.selectbox("Task", tasks, index=tasks.index(current["task"]), key="form_task")
        args = st.text_area("Arguments (JSON object)", json.dumps(current["args"] or {}), key="form_args")
        cron = st.text_input("Cron", current["cron"], key="form_cron",
                             help="5 fields (m h dom mon dow), 6 with seconds first, @daily, or 'N seconds'")
        timezone = st.selectbox("Timezone", zones, index=zones.index(current["timezone"]), key="form_timezone")
        enabled = st.checkbox("Enabled", bool(current["enabled"]), key="form_enabled")
        description = st.text_input("Description", current["description"] or "", key="form_description")
    with right:
        queue = st.text_input("Queue", current["queue"], key="form_queue")
        priority = st.number_input("Priority (lower runs first)", -32768, 32767, int(current["priority"]),
                                   key="form_priority")
        max_attempts = st.number_input("Max attempts", 1, 1000, int(current["max_attempts"]),
                                       key="form_max_attempts")
        timeout = st.number_input("Timeout in seconds (0 = none)", 0.0, 604800.0,
                                  float(current["timeout_seconds"] or 0.0), key="form_timeout")
        catchup = st.selectbox("Catch-up after downtime", CATCHUP_POLICIES,
                               index=CATCHUP_POLICIES.index(current["catchup"]), key="form_catchup",
                               help="latest: run the newest missed slot once; all: every missed slot "
                                    "(up to the max); none: skip missed slots")
        catchup_max = st.number_input("Catch-up max slots", 1, 100_000, int(current["catchup_max"]),
                                      key="form_catchup_max")
        overlap = st.selectbox("When the previous run is still going", OVERLAP_POLICIES,
                               index=OVERLAP_POLICIES.index(current["overlap"]), key="form_overlap",
                               help="skip: record the slot as skipped; buffer_one: at most one waits; buffer_all: "
                                    "all wait; cancel_previous / terminate_previous: stop it, then run; "
                                    "allow: run at once")
        window = st.number_input("Catch-up window in seconds (0 = none)", 0.0, 366 * 86400.0,
                                 float(current.get("catchup_window_seconds") or 0.0), key="form_catchup_window",
                                 help="after downtime, slots older than this are recorded as missed, not run")
        jitter = st.number_input("Jitter in seconds", 0.0, 86400.0, float(current.get("jitter_seconds") or 0.0),
                                 key="form_jitter", help="each slot starts at an offset in [0, jitter)")
        pause_after = st.number_input("Pause after N failed slots (0 = never)", 0, 1000,
                                      int(current.get("pause_after_failures") or 0), key="form_pause_after")

    st.markdown("**Preview**")
    preview = None
    try:
        preview = describe_cron(cron, timezone, count=5)
    except AdminError as exc:
        ui.show_error(exc)
    else:
        st.text(f"Runs {preview['description']} ({timezone}). Next 5 fire times:")
        st.code("\n".join(t.strftime("%Y-%m-%d %H:%M:%S %Z (%z)") for t in preview["next"]) or "none",
                language=None)

    save, cancel, _ = st.columns([1, 1, 6])
    if cancel.button("Cancel", key="form_cancel"):
        st.session_state.pop("sch_mode", None)
        st.rerun()
    fields = {"task": task, "args": args, "cron": cron, "timezone": timezone, "enabled": enabled,
              "queue": queue, "priority": int(priority), "max_attempts": int(max_attempts),
              "timeout_seconds": float(timeout) or None, "catchup": catchup, "catchup_max": int(catchup_max),
              "overlap": overlap, "description": description,
              "catchup_window_seconds": float(window) or None, "jitter_seconds": float(jitter),
              "pause_after_failures": int(pause_after) or None}
    # a bad cron's error is shown once, in the preview above, and Save waits for a good one
    if save.button("Create schedule" if creating else "Save changes", key="form_save", type="primary",
                   disabled=preview is None):
        if creating:
            saved = ui.run("create", admin.add_schedule, name.strip(), **fields)
        else:
            saved = save_changes(admin, mode[1], current, fields)
        if saved is not None:
            ui.flash(f"{'Created' if creating else 'Saved'} '{saved['name']}': next run "
                     f"{ui.when(saved['next_run_at'])} ({st.session_state.get('tz', 'UTC')}).")
            st.session_state.pop("sch_mode", None)
            st.session_state["sch_selected"] = saved["name"]
            st.rerun()


def changed_fields(opened: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The form's fields whose value differs from the schedule as it was when the form opened: only these are
    sent, so a field nobody touched never changes."""
    def same(key: str, value: Any) -> bool:
        before = opened.get(key)
        if key == "args":
            try:
                return json.loads(value or "{}") == (before or {})
            except ValueError:
                return False  # not JSON: send it, the admin API says what is wrong
        if key == "description":
            return (value or "") == (before or "")
        if key in ("timeout_seconds", "catchup_window_seconds", "jitter_seconds"):
            return (value or None) == (float(before) if before else None)
        if key == "pause_after_failures":
            return (value or None) == (before or None)
        return value == before
    return {k: v for k, v in fields.items() if not same(k, v)}


def save_changes(admin: Any, name: str, opened: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any] | None:
    changes = changed_fields(opened, fields)
    if not changes:
        ui.flash(f"Nothing changed in '{name}'.", "warning")
        st.session_state.pop("sch_mode", None)
        st.rerun()
    try:
        return admin.edit_schedule(name, expected_version=opened["version"], **changes)
    except EditConflict as exc:
        ui.show_error(f"Not saved: '{name}' was changed by {exc.actor} at {ui.when(exc.at)} "
                      f"({st.session_state.get('tz', 'UTC')}) since you opened it.")
        shown = sorted(set(changes) | {k for k in FIELDS if opened.get(k) != exc.current.get(k)})
        ui.table([{"field": k, "opened": _show(opened.get(k)), "now": _show(exc.current.get(k)),
                   "yours": _show(changes[k]) if k in changes else "(not changed)"} for k in shown],
                 {"field": "Field", "opened": "When you opened it", "now": "Now", "yours": "Your change"},
                 key="form_conflict")
        st.caption("Cancel and edit again to start from the current version.")
    except Exception as exc:  # noqa: BLE001 - shown like every other admin error
        ui.show_error(exc if isinstance(exc, AdminError) else f"save failed: {type(exc).__name__}: {exc}")
    return None


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else "" if value is None else str(value)


def render() -> None:
    admin = ui.admin()
    mode = st.session_state.get("sch_mode")
    if ui.is_admin() and mode is None and st.button("New schedule", key="sch_new", icon=":material/add:"):
        open_form(("create",))
        st.rerun()
    if ui.is_admin() and mode is not None:
        form(admin, mode)
        st.divider()

    def listing() -> None:
        actions(admin, schedule_table(admin))

    if mode is None:
        ui.live(listing)
    else:
        listing()


render()
