#!/usr/bin/env python3
"""bench/services: see run. Standard library only; talks to Redis with redis-cli."""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("PROVISION_BIN", str(ROOT / ".build/release/provision"))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port(count=1):
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count >= 65535:
            continue
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise SystemExit("no free ports")


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), "--raw", *args], capture_output=True, text=True, check=True).stdout.strip()


def workspace(tmp, nodes):
    comfy = Path(tmp) / "ws/ComfyUI"
    for i in range(nodes):
        node = comfy / f"custom_nodes/node{i}"
        node.mkdir(parents=True)
        (node / "__init__.py").write_text(f"NODE_CLASS_MAPPINGS = {{'Node{i}': object}}\n")
    shutil.copy(ROOT / "Tests/fixtures/fake_comfyui.py", comfy / "main.py")
    return comfy.parent


def plan(plan_id, nodes, deadline=60):
    return json.dumps({
        "version": 1, "plan_id": plan_id,
        "jobs": [
            {"id": "node:install", "kind": "noop", "payload": {}},
            {"id": "services", "kind": "services", "depends_on": ["node:install"],
             "payload": {"nodes": [f"node{i}" for i in range(nodes)], "deadline_s": deadline}},
        ],
    })


class Machine:
    """redis-server + provision worker for machine m1 with N mock GPUs."""

    def __init__(self, tmp, instances, env=None, liveness=5, binary=BIN):
        self.tmp = tmp
        self.binary = binary
        self.redis_port = free_port()
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
                                      stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                cli(self.redis_port, "PING")
                break
            except subprocess.CalledProcessError:
                time.sleep(0.05)
        self.health = free_port()
        self.base = free_port(instances)
        self.ws = workspace(tmp, 4)
        self.env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{self.redis_port}", MACHINE_ID="m1", GPU_MODE="mock",
                        MOCK_GPU_NUM=str(instances), WORKERS="comfyui:1", **(env or {}))
        self.log = open(Path(tmp) / "worker.log", "w")
        self.worker = subprocess.Popen(
            [binary, "worker", "--processes", "1", "--health-port", str(self.health), "--workspace", str(self.ws),
             "--comfyui-python", sys.executable, "--comfyui-base-port", str(self.base), "--liveness-interval", str(liveness),
             "--services-log-dir", str(Path(tmp) / "logs")],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def enqueue(self, plan_id, nodes=4, deadline=60):
        path = Path(self.tmp) / f"{plan_id}.json"
        path.write_text(plan(plan_id, nodes, deadline))
        subprocess.run([self.binary, "enqueue", "--plan", str(path)], env=self.env, check=True, capture_output=True)

    def wait(self, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            state = cli(self.redis_port, "HGET", "provision:{m1}:status", "state")
            if state in ("ready", "failed"):
                return state
            time.sleep(0.01)
        raise SystemExit("the machine did not settle")

    def job(self, plan_id, job, field):
        # Queue protocol 3: a job's small fields are one JSON record, the field <job_id> of B:jobs.
        assert cli(self.redis_port, "HGET", "provision:{m1}:jobs", "|plan_id") == plan_id
        return int(json.loads(cli(self.redis_port, "HGET", "provision:{m1}:jobs", job))[field])

    def metrics(self):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.health}/metrics", timeout=5).read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r'provision_comfyui_probe_requests_total\{instance="([^"]+)"[^}]*\} (\S+)', text)}

    def cpu_seconds(self, pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    @staticmethod
    def runs(pid):
        """Times the process's threads were scheduled in (schedstat's third field): its wake-ups,
        which depend on the code, not on the machine's load as its CPU time does."""
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[2])
            except (FileNotFoundError, ProcessLookupError):
                pass  # a thread that ended meanwhile
        return total

    def stop(self):
        self.worker.terminate()
        self.worker.wait(60)
        self.redis.terminate()
        self.redis.wait(10)
        self.log.close()


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slow-start", type=float, default=5)
    parser.add_argument("--cpu-instances", type=int, default=8)
    parser.add_argument("--cpu-seconds", type=float, default=30)
    parser.add_argument("--compare", nargs="+", metavar="BINARY",
                        help="only the supervisor CPU, of these binaries in turn, --rounds times each")
    parser.add_argument("--hold", action="store_true",
                        help="start the section-3 machine with --cpu-instances serving, print the supervisor's pid and "
                             "keep it up until Ctrl-C (for perf, strace, /proc)")
    args = parser.parse_args()
    if args.compare:
        return compare(args)
    if args.hold:
        return hold(args)
    print(f"provision: {BIN}; stand-in ComfyUI on {sys.executable}")

    # 1. install jobs done -> machine_ready, N instances started fresh each round (a new plan restarts them).
    with tempfile.TemporaryDirectory(prefix="bench-services-") as tmp:
        machine = Machine(tmp, args.instances)
        try:
            gaps, probes, claimed = [], [], []
            for r in range(args.rounds):
                plan_id = f"r{r}"
                machine.enqueue(plan_id)
                state = machine.wait()
                assert state == "ready", state
                done = machine.job(plan_id, "node:install", "finished_at")
                ready = int(cli(machine.redis_port, "HGET", "provision:{m1}:status", "finished_at"))
                gaps.append(ready - done)
                claimed.append(machine.job(plan_id, "services", "started_at") - done)
                probes.append(machine.metrics())
                time.sleep(0.5)
            print(f"\n1. install jobs done -> machine_ready, {args.instances} instances, {args.rounds} rounds (Redis server clock, ms):")
            print(f"   each: {gaps}; median {median(gaps)} ms, max {max(gaps)} ms (target <= 1000)")
            print(f"   of which install done -> services job claimed: {claimed}")
            print(f"   readiness requests per instance and round (system_stats + object_info): {[sorted(p.values()) for p in probes]}")
        finally:
            machine.stop()

    # 2. probe traffic while an instance starts slowly.
    with tempfile.TemporaryDirectory(prefix="bench-services-") as tmp:
        machine = Machine(tmp, 1, env={"FAKE_COMFYUI_START_DELAY": str(args.slow_start)})
        try:
            machine.enqueue("slow")
            started = time.time()
            assert machine.wait() == "ready"
            waited = time.time() - started
            count = sum(machine.metrics().values())
            print(f"\n2. one instance that takes {args.slow_start:g} s to listen: {count:g} requests in {waited:.2f} s "
                  f"= {count / waited:.2f} requests/s (target <= 2)")
        finally:
            machine.stop()

    # 3. supervisor CPU with 8 instances serving (default liveness interval 5 s).
    supervisor_cpu(args, BIN, verbose=True)


def supervisor_cpu(args, binary, verbose=False):
    """The supervisor process's CPU and wake-ups before any plan and with N instances serving."""
    with tempfile.TemporaryDirectory(prefix="bench-services-") as tmp:
        machine = Machine(tmp, args.cpu_instances, binary=binary)
        pid = machine.worker.pid
        try:
            time.sleep(2)
            before, runs = machine.cpu_seconds(pid), machine.runs(pid)
            time.sleep(args.cpu_seconds / 2)
            idle = 100 * (machine.cpu_seconds(pid) - before) / (args.cpu_seconds / 2)
            idle_runs = (machine.runs(pid) - runs) / (args.cpu_seconds / 2)
            machine.enqueue("cpu")
            assert machine.wait() == "ready"
            time.sleep(2)
            children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            workers = [p for p in children if "worker-process" in Path(f"/proc/{p}/cmdline").read_text()]
            before, runs = machine.cpu_seconds(pid), machine.runs(pid)
            before_w = sum(machine.cpu_seconds(p) for p in workers)
            time.sleep(args.cpu_seconds)
            used = 100 * (machine.cpu_seconds(pid) - before) / args.cpu_seconds
            used_runs = (machine.runs(pid) - runs) / args.cpu_seconds
            used_w = 100 * (sum(machine.cpu_seconds(p) for p in workers) - before_w) / args.cpu_seconds
            if verbose:
                print(f"\n3. the supervisor process before any plan (health server, announcer, services waiting): "
                      f"{idle:.2f}% of a core, {idle_runs:.0f} wake-ups/s")
                print(f"   {args.cpu_instances} instances serving, {args.cpu_seconds:g} s: supervisor process (provision worker: "
                      f"services, health server, announcer) {used:.2f}% of a core (target <= 1%), {used_runs:.0f} wake-ups/s; "
                      f"its worker process (idle) {used_w:.2f}%")
            return idle, idle_runs, used, used_runs
        finally:
            machine.stop()


def hold(args):
    with tempfile.TemporaryDirectory(prefix="bench-services-") as tmp:
        machine = Machine(tmp, args.cpu_instances)
        try:
            machine.enqueue("cpu")
            assert machine.wait() == "ready"
            print(f"{args.cpu_instances} instances serving; provision worker (the supervisor) is pid {machine.worker.pid}; "
                  f"Ctrl-C stops it", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            machine.stop()


def compare(args):
    """Section 3 only, for several binaries in turn (A B A B ...), one line per run and medians."""
    figures = {binary: [] for binary in args.compare}
    for r in range(args.rounds):
        for binary in (args.compare if r % 2 == 0 else args.compare[::-1]):
            load = os.getloadavg()[0]
            figure = supervisor_cpu(args, binary)
            figures[binary].append(figure)
            print(f"round {r + 1} {binary}: idle {figure[0]:.2f}% {figure[1]:.0f}/s; {args.cpu_instances} serving "
                  f"{figure[2]:.2f}% {figure[3]:.0f}/s (load average {load:.2f} -> {os.getloadavg()[0]:.2f})", flush=True)
    print("\nmedians (CPU % of a core, wake-ups/s):")
    for binary, rows in figures.items():
        idle, idle_runs, used, used_runs = (median([row[i] for row in rows]) for i in range(4))
        print(f"  {binary}: idle {idle:.2f}% {idle_runs:.0f}/s; {args.cpu_instances} serving {used:.2f}% {used_runs:.0f}/s")


if __name__ == "__main__":
    main()
