#!/usr/bin/env python3
"""Hand measurements of one machine's cost to Redis (issue 20), on a private loopback redis-server.

    PROVISION_BIN=.build/debug/provision .build/test-venv/bin/python bench/fleet/measure.py [--plans 100] [--jobs 100]

Runs `provision worker` with the defaults (--processes 2, events on, health on a free port) for one
machine and reports: connections of the machine; commands and script calls per second while idle;
enqueue → first claim latency of a plan enqueued into the idle machine; bytes of the machine's keys
(MEMORY USAGE) after 1, 10 and N plans of M noop jobs, after the retention window passed, and after
`provision retire`; and fleet.lua µs per call with 1k and 10k machines announced before.
Prints one JSON object at the end. Needs redis-py (the test venv has it).
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

import redis

import localredis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "protocols" / "clients" / "python"))
from provision_client import ProvisionQueue  # noqa: E402


def machine_bytes(r, machine):
    """Bytes of the machine's keys (MEMORY USAGE), in total and per key."""
    per_key = {}
    for key in r.scan_iter(match=f"*{{{machine}}}*", count=1000):
        per_key[key.decode().split("}:", 1)[-1]] = r.memory_usage(key, samples=0) or 0
    return {"total": sum(per_key.values()), **dict(sorted(per_key.items()))}


def stat(r, name):
    return r.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plans", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args()
    binary = os.environ.get("PROVISION_BIN", str(ROOT / ".build" / "debug" / "provision"))
    server = localredis.Server()
    port, url, r = server.port, server.url, server.client
    result = {}
    worker = subprocess.Popen([binary, "worker", "--machine", "m1", "--health-port", str(localredis.free_port())],
                              env={**os.environ, "REDIS_URL": url}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        q = ProvisionQueue(redis.Redis(port=port, decode_responses=True), "m1")

        def run_plan(i, retention=604800):
            q.enqueue({"version": 1, "plan_id": f"p{i}", "jobs": [{"id": f"j{k}", "kind": "noop"} for k in range(a.jobs)]},
                      retention_seconds=retention)
            status = q.wait(timeout_s=120, poll_s=0.05)
            assert status["state"] == "ready", status
            while r.hget("provision:{m1}:status", "announced") != b"1":
                time.sleep(0.05)

        run_plan(0)
        time.sleep(1)
        result["bytes_after_1_plan"] = machine_bytes(r, "m1")
        result["connections"] = len([c for c in r.client_list() if c.get("cmd") != "client|list"]) - 0
        # Idle: commands and script calls per second.
        r.config_resetstat()
        time.sleep(a.idle_seconds)
        stats = r.info("commandstats")
        total = sum(v.get("calls", 0) for k, v in stats.items() if k not in ("cmdstat_config", "cmdstat_info"))
        result["idle_commands_per_s"] = round(total / a.idle_seconds, 3)
        result["idle_script_calls_per_s"] = round(stats.get("cmdstat_evalsha", {}).get("calls", 0) / a.idle_seconds, 3)
        result["idle_commands"] = {k[8:]: v["calls"] for k, v in stats.items() if k not in ("cmdstat_config", "cmdstat_info")}
        # Enqueue into the idle machine: server time from enqueue to the first claim.
        latencies = []
        for i in range(1, 11):
            run_plan(i)
            status = q.status()
            latencies.append(status["started_at"] - status["enqueued_at"])
            time.sleep(0.3 + (i % 3) * 0.7)  # let the workers fall back into their blocking wait
        result["enqueue_to_first_claim_ms"] = sorted(latencies)
        result["bytes_after_10_plans"] = machine_bytes(r, "m1")
        for i in range(11, a.plans):
            run_plan(i, retention=2 if i == a.plans - 1 else 604800)
        time.sleep(1)
        result[f"bytes_after_{a.plans}_plans"] = machine_bytes(r, "m1")
        events = "provision:{m1}:events"
        xlen_before = r.xlen(events)
        time.sleep(3)  # the last plan's 2 s retention passes (and with it the previous plan's)
        passed = machine_bytes(r, "m1")
        result[f"bytes_after_{a.plans}_plans_retention_passed"] = passed
        # The event stream outlives a plan's retention: it expires 7 days (the default window) after
        # its last event. An idle machine adds none, so after the default window passed only the
        # keys that have no expiry or that the idle machine renews are left.
        events_pttl = r.pttl(events)
        result["events_pttl_ms"] = events_pttl
        result["events_added_while_idle"] = r.xlen(events) - xlen_before
        if 0 < events_pttl <= 7 * 24 * 3600 * 1000 and result["events_added_while_idle"] == 0:
            result["bytes_after_default_retention_window"] = passed["total"] - passed.get("events", 0)
        result["keys_after_retention"] = sorted(k.decode() for k in r.scan_iter(match="*{m1}*"))
    finally:
        worker.terminate()
        worker.wait(60)
    before = r.dbsize()
    out = subprocess.run([binary, "retire", "--redis", url, "--machine", "m1"], capture_output=True, text=True)
    result["retire"] = out.stdout.strip() or out.stderr.strip()
    result["bytes_after_retire"] = machine_bytes(r, "m1")["total"]
    result["dbsize_before_after_retire"] = [before, r.dbsize()]
    # fleet.lua cost with many machines announced before (the index makes it independent of the stream).
    sha = r.script_load((ROOT / "protocols" / "scripts" / "fleet.lua").read_text())
    stream = "provision:fleet:events"
    for n in (1000, 10000):
        start = r.xlen(stream) if r.exists(stream) else 0
        pipe = r.pipeline(transaction=False)
        for m in range(start, n):
            pipe.evalsha(sha, 2, stream, f"{{{stream}}}:announced:b{m}", "announce", f"b{m}", 1, "p", 604800, 100000, 0,
                         "provision:fleet", "{}", "type", "machine_ready")
            if m % 1000 == 999:
                pipe.execute()
                pipe = r.pipeline(transaction=False)
        pipe.execute()
        r.config_resetstat()
        for m in range(200):
            r.evalsha(sha, 2, stream, f"{{{stream}}}:announced:c{n}-{m}", "announce", f"c{n}-{m}", 1, "p", 604800, 100000, 0,
                      "provision:fleet", "{}", "type", "machine_ready")
            r.evalsha(sha, 2, stream, f"{{{stream}}}:announced:c{n}-{m}", "announce", f"c{n}-{m}", 1, "p", 604800, 100000, 0,
                      "provision:fleet", "{}", "type", "machine_ready")
        result[f"fleet_lua_usec_per_call_after_{n}"] = r.info("commandstats")["cmdstat_evalsha"]["usec_per_call"]
    r.config_resetstat()
    for _ in range(2000):
        r.eval("return 1", 0)
    result["eval_return_1_usec_per_call"] = r.info("commandstats")["cmdstat_eval"]["usec_per_call"]
    server.stop()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
