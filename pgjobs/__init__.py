"""pgjobs: a Postgres-native cron scheduler and job system.

Public API:
- `task`: decorator that registers a function as a task;
- `enqueue`: insert a job (optionally inside the caller's psycopg or SQLAlchemy transaction);
- `enqueue_async`, `enqueue_many_async`: the same inside the caller's async transaction (psycopg
  AsyncConnection, SQLAlchemy AsyncSession);
- `AsyncAdmin`: the admin API, awaitable;
- `Admin`: schedules, jobs, status and audit (what the CLI and the console use);
- `Settings`: configuration;
- `JobContext`, `SkipJob`: what tasks see and may raise.
"""

__version__ = "0.1.0"

from pgjobs.admin import Admin, AdminError, enqueue  # noqa: E402
from pgjobs.aio import AsyncAdmin, enqueue_async, enqueue_many_async  # noqa: E402
from pgjobs.config import Settings  # noqa: E402
from pgjobs.tasks import JobCancelled, JobContext, SkipJob, task  # noqa: E402

__all__ = ["Admin", "AdminError", "AsyncAdmin", "JobCancelled", "JobContext", "Settings", "SkipJob", "enqueue",
           "enqueue_async", "enqueue_many_async", "task", "__version__"]
