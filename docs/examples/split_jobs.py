"""The jobs of a split deployment: the module both processes import.

The worker process imports only this (``koyojobs worker docs.examples.split_jobs``),
never the web app; the web process imports it to enqueue. Give jobs that
both sides name a ``name=``, so a module moved later keeps its queued jobs.
"""

from koyojobs import define_job

EMAILS = "emails"


@define_job(name="examples.split.send_welcome", queue=EMAILS, max_attempts=5)
async def send_welcome(email: str) -> str:
    """Send the welcome email (here: say it was sent)."""
    return f"welcome sent to {email}"
