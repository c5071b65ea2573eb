#!/usr/bin/env python3
"""Helper of bench/queue-events/run: noop jobs/s with step events on and off.

Each run: a fresh memory-only redis-server on a free loopback port, a plan of N noop jobs enqueued
before the workers start, `provision worker --processes P --concurrency C --health-port 0` with or
without `--no-events`, and the rate from the server's own timestamps in the job hashes (first
claim to last completion), as bench/queue measures it. The modes alternate (off, on, on, off, ...).
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "queue"))
from bench import cpu_seconds, job_times, stop, tree_cpu, wait_until, write_plan  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir, name):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--logfile", os.path.join(workdir, f"redis-{name}.log")])
    r = redis.Redis(host="127.0.0.1", port=port)
    if not wait_until(lambda: _ping(r), 10, poll=0.05):
        stop(proc)
        raise SystemExit("redis-server did not start")
    return proc, r, f"redis://127.0.0.1:{port}"


def _ping(r):
    try:
        return r.ping()
    except redis.ConnectionError:
        return False


def one_run(a, events, index):
    proc, r, url = start_redis(a.out, f"{index}-{'on' if events else 'off'}")
    worker = None
    try:
        plan = f"bench-{index}-{'on' if events else 'off'}"
        plan_file = os.path.join(a.out, "plan.json")
        write_plan(plan_file, plan, a.jobs)
        out = subprocess.run([a.bin, "enqueue", "--redis", url, "--machine", "bench", "--plan", plan_file],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"enqueue failed: {out.stderr.strip()}")
        command = [a.bin, "worker", "--redis", url, "--machine", "bench", "--processes", str(a.processes),
                   "--concurrency", str(a.concurrency), "--health-port", "0", "--log-level", "warning"]
        if not events:
            command.append("--no-events")
        cpu_redis0 = cpu_seconds(proc.pid, False)
        worker = subprocess.Popen(command, stdout=open(os.path.join(a.out, "worker.log"), "a"), stderr=subprocess.STDOUT)
        base = "provision:{bench}"

        def done():
            v = r.hget(f"{base}:status", "succeeded")
            return v is not None and int(v) >= a.jobs
        ok = wait_until(done, 300)
        cpu_workers = tree_cpu(worker.pid)
        cpu_redis = cpu_seconds(proc.pid, False) - cpu_redis0
        # the last events are flushed within 25 ms; the step-21 event after the announcement
        wait_until(lambda: r.hget(f"{base}:status", "announced") == b"1", 10)
        time.sleep(0.2)
        created, started, finished, states = job_times(r, base, plan, a.jobs)
        span = max(finished) - min(started) if finished and started else None
        info = r.xinfo_stream(f"{base}:events") if r.exists(f"{base}:events") else {}
        return {
            "events": events, "complete": bool(ok), "span_ms": span,
            "jobs_per_s": a.jobs / (span / 1000) if span else None,
            "stream_entries_added": info.get("entries-added", 0) if isinstance(info, dict) else 0,
            "stream_length": info.get("length", 0) if isinstance(info, dict) else 0,
            "fleet_entries": r.xlen("provision:fleet:events"),
            "cpu_s": {"redis": cpu_redis, "workers": cpu_workers},
        }
    finally:
        stop(worker)
        stop(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"== events on/off: {a.jobs} noop jobs, {a.processes} processes × {a.concurrency} slots, "
          f"{a.rounds} rounds on {os.cpu_count()} CPUs", flush=True)
    runs = []
    for i in range(a.rounds):
        for events in ((False, True) if i % 2 == 0 else (True, False)):
            result = one_run(a, events, i)
            runs.append(result)
            print(f"  round {i + 1} events {'on ' if events else 'off'}: {result['jobs_per_s']:,.0f} jobs/s "
                  f"({result['span_ms']} ms; {result['stream_entries_added']} events written, stream kept "
                  f"{result['stream_length']}; CPU redis {result['cpu_s']['redis']:.2f} s, "
                  f"workers {result['cpu_s']['workers']:.2f} s)", flush=True)
    off = [x["jobs_per_s"] for x in runs if not x["events"] and x["jobs_per_s"]]
    on = [x["jobs_per_s"] for x in runs if x["events"] and x["jobs_per_s"]]
    # Each round ran both modes back to back: the ratio within a round is less exposed to drift.
    paired = [runs[2 * i + (1 if runs[2 * i]["events"] is False else 0)]["jobs_per_s"] /
              runs[2 * i + (0 if runs[2 * i]["events"] is False else 1)]["jobs_per_s"] for i in range(a.rounds)]

    def cpu_us(mode):
        values = [(x["cpu_s"]["redis"] + x["cpu_s"]["workers"]) / a.jobs * 1e6 for x in runs if x["events"] is mode]
        return statistics.median(values)
    summary = {"jobs": a.jobs, "processes": a.processes, "concurrency": a.concurrency, "rounds": a.rounds,
               "off_median": statistics.median(off), "on_median": statistics.median(on),
               "paired_ratio_median": statistics.median(paired),
               "cpu_us_per_job": {"off": cpu_us(False), "on": cpu_us(True)}}
    summary["slowdown_percent"] = 100 * (1 - summary["on_median"] / summary["off_median"])
    summary["paired_slowdown_percent"] = 100 * (1 - summary["paired_ratio_median"])
    summary["runs"] = runs
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"== median: events off {summary['off_median']:,.0f} jobs/s, on {summary['on_median']:,.0f} jobs/s "
          f"→ {summary['slowdown_percent']:.1f}% slower with events (target ≤ 15%); median of the rounds' "
          f"on/off ratios: {summary['paired_slowdown_percent']:.1f}% slower")
    print(f"   CPU (redis + workers) per job: off {summary['cpu_us_per_job']['off']:.0f} µs, "
          f"on {summary['cpu_us_per_job']['on']:.0f} µs")
    print(f"   results: {os.path.join(a.out, 'results.json')}")


if __name__ == "__main__":
    main()
