"""The schema's vocabulary: job states and schedule policies (the CHECK constraints in `schema.py` use these).

A module of its own so that the worker, the CLI and the admin API can use them without importing SQLAlchemy,
which only the schema definition and the migrations need (it is most of a worker's start-up time).
"""

from __future__ import annotations

JOB_STATES = ("available", "running", "completed", "failed", "cancelled", "skipped")
UNFINISHED_STATES = ("available", "running")
FINISHED_STATES = ("completed", "failed", "cancelled", "skipped")
CATCHUP_POLICIES = ("latest", "all", "none")
# What a slot does while the schedule's previous run is unfinished (Temporal's six, schedule/v1/message.proto):
# skip it (recorded), buffer one (at most one waits, like pg_cron), buffer all, cancel the previous run
# (cooperatively; SQL through pg_cancel_backend) then start, terminate it (pg_terminate_backend; a Python
# thread is abandoned, its outcome refused) then start, or allow runs in parallel.
OVERLAP_POLICIES = ("skip", "buffer_one", "buffer_all", "cancel_previous", "terminate_previous", "allow")
# Older names still accepted on input (migration 0005 converted the stored rows).
OVERLAP_ALIASES = {"queue": "buffer_all"}
# The slot ledger's stored outcomes (`slots.outcome`; NULL while the slot's job is unfinished, shown as
# `waiting` or `running` from the job). `missed` and `paused` rows are ranges of slots.
SLOT_OUTCOMES = ("completed", "failed", "cancelled", "skipped", "missed", "paused")
# What `schedule slots` reports: the stored outcomes and the two live ones.
SLOT_REPORTED = ("completed", "failed", "cancelled", "skipped", "missed", "paused", "running", "waiting")
