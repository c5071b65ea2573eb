"""arq worker settings of the benchmark: the no-op coroutine, `max_jobs` slots per process (BENCH_SLOTS)."""

import os

from arq.connections import RedisSettings

import bench_tasks


async def noop(ctx):
    bench_tasks.noop()


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
    max_jobs = int(os.environ.get("BENCH_SLOTS", "16"))
    keep_result = 60
    log_results = False
    handle_signals = True
