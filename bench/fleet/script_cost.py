#!/usr/bin/env python3
"""Redis time per job inside queue.lua, the working tree's against older ones, on one private redis-server.

    .build/test-venv/bin/python bench/fleet/script_cost.py [--old-commit ceaecb2 --old-commit f30cace] [--jobs 2000] [--batch 8]

For each script: enqueue a plan of N noop jobs, then claim `batch` jobs and complete them with one
complete_many, until done (the worker's pattern); reports Redis µs per job for enqueue, claim and
complete from INFO commandstats (EVALSHA), median (and best) of 5 rounds (--rounds). An old script is read with
`git show <commit>:protocols/scripts/queue.lua` and called with its own keys (as many as its KEY_NAMES
lists, 9 before it had that list). Defaults: ceaecb2 (9 keys, a hash per job), f30cace (protocol 2:
14 keys, fields `<id>|<field>`), and the working tree.
"""
import argparse, json, statistics, subprocess
from pathlib import Path

import localredis

ROOT = Path(__file__).resolve().parents[2]
ALL_KEYS = ("status", "ready", "active", "delayed", "wake", "failures", "workers", "heartbeats", "events",
            "jobs", "previous", "plans", "progress", "metrics", "staging")


def keys_of(source):
    if "KEY_NAMES" not in source:
        return ALL_KEYS[:9]
    listed = source.split("KEY_NAMES = {", 1)[1].split("}", 1)[0]
    return ALL_KEYS[:listed.count('"') // 2]


def usec(r):
    s = r.info("commandstats").get("cmdstat_evalsha", {})
    return s.get("usec", 0)


def run(r, source, keys, n, batch, claim_reply_offset, round_):
    sha = r.script_load(source)
    base = f"provision:{{m{round_}}}"
    k = [f"{base}:{x}" for x in keys]
    plan = json.dumps({"version": 1, "plan_id": f"p{round_}", "jobs": [{"id": f"j{i}", "kind": "noop"} for i in range(n)]})
    r.config_resetstat()
    r.evalsha(sha, len(k), *k, "enqueue", base, f"m{round_}", plan, 65536, 100000, 0, 604800)
    enqueue = usec(r)
    claim = complete = 0
    done = 0
    while done < n:
        before = usec(r)
        reply = r.evalsha(sha, len(k), *k, "claim", base, "w", batch, 100)
        claim += usec(r) - before
        jobs = reply[claim_reply_offset:]
        args = []
        for job in jobs:
            args += [job[8], job[0], job[5], "{}"]
        before = usec(r)
        r.evalsha(sha, len(k), *k, "complete_many", base, *args)
        complete += usec(r) - before
        done += len(jobs)
    return enqueue / n, claim / n, complete / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old-commit", action="append")
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    scripts = []
    for commit in a.old_commit or ["ceaecb2", "f30cace"]:
        scripts.append((commit, subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:protocols/scripts/queue.lua"],
                                               capture_output=True, text=True, check=True).stdout))
    scripts.append(("working tree", (ROOT / "protocols" / "scripts" / "queue.lua").read_text()))
    server = localredis.Server()
    try:
        r = server.client
        result = {}
        # Rounds interleave the scripts, so a change in the machine's load hits them alike.
        rounds_of = {name: [] for name, _ in scripts}
        for i in range(a.rounds):
            for name, source in scripts:
                keys, offset = keys_of(source), 2 if "next_upkeep" in source else 1
                rounds_of[name].append(run(r, source, keys, a.jobs, a.batch, offset, f"{name[:3]}{i}"))
        for name, _ in scripts:
            rounds = rounds_of[name]
            parts = ("enqueue_us_per_job", "claim_us_per_job", "complete_us_per_job")
            result[name] = {part: round(statistics.median(x[j] for x in rounds), 2) for j, part in enumerate(parts)}
            result[name]["total_us_per_job"] = round(sum(result[name].values()), 2)
            # The best round: on a loaded machine the median includes time the server was not scheduled.
            best = {part: round(min(x[j] for x in rounds), 2) for j, part in enumerate(parts)}
            best["total_us_per_job"] = round(sum(best.values()), 2)
            result[name]["best_round"] = best
        print(json.dumps(result, indent=1))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
