"""dramatiq app of the benchmark: Redis broker, the no-op actor, no result middleware."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import bench_tasks

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop():
    bench_tasks.noop()
