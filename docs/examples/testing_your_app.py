"""Testing code that enqueues jobs: the synchronous mode, and koyojobs.testing."""

from koyojobs import Broker, define_job, execute_jobs_synchronously, set_current_broker
from koyojobs.testing import assert_enqueued, assert_not_enqueued, drain

sent: list[str] = []


@define_job(name="docs.send_welcome", queue="emails")
async def send_welcome(email: str) -> None:
    sent.append(email)


async def sign_up(email: str) -> None:
    """The code under test: it enqueues a welcome email."""
    if "@" in email:
        await send_welcome(email)


async def test_with_no_database() -> None:
    # Jobs run inline, in this task; arguments still go through the serializer.
    with execute_jobs_synchronously():
        await sign_up("ada@example.com")
    assert sent == ["ada@example.com"]


async def test_against_the_database(dsn: str) -> None:
    async with Broker(dsn) as broker:
        set_current_broker(broker)
        await sign_up("grace@example.com")
        await sign_up("not an email")
        await assert_enqueued(send_welcome, "grace@example.com")
        await assert_not_enqueued(send_welcome, "not an email")
        assert await drain(broker, queue="emails") == {"done": 1}
        assert "grace@example.com" in sent
        set_current_broker(None)
