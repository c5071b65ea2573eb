#!/usr/bin/env python3
"""Many simulated machines against one Redis or a Redis Cluster (issue 20's bench/fleet).

    fleet.py record --bin PROVISION --out trace.json [--idle-seconds 30]
    fleet.py busy   --trace trace.json --machines 1000 --jobs 100 [--cluster 3] [--procs 2] --out busy.json
    fleet.py idle   --trace trace.json --machines 1000 --seconds 60 --out idle.json

`record` runs one real `provision worker` (the defaults) and keeps its command pattern (recording.py).
A simulated machine then uses that pattern on its own keys, through the real scripts:

- busy: each of its two worker connections claims and completes through queue.lua exactly as the
  recorded connection did (the same claim counts and completion batch sizes, in the same order; the
  leases are the ones its own claims returned, so every call does its real work), sends the recorded
  event commands (XADD, XTRIM, PEXPIRE, HINCRBY, the wake LPOPs) in proportion to the jobs it has
  finished, and the flipper makes the recorded announcement calls (queue.lua announce, fleet.lua
  announce, queue.lua announced). Plans are enqueued through the Python reference client while the
  machines wait on their wake list; `machine_ready` entries are read from the fleet stream.
- idle: each machine opens as many connections as the real one had and replays the idle part of
  the recording on them (BLPOP with its 5 s timeout, the announcement checks, the heartbeats), from
  a random phase.

Many machines share one asyncio process (`--procs` processes); commands are RESP on plain sockets
(resp.py). Prints and writes one JSON object.
"""
import argparse
import asyncio
import hashlib
import json
import multiprocessing
import random
import statistics
import sys
import time
from pathlib import Path

import redis

import localredis
import resp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "protocols" / "clients" / "python"))
from provision_client import ProvisionQueue  # noqa: E402

FLEET_STREAM = "provision:fleet:events"
QUEUE_LUA = (ROOT / "protocols" / "scripts" / "queue.lua").read_text()
FLEET_LUA = (ROOT / "protocols" / "scripts" / "fleet.lua").read_text()
QUEUE_SHA = hashlib.sha1(QUEUE_LUA.encode()).hexdigest().encode()
FLEET_SHA = hashlib.sha1(FLEET_LUA.encode()).hexdigest().encode()
SCRIPT_CMDS = ("evalsha", "eval", "fcall", "fcall_ro", "evalsha_ro", "eval_ro")
# Commands of the busy phase the simulator does itself (claim/complete) or that are not per job.
NOT_REPLAYED = {"blpop", "script", "hmget", "hgetall", "client", "hello", "select", "ping", "info"}


def _b(x):
    return x if isinstance(x, bytes) else str(x).encode("latin-1")


def load_trace(path):
    with open(path) as f:
        d = json.load(f)
    for phase in ("busy", "idle"):
        d[phase] = [(t, c, [_b(a) for a in args]) for t, c, args in d[phase]]
    return d


def _op(args):
    """queue.lua's operation of an EVALSHA (after its keys: 15 in protocol 3), or fleet.lua's (after 2)."""
    if args[0].lower() not in (b"evalsha", b"eval"):
        return None
    n = int(args[2])
    return args[3 + n].decode() + ("@fleet" if n == 2 else "") if len(args) > 3 + n else None


