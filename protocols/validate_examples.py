#!/usr/bin/env python3
"""Validates every example under protocols/examples against its JSON Schema (needs `jsonschema`).

- every schema under schemas/ must itself be a valid draft 2020-12 schema;
- examples/plan-*.json must pass schemas/plan.schema.json, and each job's payload must pass
  schemas/job-payloads/<kind>.schema.json when that file exists;
- examples/status-*.json must pass schemas/status.schema.json;
- examples/manifest-*.json, lockfile-*.json and analysis-*.json must pass manifest.schema.json,
  lockfile.schema.json and analysis.schema.json;
- examples/event-*.json must pass schemas/event.schema.json (a file may hold one event or a list);
- examples/machine-ready.json and examples/machine-failed.json must pass schemas/machine-ready.schema.json;
- examples/invalid/*.json are plans that queue.lua refuses (see examples/invalid/README.md). Those
  a schema can catch must fail plan.schema.json; those it cannot (cycles, missing or duplicate ids,
  another machine's plan) are listed, and must be listed in the README table.

Prints one line per check and finally "N passed, M failed"; exits 1 when anything failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent
SCHEMAS = ROOT / "schemas"
EXAMPLES = ROOT / "examples"

#: examples/invalid/<file> -> True when plan.schema.json must refuse it, False when only queue.lua can.
INVALID_PLANS: Dict[str, bool] = {
    "unknown-kind.json": True,
    "unknown-field.json": True,
    "max-attempts-zero.json": True,
    "cycle.json": False,
    "missing-dependency.json": False,
    "duplicate-id.json": False,
    "wrong-machine.json": False,
}


def load(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def errors_of(validator: Draft202012Validator, instance: Any) -> List[str]:
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))]


def main() -> int:
    passed, failed = 0, 0

    def check(name: str, ok: bool, detail: str = "") -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok      {name}")
        else:
            failed += 1
            print(f"FAILED  {name}{': ' + detail if detail else ''}")

    validators: Dict[str, Draft202012Validator] = {}
    for path in sorted(SCHEMAS.rglob("*.schema.json")):
        name = str(path.relative_to(ROOT))
        try:
            schema = load(path)
            Draft202012Validator.check_schema(schema)
            validators[str(path.relative_to(SCHEMAS))] = Draft202012Validator(schema)
            check(name, True)
        except Exception as error:  # a broken schema is a failure, not a crash
            check(name, False, str(error).splitlines()[0])

    plan = validators.get("plan.schema.json")
    status = validators.get("status.schema.json")
    event = validators.get("event.schema.json")
    announcement = validators.get("machine-ready.schema.json")
    if plan is None or status is None or event is None or announcement is None:
        print("plan, status, event and machine-ready schemas are required")
        return 1

    def validate(path: Path, validator: Draft202012Validator, extra: Callable[[Any], List[str]] = lambda _: []) -> None:
        try:
            instance = load(path)
        except ValueError as error:
            check(str(path.relative_to(ROOT)), False, f"not JSON: {error}")
            return
        problems = errors_of(validator, instance) + extra(instance)
        check(str(path.relative_to(ROOT)), not problems, "; ".join(problems))

    def payload_errors(instance: Any) -> List[str]:
        problems = []
        for job in instance.get("jobs", []) if isinstance(instance, dict) else []:
            kind_schema = validators.get(f"job-payloads/{job.get('kind')}.schema.json")
            if kind_schema is not None:
                problems += [f"job {job.get('id')} payload {p}" for p in errors_of(kind_schema, job.get("payload", {}))]
        return problems

    for path in sorted(EXAMPLES.glob("plan-*.json")):
        validate(path, plan, payload_errors)
    for path in sorted(EXAMPLES.glob("status-*.json")):
        validate(path, status)
    for prefix in ("manifest", "lockfile", "analysis"):
        validator = validators.get(f"{prefix}.schema.json")
        examples = sorted(EXAMPLES.glob(f"{prefix}-*.json"))
        if validator is None:
            if examples:
                check(f"schemas/{prefix}.schema.json", False, "missing, but examples use it")
            continue
        for path in examples:
            validate(path, validator)
    for path in sorted(EXAMPLES.glob("event-*.json")):
        instance = load(path)
        items = instance if isinstance(instance, list) else [instance]
        problems = [f"#{i}: {p}" for i, item in enumerate(items) for p in errors_of(event, item)]
        check(str(path.relative_to(ROOT)) + f" ({len(items)} events)", bool(items) and not problems, "; ".join(problems))
    for name in ("machine-ready.json", "machine-failed.json"):
        path = EXAMPLES / name
        if not path.exists():
            check(f"examples/{name}", False, "missing")
            continue
        validate(path, announcement)

    readme = (EXAMPLES / "invalid" / "README.md").read_text(encoding="utf-8")
    found = {path.name: path for path in sorted((EXAMPLES / "invalid").glob("*.json"))}
    for name in sorted(set(found) | set(INVALID_PLANS)):
        label = f"examples/invalid/{name}"
        if name not in found:
            check(label, False, "listed in validate_examples.py but missing")
            continue
        if name not in INVALID_PLANS:
            check(label, False, "not listed in INVALID_PLANS of validate_examples.py")
            continue
        if f"`{name}`" not in readme:
            check(label, False, "not listed in examples/invalid/README.md")
            continue
        problems = errors_of(plan, load(found[name]))
        if INVALID_PLANS[name]:
            check(f"{label} (refused by the schema: {problems[0] if problems else 'NOT refused'})", bool(problems))
        else:
            # A schema cannot see the graph; only queue.lua refuses these (sentence in the README).
            print(f"listed  {label} (only queue.lua can refuse it)")
            check(f"{label} (schema-valid apart from what only the script checks)", not problems, "; ".join(problems))

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
