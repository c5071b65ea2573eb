"""The no-op task the peer queues run (RQ imports `noop`; Celery's app is in celery_app.py).

Each call runs one tiny Lua script on the benchmark's Redis: INCR a done counter and record the
server time (ms) of the first and of the latest call. The benchmark reads those three keys to get
the processing rate from server-side timestamps, as it does for provision's job hashes.
"""

import os

import redis

DONE, FIRST, LAST = "bench:done", "bench:first_ms", "bench:last_ms"

_COUNT = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[2], ms, 'NX')
redis.call('SET', KEYS[3], ms)
return redis.call('INCR', KEYS[1])
"""

_client = None
_script = None


def count_done():
    """One EVALSHA round trip; the client is made lazily (and again after a fork)."""
    global _client, _script
    if _client is None or _client.connection_pool.pid != os.getpid():
        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        _script = _client.register_script(_COUNT)
    return _script(keys=[DONE, FIRST, LAST])


def noop():
    """The job: does nothing but count itself."""
    count_done()
