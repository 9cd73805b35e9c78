"""The hot statements use their indexes: EXPLAIN on a seeded database, as PgQueuer guards its dequeue.

A claim that falls back to reading and sorting every available job is still correct, only ~5x slower with a
20,000-job backlog (that is what `queue = ANY(...)` did before `claim_jobs` took one queue), so nothing but a
plan check notices it. The seed is small but shaped like production: a backlog on two queues, finished history,
schedule jobs, many schedules of which few are due, and statistics (ANALYZE).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgjobs.queries import queries

q = queries("pgjobs")

SEED = [
    """INSERT INTO pgjobs.schedules (name, task, cron, next_run_at, overlap)
       SELECT 's' || i, 'pgjobs.noop', '* * * * *', now() + (i % 600) * interval '1 second',
              CASE WHEN i % 2 = 0 THEN 'skip' ELSE 'allow' END
       FROM generate_series(1, 2000) AS i""",
    """INSERT INTO pgjobs.jobs (queue, task, state, scheduled_at)
       SELECT CASE WHEN i % 10 = 0 THEN 'other' ELSE 'default' END, 'pgjobs.noop', 'available',
              now() - interval '1 minute'
       FROM generate_series(1, 20000) AS i""",
    """INSERT INTO pgjobs.jobs (queue, task, state, attempt, scheduled_at, started_at, finished_at, seg)
       SELECT 'default', 'pgjobs.noop', 'completed', 1, now() - interval '1 hour', now() - interval '1 hour',
              now() - interval '1 hour', pgjobs.history_seg('completed', now() - interval '1 hour')
       FROM generate_series(1, 30000) AS i""",
    """INSERT INTO pgjobs.jobs (queue, task, state, schedule_id, slot, scheduled_at)
       SELECT 'default', 'pgjobs.noop', 'available', 1 + i % 2000, date_trunc('minute', now()) - i * interval '1 minute',
              now() - interval '1 minute'
       FROM generate_series(1, 2000) AS i""",
    "ANALYZE pgjobs.jobs",
    "ANALYZE pgjobs.schedules",
]


@pytest.fixture
def seeded(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    for statement in SEED:
        db.execute(statement)
    yield db


def plan_of(conn: psycopg.Connection, statement: str, params: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN (FORMAT JSON) of a statement with its parameters, in a transaction that is rolled back; sent
    unprepared, as the worker sends its claims (partitions pruned with the parameters' values). Partitions
    of jobs and their indexes are named after their parent (jobs, ix_jobs_...)."""
    with conn.transaction(force_rollback=True):
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params, prepare=False).fetchone()[0][0]["Plan"]
    return as_parent(conn, plan)


def as_parent(conn: psycopg.Connection, plan: dict[str, Any]) -> dict[str, Any]:
    # A partition that holds (next to) nothing - an announced segment, a day ahead, a day of a few failures -
    # may be read whole: it is named apart.
    parents = dict(conn.execute(
        """SELECT c.relname, CASE WHEN c.relkind = 'r' AND c.reltuples < 1000 THEN 'small partition'
                                  ELSE p.relname END
           FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
           JOIN pg_class AS p ON p.oid = i.inhparent
           WHERE p.relnamespace = 'pgjobs'::regnamespace""").fetchall())
    for n in nodes(plan):
        for key in ("Relation Name", "Index Name"):
            if n.get(key) in parents:
                n[key] = parents[n[key]]
    return plan


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def scans(plan: dict[str, Any], relation: str) -> list[tuple[str, str | None]]:
    return [(n["Node Type"], n.get("Index Name")) for n in nodes(plan) if n.get("Relation Name") == relation]


def indexes(plan: dict[str, Any]) -> set[str]:
    """Every index the plan reads (a Bitmap Index Scan names its index but not its table)."""
    return {n["Index Name"] for n in nodes(plan) if "Index Name" in n}


CLAIM = {"queue": "default", "queues": ["default"], "limit": 128, "worker_id": 1, "worker": "w", "segs": [0, 1, 2]}
# Every claim variant must plan alike: the durable one and the default one that skips the WAL flush wait.
ONE_QUEUE_CLAIMS = pytest.mark.parametrize("claim", ["claim_jobs", "claim_jobs_async_commit"])


