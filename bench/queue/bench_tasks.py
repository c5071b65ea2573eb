"""The no-op task every peer queue runs (RQ imports `noop`; Celery, dramatiq and arq wrap it).

It does nothing, like provision's `noop` job: no Redis call of its own. The bench counts finished
jobs from each system's own records instead (bench.py, `peer_done`), so every system does the same
work per job.
"""


def noop():
    """The job: nothing."""
    return None
