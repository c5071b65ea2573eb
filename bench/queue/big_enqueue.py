#!/usr/bin/env python3
"""Does a big enqueue block Redis? The longest single call and how long other clients wait.

    .build/test-venv/bin/python bench/queue/big_enqueue.py [--jobs 50000] [--bin .build-bench/release/provision]

On a private redis-server (loopback, free port): enqueues a plan of N noop jobs plus a last
`services` job that depends on all of them (the shape of `provision enqueue --with-services`) with
`provision enqueue --plan FILE` (when --bin is given or .build-bench/release/provision exists) and
with the Python reference client, while a second client sends `PING` in a loop and records its
round trips. Reports per enqueue: the wall time, the script calls (INFO commandstats), the longest
call (SLOWLOG, EVALSHA entries; wall time, so it includes time the server was not scheduled on a
loaded machine), the redis-server main thread's CPU time over the enqueue and, for the Python client,
its longest call in CPU time (/proc/<pid>/task/<pid>/schedstat around each call), and the longest
PING round trip. Target (issue 19 item 7): no single call over 50 ms for a 50,000-job plan.
"""
import argparse, json, os, socket, subprocess, sys, tempfile, threading, time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "protocols" / "clients" / "python"))
from provision_client import ProvisionQueue  # noqa: E402


def plan(plan_id, n):
    jobs = [{"id": f"j{i}", "kind": "noop"} for i in range(n - 1)]
    jobs.append({"id": "services", "kind": "services", "depends_on": [f"j{i}" for i in range(n - 1)]})
    return {"version": 1, "plan_id": plan_id, "jobs": jobs}


class Pinger(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.r = redis.Redis(port=port)
        self.worst = 0.0
        self.running = True

    def run(self):
        while self.running:
            t = time.perf_counter()
            self.r.ping()
            self.worst = max(self.worst, time.perf_counter() - t)
            time.sleep(0.001)


def cpu_ms(pid):
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e6


def measure(r, port, name, action, pid, calls_cpu=None):
    r.config_resetstat()
    cpu0 = cpu_ms(pid)
    r.slowlog_reset()
    pinger = Pinger(port)
    pinger.start()
    t = time.perf_counter()
    action()
    wall = time.perf_counter() - t
    cpu = cpu_ms(pid) - cpu0
    pinger.running = False
    pinger.join()
    calls = [e for e in r.slowlog_get(100000) if e["command"].startswith(b"EVALSHA")]
    stats = r.info("commandstats").get("cmdstat_evalsha", {})
    worst = max(calls, key=lambda e: e["duration"]) if calls else None
    result = {"wall_ms": round(wall * 1000), "script_calls": stats.get("calls", 0),
              "script_ms": round(stats.get("usec", 0) / 1000, 1),
              "longest_call_ms": round(worst["duration"] / 1000, 1) if worst else None,
              "longest_call": worst["command"][:200].decode(errors="replace").split(" provision:{")[0] + " ... " +
              worst["command"].decode(errors="replace").split(" ")[18] if worst else None,
              "worst_ping_ms": round(pinger.worst * 1000, 1), "redis_cpu_ms": round(cpu, 1)}
    if calls_cpu:
        op, most = max(calls_cpu, key=lambda x: x[1])
        result["longest_call_cpu_ms"], result["longest_call_cpu_op"] = round(most, 1), op
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def start_redis(work):
    """A private redis-server on a free loopback port, its files in `work`, logging every call in
    SLOWLOG: the process, its port and a client that has had its first PING answered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", work, "--slowlog-log-slower-than", "0", "--slowlog-max-len", "1000000"],
                              stdout=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    for _ in range(100):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return server, port, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50000)
    ap.add_argument("--bin", default=None)
    a = ap.parse_args()
    binary = a.bin or os.environ.get("PROVISION_BIN") or str(ROOT / ".build-bench" / "release" / "provision")
    work = tempfile.mkdtemp(prefix="big-enqueue-")
    server, port, r = start_redis(work)
    pid = server.pid
    try:
        print(f"load average {os.getloadavg()[0]:.2f}; {a.jobs} jobs (the last a services job depending on all the others)", flush=True)
        results = {}
        q = ProvisionQueue(r, "py")
        calls_cpu = []
        call = q.call

        def timed(op, *args):
            before = cpu_ms(pid)
            reply = call(op, *args)
            calls_cpu.append((op, cpu_ms(pid) - before))
            return reply
        q.call = timed
        results["python client"] = measure(r, port, "python client", lambda: q.enqueue(plan("p1", a.jobs)), pid, calls_cpu)
        if os.access(binary, os.X_OK):
            path = Path(work) / "plan.json"
            path.write_text(json.dumps(plan("p2", a.jobs)))
            url = f"redis://127.0.0.1:{port}"
            results["provision enqueue"] = measure(r, port, "provision enqueue --plan FILE", lambda: subprocess.run(
                [binary, "enqueue", "--redis", url, "--machine", "cli", "--plan", str(path)], check=True,
                stdout=subprocess.DEVNULL), pid)
        else:
            print(f"(no provision binary at {binary}: CLI not measured)")
        print(json.dumps(results, indent=1))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