@ONE_QUEUE_CLAIMS
def test_claim_walks_the_claim_index_in_order_without_reading_the_backlog(seeded: psycopg.Connection,
                                                                           claim: str) -> None:
    plan = plan_of(seeded, getattr(q, claim), CLAIM)
    jobs = scans(plan, "jobs")
    assert ("Index Scan", "ix_jobs_claim") in jobs, jobs
    assert not [s for s in jobs if s[0] in ("Seq Scan", "Bitmap Heap Scan")], jobs
    assert not [n for n in nodes(plan) if n["Node Type"] in ("Sort", "Incremental Sort")], "claim sorts the backlog"


@ONE_QUEUE_CLAIMS
def test_claim_overlap_check_looks_up_one_schedule_by_index(seeded: psycopg.Connection, claim: str) -> None:
    plan = plan_of(seeded, getattr(q, claim), CLAIM)
    subplans = [n for n in nodes(plan) if n.get("Parent Relationship") == "SubPlan"]
    assert subplans, "the overlap clause (NOT EXISTS) is planned as a subplan, run only for schedule jobs"
    inner = [s for sub in subplans for s in scans(sub, "jobs") + scans(sub, "schedules")]
    assert ("Index Scan", "ix_jobs_schedule_unfinished") in inner, inner
    assert not [s for s in inner if s[0] == "Seq Scan"], inner


@pytest.mark.parametrize("claim", ["claim_jobs_any_queue", "claim_jobs_any_queue_async_commit"])
def test_claim_for_several_queues_never_scans_the_whole_table(seeded: psycopg.Connection, claim: str) -> None:
    plan = plan_of(seeded, getattr(q, claim), {**CLAIM, "queues": ["default", "other"]})
    jobs = scans(plan, "jobs")
    assert not [s for s in jobs if s[0] == "Seq Scan"], jobs


def test_due_schedules_read_the_due_index(seeded: psycopg.Connection) -> None:
    plan = plan_of(seeded, q.due_schedules, {"limit": 1000})
    found = scans(plan, "schedules")
    assert "ix_schedules_due" in indexes(plan), found
    assert not [s for s in found if s[0] == "Seq Scan"], found


def test_complete_and_unfinished_by_schedule_use_indexes(seeded: psycopg.Connection) -> None:
    ids = [r[0] for r in seeded.execute("SELECT id FROM pgjobs.jobs WHERE state = 'available' LIMIT 128")]
    plan = plan_of(seeded, q.complete_jobs, {"ids": ids, "attempts": [1] * len(ids), "segs": [1] * len(ids),
                                             "in_segs": [1], "waited": [0.0] * len(ids),
                                             "seconds": [0.0] * len(ids), "results": [None] * len(ids),
                                             "worker_id": 1})
    # A completion reads the segment of its jobs only (partition pruning on seg): a seq scan of that one segment
    # (a few seconds of jobs) or primary-key probes, as the planner sees fit; never the history or other segments.
    read = {n["Relation Name"] for n in nodes(plan) if "Relation Name" in n and n["Node Type"] != "ModifyTable"}
    assert read == {"jobs"}, read
    assert len([n for n in nodes(plan) if n.get("Node Type") in ("Seq Scan", "Index Scan")
                and n.get("Relation Name") == "jobs"]) == 1, "one partition read"
    plan = plan_of(seeded, q.unfinished_by_schedule, {"ids": list(range(1, 1001))})
    found = scans(plan, "jobs")
    assert "ix_jobs_schedule_unfinished" in indexes(plan), found
    assert not [s for s in found if s[0] == "Seq Scan"], found


