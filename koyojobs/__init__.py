"""koyojobs: a job queue on PostgreSQL, woken by LISTEN/NOTIFY.

Example:
    >>> from koyojobs import define_job
    >>> @define_job(name="doc.say_hello")
    ... async def say_hello(name: str) -> str:
    ...     return name

``koyojobs.__version__`` is the installed version (``koyojobs --version``
prints the same), as a string:

    >>> import koyojobs
    >>> isinstance(koyojobs.__version__, str)
    True

It stays out of ``__all__``, as metadata rather than API (svcs keeps its
``__all__`` to the names you call).
"""

from ._version import __version__ as __version__
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
from .progress import report_progress
from .synchronous import execute_jobs_synchronously
from .system import System
from .worker import Worker
from .workflows import (
    Step,
    Workflow,
    WorkflowError,
    WorkflowRecord,
    WorkflowRun,
    chain,
    group,
    upstream,
)

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
    "Step",
    "System",
    "WiringError",
    "Worker",
    "Workflow",
    "WorkflowError",
    "WorkflowRecord",
    "WorkflowRun",
    "chain",
    "current_broker",
    "current_job",
    "default_backoff",
    "define_job",
    "execute_jobs_synchronously",
    "group",
    "report_progress",
    "retry",
    "schedule_at",
    "set_current_broker",
    "snooze",
    "upstream",
]
