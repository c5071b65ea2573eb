"""The table of bench/real-nodes/run: per node and way, installed / imported / classes / seconds,
the environment check and the totals, from the files a run left in RESULTS/PHASE-WAY/.

    python3 report.py RESULTS MANIFEST
"""
import json
import os
import re
import sys

RESULTS, MANIFEST = sys.argv[1], sys.argv[2]
manifest = json.load(open(MANIFEST))
NODES = [n["name"] for n in manifest["custom_nodes"]]


def read(path, default=""):
    try:
        with open(path, errors="replace") as file:
            return file.read()
    except OSError:
        return default


def import_check(folder):
    """Per node folder: (imported?, seconds, error) from ComfyUI's log; classes per node."""
    log = read(os.path.join(folder, "comfyui.log"))
    imported, errors = {}, {}
    in_times = False
    for line in log.splitlines():
        if "Import times for custom nodes:" in line:
            in_times = True
            continue
        match = re.match(r"^\s*([\d.]+) seconds( \(IMPORT FAILED\))?: (.+?)\s*$", line)
        if in_times and match:
            imported[os.path.basename(match.group(3))] = match.group(2) is None
            continue
        if in_times and line.strip() == "":
            in_times = False
        match = re.search(r"Cannot import (.+?) module for custom nodes: (.*)$", line)
        if match:
            errors[os.path.basename(match.group(1))] = match.group(2)[:160]
    try:
        classes = json.load(open(os.path.join(folder, "classes.json"))).get("classes", {})
    except (OSError, ValueError):
        classes = None
    return imported, errors, classes


def seed_rows(folder):
    rows = {}
    for line in read(os.path.join(folder, "seed-nodes.tsv")).splitlines():
        name, clone, pip, script, seconds = line.split("\t")
        ok = clone == "0" and pip in ("0", "-") and script in ("0", "-")
        why = [] if ok else [f"{what} exit {rc}" for what, rc in (("clone", clone), ("pip", pip), ("install.py", script)) if rc not in ("0", "-")]
        rows[name] = {"installed": ok, "why": ", ".join(why), "seconds": float(seconds)}
    return rows


def provision_rows(folder):
    rows = {}
    try:
        status = json.load(open(os.path.join(folder, "status.json")))
    except (OSError, ValueError):
        status = {}
    jobs = {job["job"]: job for job in status.get("jobs", [])}
    # Seconds per job from the step events: first event to last event of the job's span.
    spans = {}
    for line in read(os.path.join(folder, "events.jsonl")).splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        span, stamp = event.get("span_id"), event.get("timestamp")
        if span and stamp:
            first, last = spans.get(span, (stamp, stamp))
            spans[span] = (min(first, stamp), max(last, stamp))
    seconds = {span: (last - first) / 1e9 for span, (first, last) in spans.items()}
    scripts = jobs.get("install-scripts", {})
    script_errors = json.dumps(scripts.get("result", {}))
    for name in ["ComfyUI"] + NODES:
        job = jobs.get("comfyui" if name == "ComfyUI" else f"node:{name}", {})
        ok = job.get("state") == "succeeded"
        why = "" if ok else f"{job.get('state', 'no job')}: {job.get('error_type', '')} {job.get('error', '')[:120]}".strip()
        rows[name] = {"installed": ok, "why": why, "seconds": seconds.get(job.get("job"), float("nan"))}
        if name != "ComfyUI" and name in script_errors and scripts.get("result"):
            rows[name]["script"] = True
    shared = {j: (jobs.get(j, {}).get("state"), seconds.get(j)) for j in ("python-deps", "install-scripts", "verify")}
    return rows, jobs, shared