def test_a_big_completion_batch_is_found_by_id_whatever_the_statistics_say(seeded: psycopg.Connection) -> None:
    """Statistics taken while nothing ran say ~0 running jobs; a completion of thousands must not trust them.

    With the ownership test on the jobs scan, the planner put jobs outside a nested loop and rescanned the
    batch for every running job (5,000 x 2,000 here: seconds; it stalled a 2-process drain). Hash and merge
    joins are switched off to make the planner take the nested loop those statistics lead it to: the batch
    must still drive, one primary-key probe per job.
    """
    seeded.execute("UPDATE pgjobs.jobs SET state = 'running', worker_id = 7, attempt = 1, started_at = now() "
                   "WHERE id IN (SELECT id FROM pgjobs.jobs WHERE state = 'available' LIMIT 5000)")
    ids = [r[0] for r in seeded.execute("SELECT id FROM pgjobs.jobs WHERE state = 'running' LIMIT 2000")]
    n = len(ids)
    params = {"ids": ids, "attempts": [1] * n, "segs": [1] * n, "in_segs": [1], "waited": [0.0] * n,
              "seconds": [0.0] * n, "results": [None] * n, "worker_id": 7}
    with seeded.transaction(force_rollback=True):
        seeded.execute("SET LOCAL enable_hashjoin = off")
        seeded.execute("SET LOCAL enable_mergejoin = off")
        plan = as_parent(seeded, seeded.execute("EXPLAIN (FORMAT JSON) " + q.complete_jobs, params,
                                                prepare=False).fetchone()[0][0]["Plan"])
    reads = [s for s in scans(plan, "jobs") if s[0] != "ModifyTable"]
    assert reads == [("Index Scan", "pk_jobs")], reads
    loops = [n for n in nodes(plan) if n["Node Type"] == "Nested Loop"]
    assert loops and loops[0]["Plans"][1].get("Relation Name") == "jobs", "the batch must be the outer side"
    with seeded.transaction(force_rollback=True):
        assert seeded.execute(q.complete_jobs, {**params, "worker_id": 8}).rowcount == 0  # not the owner
        assert seeded.execute(q.complete_jobs, {**params, "attempts": [2] * n}).rowcount == 0  # another attempt
        assert seeded.execute(q.complete_jobs, params).rowcount == n
        assert seeded.execute(q.complete_jobs, params).rowcount == 0  # already completed


# ---------------------------------------------------------------------------------------------------------------
# The job list and the health counts read unfinished and finished jobs through separate partial indexes
# (migration 0004): the history indexes hold finished jobs only, so no job pays for them before it finishes.

LIST = {"schedule_id": None, "states": None, "queue": None, "task": None, "since": None, "until": None,
        "before_id": None, "limit": 51}
MORE_HISTORY = [  # running jobs and rarer finished states, two hours old
    """INSERT INTO pgjobs.jobs (queue, task, state, attempt, scheduled_at, inserted_at, started_at, finished_at,
                               worker_id, last_error, seg)
       SELECT 'default', CASE WHEN i % 3 = 0 THEN 'app.rare' ELSE 'pgjobs.noop' END,
              CASE i % 4 WHEN 0 THEN 'running' WHEN 1 THEN 'failed' WHEN 2 THEN 'cancelled' ELSE 'skipped' END, 1,
              now() - interval '2 hours', now() - interval '2 hours', now() - interval '2 hours',
              CASE WHEN i % 4 <> 0 THEN now() - interval '2 hours' END, CASE WHEN i % 4 = 0 THEN 1 + i % 8 END,
              CASE WHEN i % 4 = 1 THEN 'boom' END,
              CASE WHEN i % 4 = 0 THEN 1 ELSE pgjobs.history_seg(CASE i % 4 WHEN 1 THEN 'failed'
                   WHEN 2 THEN 'cancelled' ELSE 'skipped' END, now() - interval '2 hours') END
       FROM generate_series(1, 400) AS i""",
    "ANALYZE pgjobs.jobs",
]


@pytest.fixture
def history(seeded: psycopg.Connection) -> psycopg.Connection:
    for statement in MORE_HISTORY:
        seeded.execute(statement)
    return seeded


