#!/usr/bin/env python3
"""Where a provision run's time went, from its step events (`provision events` JSON lines on stdin).

    phases.py PLAN_ID ENQUEUE_EPOCH_SECONDS < events.jsonl

Prints milliseconds since the enqueue for: the first and last node job start, the last node job
end, the python-deps job start and end, and the flip to ready; and the node jobs' mean duration.
"""
import json
import sys

plan, t0 = sys.argv[1], float(sys.argv[2])
starts, ends = {}, {}
ready = None
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    event = json.loads(line)
    if event.get("trace_id") != plan:
        continue
    name, span, ms = event.get("event", ""), event.get("span_id") or "", event["timestamp"] / 1e6 - t0 * 1000
    if name.endswith(".install.start"):
        starts.setdefault(span, ms)
    elif name.endswith(".install.complete"):
        ends[span] = ms
    elif name == "machine.ready.complete":
        ready = ms

nodes = [s for s in starts if s.startswith("node:")]
node_ends = [ends[s] for s in nodes if s in ends]
deps = next((s for s in starts if s.startswith("python-deps")), None)


def fmt(value):
    return "-" if value is None else f"{value:.0f}"


durations = [ends[s] - starts[s] for s in nodes if s in ends]
print(
    "phases (ms after enqueue): first node start {} | last node start {} | last node end {} | python-deps start {} | "
    "python-deps end {} | ready {} | node job mean {} ms ({} jobs)".format(
        fmt(min(starts[s] for s in nodes) if nodes else None), fmt(max(starts[s] for s in nodes) if nodes else None),
        fmt(max(node_ends) if node_ends else None), fmt(starts.get(deps)), fmt(ends.get(deps)), fmt(ready),
        fmt(sum(durations) / len(durations) if durations else None), len(durations)))
