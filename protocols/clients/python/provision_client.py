#!/usr/bin/env python3
"""Reference Python client for the provision Redis protocol (API side).

Enqueues plans for a machine, reads its status, cancels and waits, using only redis-py and the
files in ``protocols/``: every state change goes through ``protocols/scripts/queue.lua`` (read
from ``../../scripts/queue.lua`` relative to this file), exactly as the Swift workers call it.
The contract is described in ``protocols/redis.md``.

Library use::

    import redis
    from provision_client import ProvisionQueue

    q = ProvisionQueue(redis.Redis.from_url("redis://localhost:6379/0"), "m1")
    q.enqueue(plan_dict)            # {"generation": 1, "jobs": 10, "ready": 4}; sliced when large
    q.job("plan-1", "job-a")        # one job's record, or None
    q.wait(timeout_s=600)["state"]  # "ready", "failed", "cancelled" (or not settled on timeout)

Command line::

    python3 provision_client.py --redis URL --machine M enqueue PLAN.json [--replace]
    python3 provision_client.py --redis URL --machine M status
    python3 provision_client.py --redis URL --machine M wait --timeout S   # exit 0 ready, 1 failed/cancelled, 2 timeout
    python3 provision_client.py --redis URL --machine M cancel [--reason TEXT]
    python3 provision_client.py --redis URL --machine M retire [--force]   # removes every key of M

Protocol 3: queue.lua declares all 15 keys of the machine and refuses (``PROTOCOL_MISMATCH``)
keys written by another protocol; an out-of-date copy of this file and queue.lua must be replaced.
A plan larger than one call's limits (2000 jobs, 4 MiB of JSON) is sent in slices
(``enqueue_begin`` / ``enqueue_slice`` [/ ``enqueue_link``] / ``enqueue_commit``): still all or nothing, and no call
blocks Redis for long.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import redis

try:
    from redis.client import NEVER_DECODE as _NEVER_DECODE
except ImportError:  # very old redis-py: replies follow the client's decode_responses
    _NEVER_DECODE = "NEVER_DECODE"

SCRIPT_PATH = Path(__file__).resolve().parent.parent.parent / "scripts" / "queue.lua"

#: The protocol of queue.lua this client speaks (stored in the status hash's ``protocol`` field).
PROTOCOL = 3

#: The keys every call of queue.lua declares, in this order (KEYS[1..15]): every key of a machine.
KEY_SUFFIXES = ("status", "ready", "active", "delayed", "wake", "failures", "workers", "heartbeats", "events",
                "jobs", "previous", "plans", "progress", "metrics", "staging")

#: Limits of one enqueue / enqueue_slice call in queue.lua (MAX_SLICE_JOBS, MAX_SLICE_BYTES).
MAX_SLICE_JOBS = 2000
MAX_SLICE_BYTES = 4 * 1024 * 1024
#: A job depending on more jobs than this is sent in a slice of its own (queue.lua LINK_BUDGET).
FAN_IN_DEPENDENCIES = 4000
#: Largest re-encoded ``meta`` queue.lua accepts (MAX_META).
MAX_META_BYTES = 65536
#: The large fields of a job, stored beside its record as ``<job_id>|<name>`` (protocols/redis.md §4).
JOB_SIDE_FIELDS = ("payload", "depends_on", "dependents", "result")

#: The integer fields of the status hash reported under "counts".
COUNT_FIELDS = ("total", "waiting", "ready", "active", "delayed", "succeeded", "failed", "dead",
                "cancelled", "retries", "reclaimed")

MACHINE_STATES = ("idle", "pending", "running", "ready", "failed", "cancelled")
SETTLED_STATES = ("ready", "failed", "cancelled")

_MACHINE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PREFIX = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class ProvisionError(Exception):
    """Base class of the errors this client raises for a refused operation."""


class PlanRejected(ProvisionError):
    """The script refused the plan (error code PLAN_INVALID); nothing was written.

    ``sentence`` is the script's one-sentence reason, without the code.
    """

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


class MachineBusy(ProvisionError):
    """The machine still runs another plan (error code MACHINE_BUSY); cancel it or enqueue with replace."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


class ProtocolMismatch(ProvisionError):
    """The machine's keys were written by another protocol of queue.lua (error code PROTOCOL_MISMATCH)."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


class BadRequest(ProvisionError):
    """The script refused the call itself (error code BAD_REQUEST), e.g. a foreign plan id on cancel."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


