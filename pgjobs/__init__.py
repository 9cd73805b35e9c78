"""pgjobs: a Postgres-native cron scheduler and job system.

Public API:
- `task`: decorator that registers a function as a task;
- `enqueue`: insert a job (optionally inside the caller's psycopg or SQLAlchemy transaction);
- `Admin`: schedules, jobs, status and audit (what the CLI and the console use);
- `Settings`: configuration;
- `JobContext`, `SkipJob`: what tasks see and may raise.
"""

__version__ = "0.1.0"

from pgjobs.admin import Admin, AdminError, enqueue  # noqa: E402
from pgjobs.config import Settings  # noqa: E402
from pgjobs.tasks import JobCancelled, JobContext, SkipJob, task  # noqa: E402

__all__ = ["Admin", "AdminError", "JobCancelled", "JobContext", "Settings", "SkipJob", "enqueue", "task", "__version__"]
