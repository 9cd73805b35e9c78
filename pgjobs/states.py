"""The schema's vocabulary: job states and schedule policies (the CHECK constraints in `schema.py` use these).

A module of its own so that the worker, the CLI and the admin API can use them without importing SQLAlchemy,
which only the schema definition and the migrations need (it is most of a worker's start-up time).
"""

from __future__ import annotations

JOB_STATES = ("available", "running", "completed", "failed", "cancelled", "skipped")
UNFINISHED_STATES = ("available", "running")
FINISHED_STATES = ("completed", "failed", "cancelled", "skipped")
CATCHUP_POLICIES = ("latest", "all", "none")
OVERLAP_POLICIES = ("skip", "queue", "allow")