def _text(value: Any) -> Any:
    """Decodes a bytes reply (clients without decode_responses) to str; other values pass through."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def _int(value: Any) -> Optional[int]:
    """An integer hash field, or None when absent or not an integer."""
    if value is None:
        return None
    try:
        return int(_text(value))
    except (TypeError, ValueError):
        return None


class ProvisionQueue:
    """One machine's queue, seen from the API side.

    :param redis: a ``redis.Redis`` (or ``redis.RedisCluster``) client; ``decode_responses`` may be
        on or off. All keys of one machine share the hash tag ``{machine_id}``, so one cluster slot.
    :param machine_id: 1-64 ASCII letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.
    :param prefix: the key prefix (default ``provision``): 1-64 ASCII letters, digits, ``.``, ``_``,
        ``:`` or ``-`` (never ``{`` or ``}``, which would move the hash tag).
    """

    def __init__(self, redis: "redis.Redis", machine_id: str, prefix: str = "provision") -> None:
        if not _MACHINE_ID.match(machine_id):
            raise ValueError(f"the machine id {machine_id!r} is not 1-64 letters, digits, '.', '_' or '-'")
        if not _PREFIX.match(prefix):
            raise ValueError(f"the key prefix {prefix!r} is not 1-64 letters, digits, '.', '_', ':' or '-'")
        self.redis = redis
        self.machine_id = machine_id
        self.prefix = prefix
        #: ``<prefix>:{<machine_id>}``, the start of every key of this machine (ARGV[2]).
        self.base = f"{prefix}:{{{machine_id}}}"
        #: KEYS[1..15] of every script call.
        self.keys: List[str] = [f"{self.base}:{suffix}" for suffix in KEY_SUFFIXES]
        # register_script calls EVALSHA and falls back to SCRIPT LOAD + EVALSHA on NOSCRIPT.
        self._script = redis.register_script(SCRIPT_PATH.read_text(encoding="utf-8"))

    def key(self, suffix: str) -> str:
        """The full name of one of this machine's keys, e.g. ``key("status")``."""
        return f"{self.base}:{suffix}"

    def call(self, op: str, *args: Union[str, int, float]) -> Any:
        """Runs one operation of queue.lua (low level): ``EVALSHA sha 15 KEYS... op base args...``.

        Error replies become :class:`PlanRejected`, :class:`MachineBusy` or :class:`BadRequest`;
        any other Redis error is raised unchanged. Replies are returned with bytes decoded to str.
        """
        try:
            reply = self._script(keys=self.keys, args=[op, self.base, *[str(a) for a in args]])
        except redis.exceptions.ResponseError as error:
            message = str(error)
            if message.startswith("PLAN_INVALID "):
                raise PlanRejected(message[len("PLAN_INVALID "):]) from None
            if message.startswith("MACHINE_BUSY "):
                raise MachineBusy(message[len("MACHINE_BUSY "):]) from None
            if message.startswith("BAD_REQUEST "):
                raise BadRequest(message[len("BAD_REQUEST "):]) from None
            if message.startswith("PROTOCOL_MISMATCH "):
                raise ProtocolMismatch(message[len("PROTOCOL_MISMATCH "):]) from None
            raise
        return _text(reply)

    def enqueue(self, plan: Union[Dict[str, Any], str], replace: bool = False, max_payload_bytes: int = 65536,
                max_jobs: int = 50000, retention_seconds: int = 604800, slice_jobs: int = 1000,
                slice_bytes: int = 1024 * 1024, between_slices: Optional[Callable[[int], None]] = None) -> Dict[str, int]:
        """Enqueues a plan (protocols/schemas/plan.schema.json) atomically: every job or nothing.

        A plan of at most ``slice_jobs`` jobs and ``slice_bytes`` bytes is one ``enqueue`` call; a
        larger one is sent in slices of that size (``enqueue_begin``, ``enqueue_slice``...,
        ``enqueue_commit``), invisible to workers until the last call. Jobs are sent after the jobs
        they depend on (a plan listing a job before its dependency is reordered, stably).

        :param plan: the plan as a dict, or as JSON text.
        :param replace: supersede a plan that is still pending or running (else :class:`MachineBusy`).
        :param max_payload_bytes: the largest job payload accepted (the script caps it at 1 MiB).
        :param max_jobs: the most jobs accepted (the script caps it at 100000).
        :param retention_seconds: how long a finished or superseded plan's records stay readable
            (then they expire), and how long its plan id is refused again.
        :param between_slices: called with the number of jobs staged after each slice (tests, progress).
        :returns: ``{"generation": g, "jobs": n, "ready": r}``: the machine's new generation, the number
            of jobs written and how many were ready at once (no dependencies).
        :raises PlanRejected: the plan is invalid (the script's sentence says why) or its plan_id was
            already enqueued for this machine.
        :raises MachineBusy: the machine is pending or running another plan and replace is false.
        """
        text = plan if isinstance(plan, str) else json.dumps(plan, separators=(",", ":"))
        slice_jobs = max(1, min(int(slice_jobs), MAX_SLICE_JOBS))
        slice_bytes = max(1, min(int(slice_bytes), MAX_SLICE_BYTES))
        parsed = plan if isinstance(plan, dict) else None
        if parsed is None:
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        limits = [int(max_payload_bytes), int(max_jobs), "1" if replace else "0", int(retention_seconds)]
        jobs = parsed.get("jobs") if isinstance(parsed, dict) else None
        if not isinstance(jobs, list) or (len(jobs) <= slice_jobs and len(text.encode()) <= slice_bytes):
            # Small, or not a plan at all: one call, and the script's sentence says what is wrong.
            generation, count, ready = self.call("enqueue", self.machine_id, text, *limits)
            return {"generation": int(generation), "jobs": int(count), "ready": int(ready)}
        if "meta" in parsed:
            meta = len(json.dumps(parsed["meta"], separators=(",", ":")).encode())
            if meta > MAX_META_BYTES:
                raise PlanRejected(f"meta is {meta} bytes, more than the limit of {MAX_META_BYTES}")
        head = {k: v for k, v in parsed.items() if k != "jobs"}
        upload = f"u{os.getpid()}-{int(time.time() * 1000)}-{os.urandom(4).hex()}"
        self.call("enqueue_begin", self.machine_id, upload, json.dumps(head, separators=(",", ":")), *limits)
        staged = 0
        for part in _slices(_dependencies_first(jobs), slice_jobs, slice_bytes):
            reply = self.call("enqueue_slice", upload, part)
            staged, left = int(reply[1]), int(reply[2])
            while left > 0:  # a job depending on many jobs of earlier slices: linked in bounded steps
                left = int(self.call("enqueue_link", upload)[1])
            if between_slices is not None:
                between_slices(int(staged))
        generation, count, ready = self.call("enqueue_commit", upload)
        return {"generation": int(generation), "jobs": int(count), "ready": int(ready)}

    def job(self, plan_id: str, job_id: str) -> Optional[Dict[str, Any]]:
        """One job's record (protocols/redis.md §4) with ``id`` and ``plan`` added, from the current or
        the previous plan; None when neither is ``plan_id`` or the records expired."""
        for suffix in ("jobs", "previous"):
            key = self.key(suffix)
            values = self.redis.hmget(key, ["|plan_id", job_id] + [f"{job_id}|{name}" for name in JOB_SIDE_FIELDS])
            if _text(values[0]) != plan_id:
                continue
            if values[1] is None:
                return None
            record: Dict[str, Any] = json.loads(_text(values[1]))
            for name, value in zip(JOB_SIDE_FIELDS, values[2:]):
                if value is not None and _text(value) != "":
                    record[name] = _text(value)
                elif name in ("depends_on", "dependents"):
                    record[name] = "[]"
            record["id"], record["plan"] = job_id, plan_id
            return record
        return None

    def status(self) -> Dict[str, Any]:
        """The machine's status (protocols/schemas/status.schema.json): the status hash and the
        failure reasons, read in one round trip. ``state`` is ``idle`` when no plan was ever enqueued."""
        # Read undecoded whatever the client's decode_responses: the script cuts error messages and
        # cancel reasons at a byte count, which can split a UTF-8 character; decode leniently here.
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command("HGETALL", self.key("status"), **{_NEVER_DECODE: True})
        pipe.execute_command("LRANGE", self.key("failures"), 0, -1, **{_NEVER_DECODE: True})
        raw_hash, raw_reasons = pipe.execute()
        if isinstance(raw_hash, list):  # RESP2 without a response callback: flat field/value list
            raw_hash = dict(zip(raw_hash[0::2], raw_hash[1::2]))
        fields = {_text(k): _text(v) for k, v in raw_hash.items()}
        state = fields.get("state")
        status: Dict[str, Any] = {
            "machine_id": self.machine_id,
            "state": state if state in MACHINE_STATES else "idle",
        }
        if fields.get("plan_id") is not None:
            status["plan_id"] = fields["plan_id"]
        status["generation"] = _int(fields.get("generation")) or 0
        status["counts"] = {name: _int(fields.get(name)) or 0 for name in COUNT_FIELDS}
        for name in ("enqueued_at", "started_at", "finished_at"):
            value = _int(fields.get(name))
            if value is not None:
                status[name] = value
        failures: List[Dict[str, Any]] = []
        for raw in raw_reasons:
            try:
                reason = json.loads(_text(raw))
            except ValueError:
                continue
            if not isinstance(reason, dict) or not all(isinstance(reason.get(k), str) for k in ("job", "error_type", "error")):
                continue
            item: Dict[str, Any] = {"job": reason["job"]}
            if isinstance(reason.get("kind"), str):
                item["kind"] = reason["kind"]
            item["error_type"] = reason["error_type"]
            item["error"] = reason["error"]
            if isinstance(reason.get("attempts"), (int, float)):
                item["attempts"] = int(reason["attempts"])
            failures.append(item)
        status["failures"] = failures
        return status

    def cancel(self, plan_id: str, reason: str = "cancelled", slice: int = 2000) -> int:
        """Cancels every unfinished job of the machine's current plan ``plan_id``.

        Running jobs learn it at their next heartbeat. A plan already ready or cancelled is left as
        it is. ``reason`` is stored (first 1000 bytes) on each cancelled job and as the status hash's
        ``cancel_reason``.

        The plan is cancelled by the first call; its job records follow in slices of ``slice`` jobs,
        one script call each, so that a big plan never holds Redis for long. A cancel interrupted
        midway is finished by the next one.

        :returns: how many jobs were cancelled (0 when the plan had already settled).
        :raises BadRequest: ``plan_id`` is not the machine's current plan.
        """
        cancelled = 0
        while True:
            reply = self.call("cancel", plan_id, reason, str(max(1, int(slice))))
            cancelled += int(reply[1])
            if len(reply) < 3 or int(reply[2]) != 1:
                return cancelled

    def retire(self, force: bool = False) -> int:
        """Removes every key of the machine (stop its workers first), and its entry in the fleet
        stream's index (``fleet.lua forget``, a call of its own: another cluster slot).

        :returns: how many of the machine's keys existed.
        :raises MachineBusy: the machine's plan is pending or running and ``force`` is false.
        """
        _, deleted = self.call("retire", "1" if force else "0")
        stream = f"{self.prefix}:fleet:events"
        fleet = self.redis.register_script((SCRIPT_PATH.parent / "fleet.lua").read_text(encoding="utf-8"))
        fleet(keys=[stream, f"{{{stream}}}:announced:{self.machine_id}"], args=["forget", self.machine_id])
        return int(deleted)

    def wait(self, timeout_s: float, poll_s: float = 0.2) -> Dict[str, Any]:
        """Polls :meth:`status` until the machine is ready, failed or cancelled, or ``timeout_s`` passed.

        Returns the last status read; on timeout its ``state`` is not one of ready/failed/cancelled.
        Like ``provision status --wait`` it returns at the flip to ``failed``, even though jobs that do
        not depend on the dead one may still be running.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        status = self.status()
        while status["state"] not in SETTLED_STATES and time.monotonic() < deadline:
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            status = self.status()
        return status


def _dependencies_first(jobs: List[Any]) -> List[Any]:
    """The jobs with every job after the jobs it depends on, otherwise in plan order (unchanged for a
    plan already in that order). A cycle is left as it is: the script refuses it."""
    def deps(job: Any) -> List[Any]:
        value = job.get("depends_on") if isinstance(job, dict) else None
        return value if isinstance(value, list) else []
    by_id = {job.get("id"): job for job in jobs if isinstance(job, dict) and isinstance(job.get("id"), str)}
    seen: set = set()
    for job in jobs:
        if any(isinstance(dep, str) and dep in by_id and dep not in seen for dep in deps(job)):
            break
        seen.add(job.get("id") if isinstance(job, dict) else None)
    else:
        return jobs
    state: Dict[str, int] = {}  # 1 while its dependencies are being placed, 2 once placed
    ordered: List[Any] = []
    for root in jobs:
        rid = root.get("id") if isinstance(root, dict) else None
        if rid not in by_id:
            ordered.append(root)
            continue
        stack = [(root, iter(deps(root)))]
        if state.get(rid):
            continue
        state[rid] = 1
        while stack:
            job, pending = stack[-1]
            for dep in pending:
                target = by_id.get(dep) if isinstance(dep, str) else None
                if target is not None and not state.get(dep):
                    state[dep] = 1
                    stack.append((target, iter(deps(target))))
                    break
            else:
                stack.pop()
                state[job["id"]] = 2
                ordered.append(job)
    return ordered


def _slices(jobs: List[Any], slice_jobs: int, slice_bytes: int):
    """JSON arrays of at most ``slice_jobs`` jobs and about ``slice_bytes`` bytes (one job alone may
    be larger); a job with more than FAN_IN_DEPENDENCIES dependencies is a slice of its own."""
    part: List[str] = []
    size = 2
    for job in jobs:
        encoded = json.dumps(job, separators=(",", ":"))
        deps = job.get("depends_on") if isinstance(job, dict) else None
        fan_in = isinstance(deps, list) and len(deps) > FAN_IN_DEPENDENCIES
        if part and (fan_in or len(part) == slice_jobs or size + len(encoded) + 1 > slice_bytes):
            yield "[" + ",".join(part) + "]"
            part, size = [], 2
        if fan_in:
            yield "[" + encoded + "]"
            continue
        part.append(encoded)
        size += len(encoded.encode()) + 1
    if part:
        yield "[" + ",".join(part) + "]"


def _main(argv: Optional[List[str]] = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(description="Enqueue provision plans and read machine status over Redis.")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL"),
                        help="Redis URL: redis://[user:password@]host:port/db or unix:///path.sock (env REDIS_URL)")
    parser.add_argument("--machine", default=os.environ.get("MACHINE_ID"), help="the machine id (env MACHINE_ID)")
    parser.add_argument("--prefix", default=os.environ.get("PROVISION_PREFIX", "provision"),
                        help="key prefix (env PROVISION_PREFIX, default provision)")
    commands = parser.add_subparsers(dest="command", required=True)
    enqueue = commands.add_parser("enqueue", help="enqueue a plan file (or - for standard input)")
    enqueue.add_argument("plan")
    enqueue.add_argument("--replace", action="store_true", help="supersede a plan the machine is still running")
    commands.add_parser("status", help="print the machine status as JSON")
    wait = commands.add_parser("wait", help="wait until ready (exit 0), failed or cancelled (1), or timeout (2)")
    wait.add_argument("--timeout", type=float, default=3600.0, help="seconds (default 3600)")
    cancel = commands.add_parser("cancel", help="cancel the machine's current plan")
    cancel.add_argument("--reason", default="cancelled by an operator")
    retire = commands.add_parser("retire", help="remove every key of the machine (stop its workers first)")
    retire.add_argument("--force", action="store_true", help="even while its plan is pending or running")
    args = parser.parse_args(argv)
    if not args.redis or not args.machine:
        parser.error("say which Redis (--redis or REDIS_URL) and which machine (--machine or MACHINE_ID)")

    try:
        queue = ProvisionQueue(redis.Redis.from_url(args.redis, decode_responses=True), args.machine, args.prefix)
        if args.command == "enqueue":
            text = sys.stdin.read() if args.plan == "-" else Path(args.plan).read_text(encoding="utf-8")
            result = queue.enqueue(text, replace=args.replace)
            print(json.dumps(result))
            return 0
        if args.command == "status":
            print(json.dumps(queue.status(), sort_keys=True))
            return 0
        if args.command == "wait":
            status = queue.wait(args.timeout)
            print(json.dumps(status, sort_keys=True))
            if status["state"] == "ready":
                return 0
            return 1 if status["state"] in SETTLED_STATES else 2
        if args.command == "cancel":
            plan_id = queue.status().get("plan_id")
            if plan_id is None:
                print(f"provision_client: machine {args.machine} has no plan to cancel", file=sys.stderr)
                return 1
            print(json.dumps({"plan_id": plan_id, "cancelled": queue.cancel(plan_id, args.reason)}))
            return 0
        if args.command == "retire":
            print(json.dumps({"machine_id": args.machine, "deleted_keys": queue.retire(force=args.force)}))
            return 0
    except (ProvisionError, ValueError, OSError, redis.exceptions.RedisError) as error:
        print(f"provision_client: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(_main())