class Pattern:
    """What one simulated machine does, taken from the recording."""

    def __init__(self, trace):
        self.machine, self.plan = trace["machine"].encode(), trace["plan"].encode()
        self.jobs = trace["jobs"]
        self.connections = trace["connections"]
        self.workers = {}   # connection -> [("claim", args), ("complete", n), ...] in order
        self.replayed = []  # per-job commands (events, wake LPOPs), in order
        self.announce = []  # announce, fleet announce, announced: as recorded
        for _, conn, args in trace["busy"]:
            op, name = _op(args), args[0].lower().decode()
            if op == "claim":
                self.workers.setdefault(conn, []).append(("claim", args))
            elif op == "complete_many":
                self.workers.setdefault(conn, []).append(("complete", (len(args) - 3 - int(args[2]) - 2) // 4))
            elif op in ("announce", "announce@fleet", "announced"):
                self.announce.append(args)
            elif op is None and name not in NOT_REPLAYED:
                self.replayed.append(args)
            elif op is not None:
                raise SystemExit(f"the recording has a queue.lua call the simulator does not know: {op}")
        self.idle = {}
        for t, conn, args in trace["idle"]:
            self.idle.setdefault(conn, []).append((t, args))
        self.idle_s = trace["idle_s"]
        # The recording's script hashes become those of the scripts in this checkout (the binary may
        # embed another version): the simulator always runs protocols/scripts/*.lua as they are.
        self.shas = {QUEUE_SHA: QUEUE_SHA, FLEET_SHA: FLEET_SHA}
        for _, _, a in trace["busy"] + trace["idle"]:
            if a[0].lower() == b"evalsha":
                self.shas[a[1]] = FLEET_SHA if a[2] == b"2" else QUEUE_SHA
        self.sha = QUEUE_SHA

    def sub(self, args, machine, plan):
        out = [a.replace(self.machine, machine).replace(self.plan, plan) for a in args]
        if out[0].lower() == b"evalsha":
            out[1] = self.shas[out[1]]
        return out


# --------------------------------------------------------------------------------------------
# busy: N machines × J jobs
# --------------------------------------------------------------------------------------------

class SimMachine:
    def __init__(self, pattern, name, node, fleet_node, jobs):
        self.p, self.name, self.plan = pattern, name.encode(), f"plan-{name}".encode()
        self.jobs = jobs
        self.node, self.fleet_node = node, fleet_node
        self.done = 0
        self.replayed_sent = 0
        self.flipped = asyncio.Event()

    def sub(self, args):
        return self.p.sub(args, self.name, self.plan)

    async def events(self, conn):
        """Sends the recorded per-job commands up to this machine's share of finished jobs."""
        target = len(self.p.replayed) * self.done // self.jobs
        if target > self.replayed_sent:
            await conn.pipeline([self.sub(a) for a in self.p.replayed[self.replayed_sent:target]])
            self.replayed_sent = target

    async def announce(self, conn):
        fleet = await resp.Conn.open("127.0.0.1", self.fleet_node)
        try:
            for args in self.p.announce:
                c = fleet if _op(args) == "announce@fleet" else conn
                await c.call(*self.sub(args))
        finally:
            fleet.close()
        self.flipped.set()

    async def worker(self, conn, steps):
        """One worker process's connection: the recorded claims and completion batches, on its own leases."""
        held, i = [], 0
        wake = b"provision:{" + self.name + b"}:wake"
        while await conn.call(b"BLPOP", wake, b"5.000") is None:  # idle until the enqueue's wake marker
            pass
        claim_args = self.sub(steps[0][1]) if steps else None
        while not self.flipped.is_set():
            if i < len(steps):
                kind, what = steps[i]
                i += 1
            else:  # past the recording (the other connection got fewer jobs than recorded): the generic loop
                kind, what = ("complete", len(held)) if held else ("claim", claim_args)
            if kind == "claim":
                reply = await conn.call(*self.sub(what))
                jobs = reply[2:]
                if not jobs and not held and i >= len(steps):
                    if self.flipped.is_set():
                        break
                    await conn.call(b"BLPOP", wake, b"0.2")
                held += jobs
                flip = reply[0]
            else:
                n = min(what, len(held))
                if n == 0:
                    continue
                batch, held = held[:n], held[n:]
                args = []
                for job in batch:
                    args += [job[8], job[0], job[5], b"{}"]
                # the worker pipelines the next claim behind the completion when slots were freed
                nxt = steps[i] if i < len(steps) else None
                keys = self.keys()
                cmds = [[b"EVALSHA", self.p.sha, str(len(keys)).encode(), *keys, b"complete_many", self.base(), *args]]
                if nxt and nxt[0] == "claim":
                    cmds.append(self.sub(nxt[1]))
                    i += 1
                replies = await conn.pipeline(cmds)
                for r in replies:
                    if isinstance(r, resp.ReplyError):
                        raise r
                flip = replies[0][0]
                if len(replies) > 1:
                    held += replies[1][2:]
                self.done += n
                await self.events(conn)
            if flip == b"ready":
                await self.events(conn)
                await self.announce(conn)

    def base(self):
        return b"provision:{" + self.name + b"}"

    def keys(self):
        return [self.base() + b":" + k.encode() for k in
                ("status", "ready", "active", "delayed", "wake", "failures", "workers", "heartbeats", "events",
                 "jobs", "previous", "plans", "progress", "metrics", "staging")]


async def _busy_shard(pattern, machines, nodes, fleet_node, jobs, connected):
    sims = [SimMachine(pattern, name, nodes[name], fleet_node, jobs) for name in machines]
    conns, tasks = [], []
    for m in sims:
        for steps in pattern.workers.values():
            c = await resp.Conn.open("127.0.0.1", m.node)
            conns.append(c)
            tasks.append(asyncio.create_task(m.worker(c, steps)))
        for _ in range(pattern.connections - len(pattern.workers)):  # the supervisor's and health server's
            conns.append(await resp.Conn.open("127.0.0.1", m.node))
    await asyncio.sleep(0.5)  # every worker connection is in its BLPOP
    connected.set()
    await asyncio.gather(*tasks)
    for c in conns:
        c.close()


def _busy_proc(pattern, machines, nodes, fleet_node, jobs, connected):
    asyncio.run(_busy_shard(pattern, machines, nodes, fleet_node, jobs, connected))


def commandstats(clients):
    total = {}
    for c in clients:
        for k, v in c.info("commandstats").items():
            t = total.setdefault(k[8:], {"calls": 0, "usec": 0})
            t["calls"] += v["calls"]
            t["usec"] += v["usec"]
    return total


def cpu(clients):
    s = 0.0
    for c in clients:
        i = c.info("cpu")
        s += i["used_cpu_sys"] + i["used_cpu_user"]
    return s


def calibration(client):
    """Redis µs of `EVAL "return 1" 0`, measured on the same server in the same run."""
    client.config_resetstat()
    pipe = client.pipeline(transaction=False)
    for _ in range(2000):
        pipe.eval("return 1", 0)
    pipe.execute()
    return client.info("commandstats")["cmdstat_eval"]["usec_per_call"]


def run_busy(a):
    pattern = Pattern(load_trace(a.trace))
    names = [f"s{i:05d}" for i in range(a.machines)]
    cluster = localredis.Cluster(a.cluster) if a.cluster else None
    server = None if cluster else localredis.Server("--maxclients", 15000)
    try:
        servers = cluster.nodes if cluster else [server]
        admin = [s.client for s in servers]
        for c in admin:
            c.config_set("maxclients", 15000)
            c.script_load(QUEUE_LUA)
            c.script_load(FLEET_LUA)
        if cluster:
            from redis.crc import key_slot
            api = redis.RedisCluster(host="127.0.0.1", port=servers[0].port)
            nodes = {n: cluster.node_for_slot(key_slot(f"provision:{{{n}}}:status".encode())).port for n in names}
            fleet_node = cluster.node_for_slot(key_slot(FLEET_STREAM.encode())).port
            fleet_client = cluster.node_for_slot(key_slot(FLEET_STREAM.encode())).client
        else:
            api = redis.Redis(port=server.port)
            nodes = {n: server.port for n in names}
            fleet_node, fleet_client = server.port, server.client
        calib = [calibration(c) for c in admin]
        for c in admin:
            c.config_resetstat()
        cpu0 = cpu(admin)
        # The machines connect and wait on their wake lists; the plans are enqueued while they wait.
        shards = [names[i::a.procs] for i in range(a.procs)]
        connected = [multiprocessing.Event() for _ in shards]
        procs = [multiprocessing.Process(target=_busy_proc, args=(pattern, s, nodes, fleet_node, a.jobs, e))
                 for s, e in zip(shards, connected)]
        for p in procs:
            p.start()
        deadline = time.time() + 120
        while not all(e.is_set() for e in connected):
            if time.time() > deadline or not all(p.is_alive() for p in procs):
                for p in procs:
                    p.terminate()
                raise SystemExit("the simulated machines did not connect within 120 s")
            time.sleep(0.1)
        queues = {n: ProvisionQueue(api, n) for n in names}
        plan_jobs = [{"id": f"j{k}", "kind": "noop"} for k in range(a.jobs)]
        t0 = time.time()
        for n in names:
            queues[n].enqueue({"version": 1, "plan_id": f"plan-{n}", "jobs": plan_jobs})
        enqueue_s = time.time() - t0
        seen, last_id, deadline = {}, "0-0", time.time() + a.timeout
        while len(seen) < len(names) and time.time() < deadline:
            reply = fleet_client.xread({FLEET_STREAM: last_id}, count=1000, block=1000) or []
            for _, entries in reply:
                for entry_id, fields in entries:
                    last_id = entry_id
                    seen[fields[b"announce_id"].decode().split(":")[0]] = int(entry_id.split(b"-")[0])
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.terminate()
        stats = commandstats(admin)
        cpu_s = cpu(admin) - cpu0
        status = {n: queues[n].status() for n in names}
        not_ready = [n for n in names if status[n]["state"] != "ready"]
        lat = sorted(seen[n] - status[n]["enqueued_at"] for n in seen)
        first = min(s["enqueued_at"] for s in status.values())
        span_ms = max(seen.values()) - first if seen else None
        jobs = a.machines * a.jobs
        script_usec = sum(v["usec"] for k, v in stats.items() if k in SCRIPT_CMDS)
        result = {
            "redis": f"cluster of {a.cluster} masters" if cluster else "one server",
            "machines": a.machines, "jobs_per_machine": a.jobs, "sim_processes": a.procs,
            "announced": len(seen), "not_ready": len(not_ready),
            "enqueue_s": round(enqueue_s, 2),
            "span_s": span_ms / 1000 if span_ms else None,
            "jobs_per_s": round(jobs / (span_ms / 1000)) if span_ms else None,
            "enqueue_to_machine_ready_ms": {"p50": statistics.median(lat) if lat else None,
                                             "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
                                             "max": lat[-1] if lat else None},
            "redis_usec_per_job_scripts": round(script_usec / jobs, 2),
            "redis_cpu_usec_per_job": round(cpu_s * 1e6 / jobs, 1),
            "script_calls_per_job": round(sum(v["calls"] for k, v in stats.items() if k in SCRIPT_CMDS) / jobs, 3),
            # commandstats counts the commands a script runs as well as the script call
            "commands_per_job_inside_scripts_included": round(sum(v["calls"] for k, v in stats.items() if k not in ("info", "config", "script")) / jobs, 2),
            "eval_return_1_usec": calib,
            "commandstats": {k: v for k, v in sorted(stats.items()) if k not in ("info", "config")},
        }
        if not_ready:
            result["not_ready_examples"] = {n: status[n]["counts"] for n in not_ready[:3]}
        return result
    finally:
        (cluster or server).stop()


# --------------------------------------------------------------------------------------------
# idle: N machines replaying the recorded idle pattern
# --------------------------------------------------------------------------------------------

async def _idle_machine(pattern, name, port, stop_at, conns, errors):
    machine, plan = name.encode(), f"plan-{name}".encode()
    own = [await resp.Conn.open("127.0.0.1", port) for _ in range(pattern.connections)]
    conns.extend(own)
    phase = random.uniform(0, pattern.idle_s)

    async def replay(conn, events):
        start = time.monotonic() - phase  # the first cycle starts `phase` seconds into the recording
        first = True
        while True:
            for t, args in events:
                delay = start + t - time.monotonic()
                if first and delay < 0:
                    continue
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.time() >= stop_at:
                    return
                reply = (await conn.pipeline([pattern.sub(args, machine, plan)]))[0]
                if isinstance(reply, resp.ReplyError):
                    errors.append(str(reply))
            start += pattern.idle_s
            first = False
    await asyncio.gather(*(replay(c, ev) for c, ev in zip(own, pattern.idle.values())))


async def _idle_shard(pattern, names, port, stop_at):
    conns, errors = [], []
    await asyncio.gather(*(_idle_machine(pattern, n, port, stop_at, conns, errors) for n in names))
    for c in conns:
        c.close()
    if errors:
        print(f"idle replay: {len(errors)} error replies, e.g. {errors[0]}", file=sys.stderr)


def _idle_proc(pattern, names, port, stop_at):
    asyncio.run(_idle_shard(pattern, names, port, stop_at))


def run_idle(a):
    pattern = Pattern(load_trace(a.trace))
    names = [f"i{i:05d}" for i in range(a.machines)]
    with localredis.Server("--maxclients", 15000) as server:
        r = server.client
        r.script_load(QUEUE_LUA)
        calib = calibration(r)
        warmup = pattern.idle_s  # every connection is past its first replayed command
        stop_at = time.time() + warmup + a.seconds + 30
        procs = [multiprocessing.Process(target=_idle_proc, args=(pattern, names[i::a.procs], server.port, stop_at))
                 for i in range(a.procs)]
        for p in procs:
            p.start()
        time.sleep(warmup)
        clients = r.info("clients")["connected_clients"] - 1
        r.config_resetstat()
        cpu0, t0 = cpu([r]), time.time()
        time.sleep(a.seconds)
        cpu1, t1 = cpu([r]), time.time()
        stats = commandstats([r])
        for p in procs:
            p.terminate()
            p.join(10)
    calls = {k: v["calls"] for k, v in stats.items() if k not in ("info", "config")}
    seconds = t1 - t0
    return {
        "machines": a.machines, "seconds": round(seconds, 1),
        "recorded_connections_per_machine": pattern.connections,
        "connections": clients, "connections_per_machine": round(clients / a.machines, 2),
        "redis_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / seconds, 2),
        "commands_per_s": round(sum(calls.values()) / seconds, 1),
        "commands_per_s_per_machine": round(sum(calls.values()) / seconds / a.machines, 3),
        "commands": calls, "usec": {k: v["usec"] for k, v in stats.items() if k not in ("info", "config")},
        "eval_return_1_usec": calib,
    }


# --------------------------------------------------------------------------------------------
# report: the figures of one `run`, and what they say about capacity
# --------------------------------------------------------------------------------------------

def run_report(a):
    def load(name):
        p = Path(a.dir) / f"{name}.json"
        return json.loads(p.read_text()) if p.exists() else None

    m, idle, single, cluster = load("measure"), load("idle"), load("busy-single"), load("busy-cluster")
    rec = load("trace")
    lines, out = [], {}
    if rec:
        lines.append(f"one real machine (provision worker, defaults; {rec['connections']} connections), "
                     f"one plan of {rec['jobs']} jobs: {rec['real_machine_busy']}")
    if single and cluster:
        ratio = cluster["redis_usec_per_job_scripts"] / single["redis_usec_per_job_scripts"]
        cpu_ratio = cluster["redis_cpu_usec_per_job"] / single["redis_cpu_usec_per_job"]
        out.update(cluster_over_single_script_usec=round(ratio, 3), cluster_over_single_cpu_usec=round(cpu_ratio, 3))
    lines.append("| | one Redis | cluster, 3 masters |")
    lines.append("|---|---|---|")
    for key, label in (("machines", "machines × jobs"), ("jobs_per_s", "jobs/s (simulator-bound)"),
                       ("redis_usec_per_job_scripts", "Redis µs per job in scripts (EVALSHA usec)"),
                       ("redis_cpu_usec_per_job", "Redis CPU µs per job (used_cpu_sys+user, all nodes)"),
                       ("script_calls_per_job", "script calls per job"),
                       ("p50", "enqueue → machine_ready p50 ms"), ("p99", "enqueue → machine_ready p99 ms"),
                       ("eval_return_1_usec", "EVAL \"return 1\" 0 µs (same run)")):
        row = []
        for r in (single, cluster):
            if not r:
                row.append("—")
            elif key == "machines":
                row.append(f"{r['machines']} × {r['jobs_per_machine']} ({r['announced']} announced, {r['not_ready']} not ready)")
            elif key in ("p50", "p99"):
                row.append(str(r["enqueue_to_machine_ready_ms"][key]))
            else:
                row.append(str(r[key]))
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    if "cluster_over_single_script_usec" in out:
        lines.append(f"cluster ÷ single, µs per job in scripts: {out['cluster_over_single_script_usec']:.2f} "
                     f"(target ≤ 1.15); Redis CPU per job: {out['cluster_over_single_cpu_usec']:.2f}")
    if idle:
        lines.append(f"idle: {idle['machines']} machines, {idle['connections']} connections "
                     f"({idle['connections_per_machine']} per machine, target ≤ 4), {idle['commands_per_s']} commands/s "
                     f"(inner script commands counted), Redis CPU {idle['redis_cpu_percent_of_one_core']} % of one core "
                     f"(target ≤ 5 %) over {idle['seconds']} s")
    if m:
        keys = [k for k in m if k.startswith("bytes_after_")]
        for k in keys:
            v = m[k]
            lines.append(f"{k}: {v['total'] if isinstance(v, dict) else v} B")
        for k in ("fleet_lua_usec_per_call_after_1000", "fleet_lua_usec_per_call_after_10000", "eval_return_1_usec_per_call",
                  "connections", "idle_commands_per_s", "enqueue_to_first_claim_ms", "events_pttl_ms"):
            if k in m:
                lines.append(f"{k}: {m[k]}")
    if single and idle:
        per_job = single["redis_cpu_usec_per_job"]
        idle_core = idle["redis_cpu_percent_of_one_core"] / 100 / idle["machines"]
        out["jobs_per_s_per_redis_core"] = round(1e6 / per_job)
        out["idle_machines_per_core_at_50_percent"] = round(0.5 / idle_core) if idle_core else None
        lines.append(f"capacity: one Redis core does {out['jobs_per_s_per_redis_core']:,} jobs/s at {per_job} µs of Redis CPU per job "
                     f"(a 100-job plan: {100 * per_job / 1000:.1f} ms of Redis CPU); idle machines cost "
                     f"{idle_core * 100:.5f} % of a core each")
    text = "\n".join(lines)
    print(text)
    out["table"] = text
    return out


def run_record(a):
    import recording
    d = recording.record(a.bin, jobs=a.jobs, idle_s=a.idle_seconds)
    with open(a.out, "w") as f:
        json.dump(d, f, default=lambda b: b.decode("latin-1"))
    return {"connections": d["connections"], "busy_commands": len(d["busy"]), "idle_commands": len(d["idle"]),
            "idle_s": d["idle_s"], "real_machine_busy": d["real_machine_busy"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("record")
    p.add_argument("--bin", required=True)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--idle-seconds", type=float, default=30)
    p.add_argument("--out", required=True)

    def replay(name, procs):
        # busy and idle replay a recording (--trace) on simulated machines.
        p = sub.add_parser(name)
        p.add_argument("--trace", required=True)
        p.add_argument("--machines", type=int, default=1000)
        p.add_argument("--procs", type=int, default=procs)
        p.add_argument("--out", required=True)
        return p

    p = replay("busy", procs=2)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--cluster", type=int, default=0, help="masters of a local Redis Cluster (0: one server)")
    p.add_argument("--timeout", type=float, default=600)
    p = replay("idle", procs=1)
    p.add_argument("--seconds", type=float, default=60)
    p = sub.add_parser("report")
    p.add_argument("--dir", required=True)
    p.add_argument("--out", required=True)
    a = ap.parse_args()
    result = {"record": run_record, "busy": run_busy, "idle": run_idle, "report": run_report}[a.cmd](a)
    if a.cmd != "record":  # record wrote the recording there
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("commandstats", "commands", "usec")}, indent=1))


if __name__ == "__main__":
    main()
