"""The Celery application of the framework check (scenario.py): an ordinary app with
the AMQP transport (kombu over py-amqp) and the rpc:// result backend, nothing
tuned for weir. WEIR_AMQP_PORT is the broker's port; WEIR_CELERY_DIR a directory
where tasks leave files, so the test can see that a task ran without a result."""

import os
import pathlib

from celery import Celery

app = Celery(
    "tasks",
    broker=f"amqp://guest:guest@127.0.0.1:{os.environ['WEIR_AMQP_PORT']}//",
    backend="rpc://",
)
app.conf.update(
    # The defaults but for these: ack after the task ran (a task running when the
    # broker goes is redelivered), and quick reconnects so the restart check is short.
    task_acks_late=True,
    broker_connection_retry=True,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=60,
    broker_transport_options={"interval_start": 0, "interval_step": 0.5, "interval_max": 1},
)

DIR = pathlib.Path(os.environ.get("WEIR_CELERY_DIR", "."))


@app.task
def add(x, y):
    return x + y


@app.task(bind=True, max_retries=5)
def flaky(self, name, failures):
    """Fails `failures` times, each retried with a 1 s countdown, then returns how
    many attempts it took."""
    counter = DIR / f"{name}.attempts"
    attempts = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(attempts))
    if attempts <= failures:
        raise self.retry(exc=RuntimeError(f"attempt {attempts} fails"), countdown=1)
    return attempts


@app.task
def touch(name):
    """Leaves DIR/name, to show that the task ran."""
    (DIR / name).write_text("ran")
    return name