def arm_reads(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [s for s in scans(plan, "jobs") if s[0] != "ModifyTable"]


def test_job_list_arms_read_only_their_own_index(history: psycopg.Connection) -> None:
    """Finished, available and running jobs each through the index that holds exactly them; never a walk of the
    whole table filtered by state (which is what a finished-only history index would force on one plan)."""
    plan = plan_of(history, q.list_jobs, LIST)
    reads = arm_reads(plan)
    walks = {n["Index Name"] for n in nodes(plan) if n.get("Scan Direction") == "Backward"}
    assert walks == {"ix_jobs_finished_id", "ix_jobs_available_id"}, reads  # newest first, stopping at the limit
    assert "ix_jobs_running_worker" in indexes(plan), reads
    assert not [s for s in reads if s[0] == "Seq Scan" or s[1] == "pk_jobs"], reads


@pytest.mark.parametrize("states, index", [(["failed"], "ix_jobs_state_id"), (["available"], "ix_jobs_available_id"),
                                           (["running"], "ix_jobs_running_worker")])
def test_a_state_filter_switches_off_the_arms_it_cannot_match(history: psycopg.Connection, states: list[str],
                                                              index: str) -> None:
    plan = plan_of(history, q.list_jobs, {**LIST, "states": states})
    assert index in indexes(plan), arm_reads(plan)
    gated = [n for n in nodes(plan) if n.get("One-Time Filter") == "false"]
    assert len(gated) == 2, "the two arms without that state read nothing"


def test_health_counts_read_unfinished_jobs_only(history: psycopg.Connection) -> None:
    """Unfinished jobs live in the hot partitions (parked and the ring): the health counts read nothing else,
    however long the history (a hot segment is mostly unfinished jobs, so reading it whole is fine)."""
    for statement in (q.queue_health, q.unfinished_counts):
        with history.transaction(force_rollback=True):
            plan = history.execute("EXPLAIN (FORMAT JSON) " + statement, prepare=False).fetchone()[0][0]["Plan"]
        read = {n["Relation Name"] for n in nodes(plan) if "Relation Name" in n}
        assert read and all(r == "jobs_parked" or r.startswith("jobs_ring_") for r in read), read


def test_pruning_finds_old_finished_jobs_through_a_history_index(history: psycopg.Connection) -> None:
    plan = plan_of(history, q.prune_jobs, {"states": ["completed", "skipped"], "age": 60, "batch": 5000})
    assert indexes(plan) & {"ix_jobs_state_finished", "ix_jobs_finished_id"}, arm_reads(plan)


LIST_CASES = [
    {}, {"states": ["failed"]}, {"states": ["running"]}, {"states": ["available", "failed"]},
    {"states": ["completed", "running", "skipped"]}, {"queue": "other"}, {"queue": "default", "states": ["running"]},
    {"task": "app.rare"}, {"task": "no.such.task"}, {"schedule_id": 7}, {"before_id": 25_000},
    {"before_id": 52_200, "states": ["cancelled", "running"]}, {"since": "90 minutes"},
    {"until": "90 minutes", "task": "app.rare"},
]
# The same filters over the whole table, in one plain statement.
PLAIN_LIST = """
    SELECT id FROM pgjobs.jobs
    WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s))
      AND (%(schedule_id)s::bigint IS NULL OR schedule_id = %(schedule_id)s)
      AND (%(queue)s::text IS NULL OR queue = %(queue)s) AND (%(task)s::text IS NULL OR task = %(task)s)
      AND (%(since)s::timestamptz IS NULL OR inserted_at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR inserted_at < %(until)s)
      AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
    ORDER BY id DESC LIMIT %(limit)s"""


@pytest.mark.parametrize("case", LIST_CASES, ids=[repr(c) for c in LIST_CASES])
def test_the_job_list_returns_what_one_plain_query_over_the_table_returns(history: psycopg.Connection,
                                                                          case: dict[str, Any]) -> None:
    """The three arms together are exactly the newest jobs that pass the filters, whatever the filters."""
    params = {**LIST, **case}
    for key in ("since", "until"):  # "90 minutes" ago, on the database clock
        if params[key]:
            params[key] = history.execute("SELECT now() - %s::interval", (params[key],)).fetchone()[0]
    plain = [r[0] for r in history.execute(PLAIN_LIST, params)]
    listed = [r[0] for r in history.execute(q.list_jobs, params)]
    assert listed == plain
    assert plain or case.get("task") == "no.such.task", "the case should find some jobs"


def test_the_database_keeps_finished_at_set_exactly_on_finished_jobs(db: psycopg.Connection) -> None:
    now = db.execute("SELECT now()").fetchone()[0]
    for state, finished_at in (("completed", None), ("failed", None), ("available", now), ("running", now)):
        with pytest.raises(psycopg.errors.CheckViolation, match="ck_jobs_finished"):
            db.execute("INSERT INTO pgjobs.jobs (task, state, started_at, finished_at) "
                       "VALUES ('pgjobs.noop', %s, now(), %s)", (state, finished_at))
