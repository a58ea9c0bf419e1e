"""A web dashboard of the jobs: queues, jobs, one job, periodic jobs; and actions on them.

An ASGI app on Starlette and Jinja2 (the optional extra ``dashboard``):
``import koyojobs`` does not import it. Mount it under any prefix of a
FastAPI or Starlette app, or serve it alone with ``koyojobs dashboard``.

Example:
    >>> from koyojobs import Broker
    >>> from koyojobs.dashboard import Dashboard
    >>> dashboard = Dashboard(Broker("postgresql://localhost/app"))
    >>> dashboard.show_payloads
    False
"""

from .app import CanAct, Dashboard

__all__ = ["CanAct", "Dashboard"]
