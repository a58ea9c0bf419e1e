"""Retention: how long the workers of this broker keep finished jobs."""

from datetime import timedelta

from koyojobs import Broker


def make_broker(dsn: str) -> Broker:
    return Broker(
        dsn,
        retention={
            "done": timedelta(hours=1),  # done jobs: an hour
            "failed": None,  # failed jobs: for good
            # cancelled jobs: the default, seven days
        },
    )