def show_phase(phase):
    ways = [w for w in ("seed", "provision") if os.path.isdir(os.path.join(RESULTS, f"{phase}-{w}"))]
    if not ways:
        return None
    data = {}
    for way in ways:
        folder = os.path.join(RESULTS, f"{phase}-{way}")
        imported, errors, classes = import_check(folder)
        if way == "seed":
            rows, jobs, shared = seed_rows(folder), {}, {}
        else:
            rows, jobs, shared = provision_rows(folder)
        data[way] = dict(folder=folder, imported=imported, errors=errors, classes=classes, rows=rows, jobs=jobs, shared=shared,
                         total=float(read(os.path.join(folder, "total-seconds"), "nan") or "nan"))
    print(f"\n## {phase}\n")
    header = "| node |" + "".join(f" {w}: installed | imported | classes | s |" for w in ways)
    print(header)
    print("|---|" + "---|---|---:|---:|" * len(ways))
    for name in NODES:
        cells = []
        for way in ways:
            d = data[way]
            row = d["rows"].get(name, {})
            inst = "yes" if row.get("installed") else ("no" if row else "?")
            imp = d["imported"].get(name)
            imp = "yes" if imp else ("**FAILED**" if imp is False else "not listed")
            cls = d["classes"].get(f"custom_nodes.{name}", 0) if d["classes"] is not None else "?"
            sec = row.get("seconds")
            cells.append(f" {inst} | {imp} | {cls} | {sec:.1f} |" if isinstance(sec, float) and sec == sec else f" {inst} | {imp} | {cls} | - |")
        print(f"| {name} |" + "".join(cells))
    for way in ways:
        d = data[way]
        extra = [n for n, ok in d["imported"].items() if n not in NODES]
        core = sum(v for k, v in (d["classes"] or {}).items() if not k.startswith("custom_nodes."))
        print(f"\n{way}: ComfyUI exit {read(os.path.join(d['folder'], 'comfyui-rc')).strip()}, core classes {core}"
              + (f", other folders in custom_nodes: {extra}" if extra else ""))
        if way == "seed":
            print(f"  ComfyUI clone + requirements: {d['rows'].get('ComfyUI', {}).get('seconds', float('nan')):.1f} s")
        else:
            print(f"  provision up exit {read(os.path.join(d['folder'], 'provision-rc')).strip()}; comfyui job "
                  f"{d['rows'].get('ComfyUI', {}).get('seconds', float('nan')):.1f} s; "
                  + "; ".join(f"{j}: {s} {t:.1f} s" if t is not None else f"{j}: {s}" for j, (s, t) in d["shared"].items()))
        for name in NODES:
            row = d["rows"].get(name, {})
            if row and not row.get("installed"):
                print(f"  {name} not installed: {row.get('why')}")
            if d["imported"].get(name) is False:
                print(f"  {name} import failed: {d['errors'].get(name, '(no error line)')}")
        check = read(os.path.join(d["folder"], "pip-check.txt")).strip().splitlines()
        print(f"  pip check: {'clean' if check and check[0].startswith('No broken') else f'{len(check)} lines'}")
        for line in check[:12]:
            if not line.startswith("No broken"):
                print(f"    {line}")
        last = lambda text: (text.strip().splitlines() or ["?"])[-1]
        print(f"  torch before {last(read(os.path.join(d['folder'], 'torch-before')))}, after {last(read(os.path.join(d['folder'], 'torch-after')))}")
        freeze = [l for l in read(os.path.join(d["folder"], "pip-freeze.txt")).splitlines() if l.strip()]
        notable = [l for l in freeze if re.match(r"(?i)^(numpy|opencv[-_a-z]*|onnxruntime[-_a-z]*)[=@ ]", l)]
        print(f"  packages (pip freeze --all): {len(freeze)}; {', '.join(notable)}")
        if way == "provision":
            deps = d["jobs"].get("python-deps", {}).get("result", {})
            for choice in deps.get("exclusive", []):
                print(f"  python-deps kept {choice.get('kept')}, dropped {', '.join(choice.get('dropped', []))} (asked: {'; '.join(choice.get('wanted_by', []))})")
            for script in d["jobs"].get("install-scripts", {}).get("result", {}).get("scripts", []):
                if script.get("error_lines"):
                    print(f"  install.py of {script.get('name')}: {len(script['error_lines'])} error lines, last: {script['error_lines'][-1][:140]}")
    return {w: data[w]["total"] for w in ways}


totals = {}
for phase in ("cold", "warm"):
    result = show_phase(phase)
    if result:
        totals[phase] = result
print("\n## totals (seconds)\n")
print("| phase | seed | provision | seed / provision | target |")
print("|---|---:|---:|---:|---|")
for phase, ways in totals.items():
    seed, prov = ways.get("seed", float("nan")), ways.get("provision", float("nan"))
    ratio = seed / prov if prov == prov and prov else float("nan")
    print(f"| {phase} | {seed:.1f} | {prov:.1f} | {ratio:.1f}x | ≥ {3 if phase == 'cold' else 6}x |")
