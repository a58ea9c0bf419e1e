"""Tests of code that enqueues jobs, with the fixtures of testing_conftest.py."""

import pytest

from koyojobs import Broker, current_broker, define_job, execute_jobs_synchronously
from koyojobs.testing import assert_enqueued, assert_not_enqueued, drain

sent: list[str] = []


@define_job(name="docs.send_welcome", queue="emails")
async def send_welcome(user_id: int) -> None:
    broker = current_broker()
    assert broker is not None
    email = await broker.pool.fetchval("SELECT email FROM users WHERE id = $1", user_id)
    sent.append(email)


async def sign_up(broker: Broker, email: str) -> int | None:
    """The code under test: it stores the user and enqueues the welcome email,
    in one transaction, so that neither exists without the other."""
    if "@" not in email:
        return None
    async with broker.pool.acquire() as conn, conn.transaction():
        user_id: int = await conn.fetchval(
            "INSERT INTO users (email) VALUES ($1) RETURNING id", email
        )
        await broker.enqueue(send_welcome(user_id), connection=conn)
    return user_id


@pytest.fixture(autouse=True)
async def users(broker: Broker) -> None:
    await broker.pool.execute("CREATE TABLE users (id serial PRIMARY KEY, email text)")
    sent.clear()


async def test_with_jobs_run_inline(broker: Broker) -> None:
    # The job runs now, on the transaction's connection: it sees the new user.
    with execute_jobs_synchronously():
        await sign_up(broker, "ada@example.com")
    assert sent == ["ada@example.com"]


async def test_what_was_enqueued(broker: Broker) -> None:
    user_id = await sign_up(broker, "grace@example.com")
    await sign_up(broker, "not an email")
    await assert_enqueued(send_welcome, user_id)
    await assert_not_enqueued(send_welcome, 0)
    assert sent == []
    # Then run the queue's jobs here, as a worker would.
    assert await drain(broker, queue="emails") == {"done": 1}
    assert sent == ["grace@example.com"]
