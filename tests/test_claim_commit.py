"""Claims skip the WAL flush wait by default (PGJOBS_SYNCHRONOUS_CLAIMS=off); everything else stays synchronous.

The claim statement sets synchronous_commit for its own transaction only: checked inside a transaction (the
setting is visible until COMMIT) and after it (the session's value is untouched, so task SQL run later on the
same pooled connection commits durably).
"""

from __future__ import annotations

import psycopg
import pytest

from pgjobs.config import ConfigError, Settings
from pgjobs.queries import queries
from pgjobs.storage import SegmentCache
from pgjobs.worker import Worker

q = queries("pgjobs")
CLAIM = {"queue": "default", "queues": ["default"], "limit": 10, "worker_id": None, "worker": "test"}


def _seed(conn: psycopg.Connection, n: int = 3) -> None:
    conn.execute("INSERT INTO pgjobs.jobs (queue, task) SELECT 'default', 'pgjobs.noop' FROM generate_series(1, %s)",
                  (n,))


@pytest.mark.parametrize(("claim", "inside"), [
    ("claim_jobs_async_commit", "off"),
    ("claim_jobs_any_queue_async_commit", "off"),
    ("claim_jobs", "on"),
    ("claim_jobs_any_queue", "on"),
])
def test_claim_sets_synchronous_commit_for_its_own_transaction_only(db_url: str, claim: str, inside: str) -> None:
    with psycopg.connect(db_url) as conn:  # not autocommit: the transaction stays open until commit()
        _seed(conn)
        conn.commit()
        segs = SegmentCache(q).get(conn)
        conn.commit()
        claimed = conn.execute(getattr(q, claim), {**CLAIM, "segs": segs}, prepare=False).fetchall()
        assert len(claimed) == 3
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == inside
        conn.commit()
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        conn.commit()
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pgjobs.jobs WHERE state = 'running'").fetchone()[0] == 3


def test_an_empty_claim_changes_nothing(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        segs = SegmentCache(q).get(conn)
        assert conn.execute(q.claim_jobs_async_commit, {**CLAIM, "segs": segs}, prepare=False).fetchall() == []
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"


def test_worker_picks_the_claim_by_setting(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    default = Worker(Settings.load(database_url=db_url), install_signals=False)
    assert default.claim_statement() == q.claim_jobs_async_commit
    durable = Worker(Settings.load(database_url=db_url, synchronous_claims=True), install_signals=False)
    assert durable.claim_statement() == q.claim_jobs
    several = Worker(Settings.load(database_url=db_url, queues="a,b"), install_signals=False)
    assert several.claim_statement() == q.claim_jobs_any_queue_async_commit
    monkeypatch.setenv("PGJOBS_SYNCHRONOUS_CLAIMS", "on")
    assert Worker(Settings.load(database_url=db_url), install_signals=False).claim_statement() == q.claim_jobs


@pytest.mark.parametrize("value", ["maybe", "2", "yes please"])
def test_a_bad_switch_value_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PGJOBS_SYNCHRONOUS_CLAIMS", value)
    with pytest.raises(ConfigError, match=r"^PGJOBS_SYNCHRONOUS_CLAIMS=.*expected on or off$"):
        Settings.load(database_url="postgresql://x@127.0.0.1/y")
