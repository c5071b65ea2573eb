"""The command pattern of one real machine, recorded with MONITOR (fleet.py replays it per simulated machine).

`record(binary, ...)` starts a private redis-server and `provision worker --machine <M>` with the
defaults (--processes 2, events on, health server on a free port), runs one plan of `jobs` noop jobs
through the Python reference client, waits until the machine announced it, then records `idle_s`
seconds of the idle machine. Every command the machine's own connections sent is kept (commands run
inside scripts and the bench's own connections are left out), with its connection and time, in two
phases: "busy" (enqueue → announced) and "idle".
"""
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

import localredis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "protocols" / "clients" / "python"))
from provision_client import ProvisionQueue  # noqa: E402

#: Names the recorded machine and plan use: unique strings, so a replay can substitute its own.
MACHINE, PLAN = "zzmachine0", "zzplan0"

_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESC = re.compile(rb'\\(x[0-9a-fA-F]{2}|.)', re.S)
_SIMPLE = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b", b'"': b'"', b"\\": b"\\"}


def _unescape(raw):
    def one(m):
        e = m.group(1)
        return bytes([int(e[1:], 16)]) if e[:1] == b"x" and len(e) == 3 else _SIMPLE.get(e, e)
    return _ESC.sub(one, raw)


class Monitor(threading.Thread):
    """MONITOR on its own socket: (time, client address, [args]) of every command, in order."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"CLIENT SETNAME bench-monitor\r\nMONITOR\r\n")
        self.entries, self.stopped = [], False

    def run(self):
        buf = b""
        while not self.stopped:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\r\n")
            for line in lines:
                if not line.startswith(b"+") or b"[" not in line:
                    continue
                head, _, rest = line.partition(b"] ")
                ts, _, who = head[1:].partition(b" [")
                client = who.split(b" ", 1)[-1].decode()
                self.entries.append((float(ts), client, [_unescape(a) for a in _ARG.findall(rest)]))

    def stop(self):
        self.stopped = True
        self.sock.close()


def _cpu(r):
    i = r.info("cpu")
    return i["used_cpu_sys"] + i["used_cpu_user"]


def _bench_clients(r):
    """Addresses of connections that are not the machine's (the bench's own, MONITOR)."""
    return {c["addr"] for c in r.client_list() if c.get("name", "").startswith("bench")}


def record(binary, jobs=100, idle_s=30.0):
    server = localredis.Server()
    worker = None
    try:
        r = redis.Redis(port=server.port, client_name="bench")
        q = ProvisionQueue(redis.Redis(port=server.port, client_name="bench-client", decode_responses=True), MACHINE)
        worker = subprocess.Popen([binary, "worker", "--machine", MACHINE, "--health-port", str(localredis.free_port())],
                                  env={**os.environ, "REDIS_URL": server.url},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while int(r.hlen(f"provision:{{{MACHINE}}}:workers")) < 2:  # both worker processes registered
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the recorded worker did not register its 2 processes within 60 s")
            time.sleep(0.1)
        time.sleep(6)  # past the start-up: the supervisor's and processes' first checks
        monitor = Monitor(server.port)
        monitor.start()
        time.sleep(0.2)
        r.config_resetstat()
        cpu0 = _cpu(r)
        t_busy = time.time()
        q.enqueue({"version": 1, "plan_id": PLAN, "jobs": [{"id": f"j{k}", "kind": "noop"} for k in range(jobs)]})
        status = q.wait(timeout_s=120, poll_s=0.02)
        if status.get("state") != "ready":
            raise SystemExit(f"the recorded plan did not become ready: {status}")
        while r.hget(f"provision:{{{MACHINE}}}:status", "announced") != b"1":
            time.sleep(0.02)
        time.sleep(0.5)  # the last events flush
        stats = r.info("commandstats")
        real = {"redis_usec_per_job_scripts": round(sum(v["usec"] for k, v in stats.items()
                                                        if k in ("cmdstat_evalsha", "cmdstat_eval")) / jobs, 2),
                "redis_cpu_usec_per_job": round((_cpu(r) - cpu0) * 1e6 / jobs, 1),
                "script_calls_per_job": round(sum(v["calls"] for k, v in stats.items()
                                                  if k in ("cmdstat_evalsha", "cmdstat_eval")) / jobs, 3)}
        t_idle = time.time()
        time.sleep(idle_s)
        t_end = time.time()
        connections = [c for c in r.client_list() if not c.get("name", "").startswith("bench")]
        skip = _bench_clients(r)
        monitor.stop()
        entries = [(t, c, a) for t, c, a in monitor.entries if c != "lua" and c not in skip and a]
        return {
            "binary": binary, "jobs": jobs, "idle_s": t_end - t_idle, "machine": MACHINE, "plan": PLAN,
            "connections": len(connections), "real_machine_busy": real,
            "busy": [(t - t_busy, c, a) for t, c, a in entries if t_busy <= t < t_idle],
            "idle": [(t - t_idle, c, a) for t, c, a in entries if t_idle <= t < t_end],
        }
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(60)
        server.stop()
