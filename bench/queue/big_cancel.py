#!/usr/bin/env python3
"""Does cancelling a big plan block Redis? The longest single call of a cancel.

    .build/test-venv/bin/python bench/queue/big_cancel.py [--jobs 50000] [--slice 2000]

On a private redis-server (loopback, free port): enqueues a plan of N noop jobs plus a `services`
job that depends on all of them with the Python reference client, then cancels it with that client
(`--slice 0`: the whole plan in one call, as before sliced cancels) and reports the wall time, the
script calls (INFO commandstats), the longest call (SLOWLOG) and the status counters afterwards.
Measured 2026-12-06 (release Redis 7.0, load < 1), 50,000 jobs: one call of 470-613 ms unsliced;
25 calls, the longest 20-32 ms, with --slice 2000.
"""
import argparse, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "protocols" / "clients" / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from provision_client import ProvisionQueue  # noqa: E402
from big_enqueue import start_redis  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50000)
    ap.add_argument("--slice", type=int, default=2000, help="records per call; 0 = all in one call")
    args = ap.parse_args()
    server, _, r = start_redis(tempfile.mkdtemp(prefix="big-cancel-"))
    try:
        queue = ProvisionQueue(r, "m1")
        jobs = [{"id": f"j{i}", "kind": "noop"} for i in range(args.jobs - 1)]
        jobs.append({"id": "services", "kind": "services", "depends_on": [f"j{i}" for i in range(args.jobs - 1)]})
        queue.enqueue({"version": 1, "plan_id": "p1", "jobs": jobs})
        r.slowlog_reset()
        r.config_resetstat()
        start = time.monotonic()
        if args.slice > 0:
            cancelled = queue.cancel("p1", slice=args.slice)
        else:
            cancelled = int(queue.call("cancel", "p1", "cancelled")[1])
        wall = time.monotonic() - start
        calls = r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        longest = max((e["duration"] for e in r.slowlog_get(1000000) if e["command"][:7].upper() == b"EVALSHA"), default=0)
        status = {k.decode(): v.decode() for k, v in r.hgetall("provision:{m1}:status").items()}
        print(f"{args.jobs} jobs, slice {args.slice or 'none'}: {cancelled} cancelled in {wall * 1000:.1f} ms, {calls} calls, "
              f"longest {longest / 1000:.1f} ms; status {status.get('state')}, cancelled {status.get('cancelled')}, "
              f"ready {status.get('ready')}, waiting {status.get('waiting')}, cursor {status.get('cancel_cursor', 'none')}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
