"""Workers: every worker process with host, pid, queues, start, heartbeat and running jobs; who leads."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from console import ui

st.title("Workers")


def render() -> None:
    admin = ui.admin()
    status = ui.run("status", admin.status)
    if status is None:
        return
    now = datetime.now(UTC)
    leader = status["leader"]
    if leader:
        st.text(f"Leader: {leader['name']} on {leader['host']} (pid {leader['pid']}), since "
                f"{ui.when(leader['leader_since'])} ({ui.ago(leader['leader_since'], now)}); database backend "
                f"pid {status['leader_backend_pid']}")
    elif status.get("foreign_lock_holder"):
        holder = status["foreign_lock_holder"]
        st.error(f"No leader: the scheduling lock is held by backend {holder['pid']} (application_name "
                 f"'{holder['application_name']}', client {holder['client_addr'] or 'local socket'}), which is not a "
                 f"live pgjobs worker. No cron slot is enqueued until it ends: {holder['clear_with']}")
    else:
        st.warning("No leader: no worker holds the scheduling lock.")
    workers = status["workers"]
    stale_after = 3 * admin.settings.heartbeat_interval
    dead = [w for w in workers if not w.get("alive", True)]
    counted = f"{len(workers) - len(dead)} live worker processes" + (
        f" · {len(dead)} dead (session gone; its jobs are being rescued, then its row is removed)" if dead else "")
    st.caption(f"{counted} · a worker is dead only when its database session is gone (its "
               f"jobs are then rescued); a heartbeat older than {ui.seconds_text(stale_after)} is shown as slow · "
               f"times in {st.session_state.get('tz', 'UTC')}")
    if not workers:
        st.text("No workers are running. Start one with `python -m pgjobs worker`.")
        return
    ui.table([{**w, "queues_text": ", ".join(w["queues"]), "age": ui.seconds_text(w["heartbeat_age"]),
               "leads": "leader" if leader and w["id"] == leader["id"] else "",
               "health": "stopping" if w["stopping"] else "dead: session gone" if not w.get("alive", True) else (
                   "slow heartbeat" if (w["heartbeat_age"] or 0) > stale_after else "ok")}
              for w in workers],
             {"name": "Worker", "host": "Host", "pid": "PID", "queues_text": "Queues", "concurrency": "Threads",
              "running": "Running jobs", "started_at": "Started", "heartbeat_at": "Heartbeat", "age": "Age",
              "health": "Health", "leads": "Leader", "version": "Version"},
             times=["started_at", "heartbeat_at"], key="workers_table")


ui.live(render)
