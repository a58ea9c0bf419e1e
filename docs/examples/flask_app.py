"""A Flask app that enqueues in its views; the worker runs from the CLI:

KOYOJOBS_DSN=postgresql://localhost/app koyojobs worker docs.examples.flask_app
"""

import os

import psycopg
from flask import Flask, request

from koyojobs import define_job
from koyojobs.sync import enqueue


@define_job(queue="emails")
def send_welcome(email: str) -> str:
    ...  # send the email
    return f"welcome sent to {email}"


def create_app() -> Flask:
    app = Flask(__name__)
    dsn = os.environ["KOYOJOBS_DSN"]

    @app.post("/newsletter")
    def subscribe() -> tuple[dict[str, int], int]:
        # On koyojobs' own connection (to KOYOJOBS_DSN), committed at once.
        job_id = enqueue(send_welcome(request.form["email"]))
        return {"welcome_job_id": job_id}, 202

    @app.post("/signups")
    def signup() -> tuple[dict[str, int], int]:
        email = request.form["email"]
        # On the app's own psycopg connection, in its transaction: the signup
        # and its job commit together, or neither does.
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO signups (email) VALUES (%s)", [email])
            job_id = enqueue(send_welcome(email), connection=conn)
            if "@" not in email:
                raise ValueError(f"not an email address: {email!r}")
        return {"welcome_job_id": job_id}, 201

    return app
