"""Celery app of the benchmark: Redis broker, no result backend (results ignored)."""

import os

from celery import Celery

import bench_tasks

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_ignore_result=True,           # no result backend: nothing is stored per task
    task_default_queue="bench",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
)


@app.task(name="bench.noop", ignore_result=True)
def noop():
    bench_tasks.noop()
