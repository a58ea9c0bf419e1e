"""koyojobs: a job queue on PostgreSQL, woken by LISTEN/NOTIFY.

Example:
    >>> from koyojobs import define_job
    >>> @define_job(name="doc.say_hello")
    ... async def say_hello(name: str) -> str:
    ...     return name
"""

from .broker import Broker
from .context import (
    current_broker,
    current_job,
    retry,
    set_current_broker,
    snooze,
)
from .database import Database
from .errors import (
    JobDefinitionError,
    KoyojobsError,
    PayloadError,
    SerializationError,
    WiringError,
)
from .hooks import CallNext, JobOutcome, Middleware
from .jobs import JobCall, JobDefinition, define_job, schedule_at
from .models import Job, QueueStatus, RunningJob, Status
from .outcomes import default_backoff
from .synchronous import execute_jobs_synchronously
from .system import System
from .worker import Worker

__all__ = [
    "Broker",
    "CallNext",
    "Database",
    "Job",
    "JobCall",
    "JobDefinition",
    "JobDefinitionError",
    "JobOutcome",
    "KoyojobsError",
    "Middleware",
    "PayloadError",
    "QueueStatus",
    "RunningJob",
    "SerializationError",
    "Status",
    "System",
    "WiringError",
    "Worker",
    "current_broker",
    "current_job",
    "default_backoff",
    "define_job",
    "execute_jobs_synchronously",
    "retry",
    "schedule_at",
    "set_current_broker",
    "snooze",
]
