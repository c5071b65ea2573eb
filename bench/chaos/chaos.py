#!/usr/bin/env python3
"""Chaos bench: one full plan run twice — once undisturbed, once while worker processes are killed,
Redis restarts and a worker is frozen past its lease — then the machine is checked (see README.md).

    chaos.py --bin PROVISION [--short] [--nodes N] [--kills K] [--big-mib M] [--work DIR] [--keep]

Exit status: 0 when both runs ended `ready` and every invariant held, 1 otherwise.
"""
import argparse
import ctypes
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MACHINE = "chaos"
GIT_ENV = {"GIT_AUTHOR_NAME": "chaos", "GIT_AUTHOR_EMAIL": "chaos@provision.invalid",
           "GIT_COMMITTER_NAME": "chaos", "GIT_COMMITTER_EMAIL": "chaos@provision.invalid"}


def log(message):
    print(f"chaos: {message}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------------------------ fixtures

def make_models(folder, sizes):
    """Random files (cached across runs beside a .sha256 sidecar): [(name, directory, size, sha256)]."""
    os.makedirs(folder, exist_ok=True)
    directories = ["checkpoints", "vae", "loras", "controlnet", "upscale_models", "clip", "unet", "embeddings"]
    models = []
    for i, size in enumerate(sizes):
        name = f"chaos-model-{i}-{size}.safetensors"
        path = os.path.join(folder, name)
        sidecar = path + ".sha256"
        if os.path.exists(sidecar) and os.path.getsize(path) == size:
            with open(sidecar) as f:
                sha = f.read().strip()
        else:
            h = hashlib.sha256()
            with open(path + ".tmp", "wb") as f:
                left = size
                while left:
                    block = os.urandom(min(left, 8 << 20))
                    h.update(block)
                    f.write(block)
                    left -= len(block)
            os.replace(path + ".tmp", path)
            sha = h.hexdigest()
            with open(sidecar, "w") as f:
                f.write(sha)
        models.append((name, directories[i % len(directories)], size, sha))
    return models


def git(*args, cwd=None):
    env = dict(os.environ, **GIT_ENV)
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(folder, name, files, tag=None):
    """A bare repository with one commit of files; returns (file:// URL, commit)."""
    work = os.path.join(folder, "work-" + name)
    bare = os.path.join(folder, name + ".git")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(bare, ignore_errors=True)
    for path, content in files.items():
        full = os.path.join(work, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(content)
    git("init", "-q", "-b", "main", work)
    git("-C", work, "add", "-A")
    git("-C", work, "commit", "-qm", f"{name} (chaos)")
    if tag:
        git("-C", work, "tag", tag)
    commit = git("-C", work, "rev-parse", "HEAD")
    git("clone", "-q", "--bare", work, bare)
    shutil.rmtree(work)
    return "file://" + bare, commit


def stand_in_comfyui():
    """The demo's ComfyUI stand-in (Tests/fixtures/fake_comfyui.py, what `provision demo` runs)."""
    with open(os.path.join(ROOT, "Tests/fixtures/fake_comfyui.py"), encoding="utf-8") as f:
        return f.read()


def make_repos(folder, nodes, counter):
    """ComfyUI (the demo's stand-in) and N custom nodes whose install.py appends its name to counter."""
    os.makedirs(folder, exist_ok=True)
    core_url, core_commit = make_repo(folder, "ComfyUI", {
        "main.py": stand_in_comfyui(),
        "requirements.txt": "# no network: ComfyUI's requirements are empty here\n",
        "custom_nodes/.keep": "", "models/checkpoints/put_checkpoints_here": ""}, tag="v0.3.0")
    result = []
    for i in range(nodes):
        name = f"chaos-node-{i:02d}"
        cls = f"ChaosNode{i}"
        files = {
            "__init__.py": f"class {cls}:\n    pass\n\nNODE_CLASS_MAPPINGS = {{\"{cls}\": {cls}}}\n",
            # The side effect the bench counts: one line per completed run of this script.
            "install.py": ("import os\n"
                           f"fd = os.open({counter!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\n"
                           f"os.write(fd, b'{name}\\n')\nos.fsync(fd)\nos.close(fd)\n"),
            "README.md": f"# {name}\n",
        }
        url, commit = make_repo(folder, name, files)
        result.append((name, url, commit))
    return (core_url, core_commit), result


# ------------------------------------------------------------------------------------------- servers

class Redis:
    """redis-server with AOF (everysec), on a loopback port and a unix socket, restartable."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.port = free_port()
        self.socket = os.path.join(folder, "redis.sock")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", self.socket, "--unixsocketperm", "700",
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", self.folder, "--logfile", os.path.join(self.folder, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(400):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("chaos: redis-server did not start")

    def restart(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait()
        self.start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()

    @property
    def tcp_url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self):
        return f"unix://{self.socket}"


class Origin:
    """Tests/origin/origin.py: Range, faults from the query string, byte counts."""

    def __init__(self, root, python):
        self.root = root
        port_file = os.path.join(tempfile.mkdtemp(), "port")
        self.proc = subprocess.Popen([python, os.path.join(ROOT, "Tests/origin/origin.py"), "--root", root, "--port-file", port_file],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(port_file):
                self.port = int(open(port_file).read())
                return
            time.sleep(0.05)
        raise SystemExit("chaos: the origin did not start")

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
            return r.read()

    def stats(self):
        return json.loads(self.get("/_stats"))

    def reset(self):
        self.get("/_reset")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Renames:
    """Counts the files and folders moved into place (inotify IN_MOVED_TO) in watched folders: the
    final rename of a download, a node's staged clone moved into custom_nodes. A folder that does
    not exist yet is watched as soon as it appears (custom_nodes comes with ComfyUI's checkout, well
    before the first node job can run)."""

    IN_MOVED_TO = 0x80

    def __init__(self):
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(0)
        self.paths = {}
        self.pending = []
        self.counts = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        threading.Thread(target=self.read, daemon=True).start()
        threading.Thread(target=self.poll, daemon=True).start()

    def watch(self, path):
        with self.lock:
            self.pending.append(path)
        self.add_pending()

    def add_pending(self):
        with self.lock:
            for path in list(self.pending):
                wd = self.libc.inotify_add_watch(self.fd, path.encode(), self.IN_MOVED_TO)
                if wd >= 0:
                    self.paths[wd] = path
                    self.pending.remove(path)

    def poll(self):
        while not self.done.wait(0.005):
            if self.pending:
                self.add_pending()

    def unwatched(self):
        with self.lock:
            return list(self.pending)

    def read(self):
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            offset = 0
            while offset + 16 <= len(data):
                wd, mask, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16: offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                with self.lock:
                    folder = self.paths.get(wd)
                    if folder is not None and mask & self.IN_MOVED_TO:
                        full = os.path.join(folder, name)
                        self.counts[full] = self.counts.get(full, 0) + 1


# --------------------------------------------------------------------------------------------- a run

def children(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def provision_json(binary, args, env, timeout=20):
    try:
        p = subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if p.returncode not in (0, 1, 2):
        return None
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


def run_once(cfg, label, chaos):
    """One run of the plan on a fresh Redis and workspace; returns a dict of what happened."""
    work = os.path.join(cfg.work, label)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    workspace = os.path.join(work, "workspace")
    models_root = os.path.join(work, "models")
    os.makedirs(workspace)
    open(cfg.counter, "w").close()
    renames = Renames()
    renames.watch(os.path.join(workspace, "ComfyUI", "custom_nodes"))
    for _, directory, _, _ in cfg.models:
        os.makedirs(os.path.join(models_root, directory), exist_ok=True)
        renames.watch(os.path.join(models_root, directory))
    redis = Redis(os.path.join(work, "redis"))
    cfg.origin.reset()

    plan = json.loads(json.dumps(cfg.plan))
    plan["plan_id"] = f"chaos-{label}-{int(time.time() * 1000)}"
    env = dict(os.environ, PROVISION_STATE_DIR=os.path.join(work, "state"), PROVISION_LOG_LEVEL="warning")
    env.pop("REDIS_URL", None)
    plan_file = os.path.join(work, "plan.json")
    with open(plan_file, "w") as f:
        json.dump(plan, f)

    common = ["--machine", MACHINE, "--workspace", workspace, "--models-root", models_root, "--allow-local-sources",
              "--allow-loopback-origins", "--health-port", "0", "--concurrency", str(cfg.concurrency), "--drain-timeout", "5"]
    if cfg.uv:
        common += ["--uv", cfg.uv]
    pools = []
    for name, url, processes in (("tcp", redis.tcp_url, cfg.tcp_processes), ("unix", redis.unix_url, cfg.unix_processes)):
        logf = open(os.path.join(work, f"pool-{name}.log"), "ab")
        pools.append(subprocess.Popen([cfg.bin, "worker", "--redis", url, "--processes", str(processes), *common],
                                      stdout=logf, stderr=logf, env=env, start_new_session=True))

    began = time.monotonic()
    out = subprocess.run([cfg.bin, "enqueue", "--redis", redis.tcp_url, "--machine", MACHINE, "--plan", plan_file],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"chaos: enqueue failed: {out.stderr.strip()}")

    events = []
    settled = threading.Event()
    stopped = set()

    def workers():
        return [c for p in pools for c in children(p.pid) if c not in stopped]

    def driver():
        rng = random.Random(cfg.seed)
        restart_at = {max(1, cfg.kills // 3): ("tcp", signal.SIGTERM), max(2, (2 * cfg.kills) // 3): ("unix", signal.SIGTERM)}
        freeze_at = max(1, cfg.kills // 2)
        kills = 0
        while kills < cfg.kills and not settled.is_set():
            if settled.wait(rng.uniform(cfg.kill_every * 0.5, cfg.kill_every * 1.5)):
                break
            pids = workers()
            if not pids:
                continue
            victim = rng.choice(pids)
            try:
                os.kill(victim, signal.SIGKILL)
                kills += 1
                events.append((round(time.monotonic() - began, 2), f"kill -9 worker {victim}"))
            except ProcessLookupError:
                continue
            if kills in restart_at:
                how, sig = restart_at.pop(kills)
                redis.restart(sig)
                events.append((round(time.monotonic() - began, 2), f"redis restarted (SIGTERM, AOF everysec; the {how} pool's turn to reconnect)"))
            if kills == freeze_at:
                threading.Thread(target=freeze, args=(rng.random(), victim), daemon=True).start()
        events.append((round(time.monotonic() - began, 2), f"driver done: {kills} kills"))
        result["kills"] = kills

    def freeze(r, killed):
        time.sleep(0.5)  # the supervisor has started the killed worker's replacement by now
        pids = [p for p in workers() if p != killed]
        if not pids:
            return
        victim = pids[int(r * len(pids))]
        stopped.add(victim)
        os.kill(victim, signal.SIGSTOP)
        events.append((round(time.monotonic() - began, 2), f"SIGSTOP worker {victim} for {cfg.freeze:.0f} s (lease {cfg.lease_ms} ms)"))
        time.sleep(cfg.freeze)
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
        stopped.discard(victim)
        result["frozen"] = True
        events.append((round(time.monotonic() - began, 2), f"SIGCONT worker {victim}"))

    result = {"kills": 0, "frozen": False}
    thread = threading.Thread(target=driver, daemon=True) if chaos else None
    if thread:
        thread.start()
    state, status = None, None
    deadline = time.monotonic() + cfg.timeout
    while time.monotonic() < deadline:
        status = provision_json(cfg.bin, ["status", "--redis", redis.tcp_url, "--machine", MACHINE, "--json"], env)
        state = status.get("state") if status else state
        if state in ("ready", "failed", "cancelled"):
            break
        time.sleep(0.25)
    seconds = time.monotonic() - began
    settled.set()
    if thread:
        thread.join(timeout=cfg.freeze + 10)
    jobs = provision_json(cfg.bin, ["status", "--redis", redis.tcp_url, "--machine", MACHINE, "--json", "--jobs"], env) or {}
    for p in pools:
        p.send_signal(signal.SIGTERM)
    for p in pools:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    redis.stop()
    stats = cfg.origin.stats()
    result.update({"label": label, "state": state, "seconds": seconds, "status": status, "jobs": jobs.get("jobs", []),
                   "bytes_sent": stats["bytes_sent"], "events": events, "workspace": workspace, "models_root": models_root,
                   "renames": dict(renames.counts), "unwatched": renames.unwatched(), "work": work})
    renames.done.set()
    result["problems"] = check(cfg, result)
    return result


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(8 << 20)
            if not block:
                return h.hexdigest()
            h.update(block)


def check(cfg, r):
    """Every invariant the run must hold; returns the ones broken."""
    problems = []
    if r["state"] != "ready":
        failures = (r["status"] or {}).get("failures", [])
        problems.append(f"ended {r['state']!r}, not ready: {json.dumps(failures)[:800]}")
    counts = (r["status"] or {}).get("counts", {})
    total = len(cfg.plan["jobs"])
    if counts.get("total") != total or counts.get("succeeded") != total:
        problems.append(f"counts: total {counts.get('total')}, succeeded {counts.get('succeeded')}, expected {total} each")
    for key in ("failed", "dead", "cancelled", "active", "ready", "delayed", "waiting"):
        if counts.get(key, 0) != 0:
            problems.append(f"counts: {key} is {counts[key]}, expected 0")
    # Models: right bytes, nothing left beside them.
    expected_files = set()
    for name, directory, size, sha in cfg.models:
        path = os.path.join(r["models_root"], directory, name)
        expected_files.add(path)
        if not os.path.isfile(path):
            problems.append(f"model {name} missing")
            continue
        if os.path.getsize(path) != size or sha256_file(path) != sha:
            problems.append(f"model {name}: wrong size or SHA-256")
        moved = r["renames"].get(path, 0)
        if moved != 1:
            problems.append(f"model {name} was moved into place {moved} times (expected once)")
    for folder, _, files in os.walk(r["models_root"]):
        for f in files:
            full = os.path.join(folder, f)
            if full not in expected_files:
                problems.append(f"left over in the models folder: {os.path.relpath(full, r['models_root'])}")
    # ComfyUI and nodes at their commits, each moved into place once, each install.py run once.
    comfy = os.path.join(r["workspace"], "ComfyUI")
    if head(comfy) != cfg.core[1]:
        problems.append(f"ComfyUI at {head(comfy)}, expected {cfg.core[1]}")
    custom = os.path.join(comfy, "custom_nodes")
    expected_nodes = {name for name, _, _ in cfg.nodes}
    present = set(os.listdir(custom)) if os.path.isdir(custom) else set()
    extra = present - expected_nodes - {".keep"}
    if r["unwatched"]:
        problems.append(f"never watched (the bench's own failure): {r['unwatched']}")
    if extra:
        problems.append(f"left over in custom_nodes: {sorted(extra)}")
    with open(cfg.counter) as f:
        ran = f.read().split()
    for name, _, commit in cfg.nodes:
        path = os.path.join(custom, name)
        if head(path) != commit:
            problems.append(f"node {name} at {head(path)}, expected {commit}")
        if r["renames"].get(path, 0) != 1:
            problems.append(f"node {name} was moved into place {r['renames'].get(path, 0)} times (expected once)")
        if ran.count(name) != 1:
            problems.append(("install-py-rerun" if ran.count(name) > 1 else None,
                             f"install.py of {name} ran to completion {ran.count(name)} times (expected once)"))
    return [p if isinstance(p, tuple) else (None, p) for p in problems]


def head(path):
    try:
        return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def reruns(result):
    return sum(max(0, int(j.get("attempts", 1)) - 1) for j in result["jobs"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("PROVISION_BIN") or os.path.join(ROOT, ".build/debug/provision"))
    parser.add_argument("--short", action="store_true", help="the CI form: 6 nodes, small files, 6 kills")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--kills", type=int)
    parser.add_argument("--kill-every", type=float, help="mean seconds between kills")
    parser.add_argument("--big-mib", type=int, help="size of the largest model file")
    parser.add_argument("--lease-ms", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--work", help="where fixtures and runs go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--no-clean-run", action="store_true", help="skip the undisturbed run")
    parser.add_argument("--known-open", action="append", default=[], metavar="TAG",
                        help="report this broken invariant without failing (install-py-rerun: see README)")
    cfg = parser.parse_args()
    short = cfg.short
    cfg.nodes = cfg.nodes or (6 if short else 20)
    cfg.kills = cfg.kills if cfg.kills is not None else (6 if short else 20)
    cfg.kill_every = cfg.kill_every or 1.0
    cfg.big_mib = cfg.big_mib or (48 if short else 2048)
    cfg.lease_ms = cfg.lease_ms or (3000 if short else 5000)
    cfg.freeze = cfg.lease_ms / 1000 + 3
    cfg.concurrency = 3
    cfg.tcp_processes, cfg.unix_processes = (2, 1)
    own_work = cfg.work is None
    cfg.work = cfg.work or tempfile.mkdtemp(prefix="provision-chaos-")
    os.makedirs(cfg.work, exist_ok=True)
    venv_uv = os.path.join(ROOT, ".build/test-venv/bin/uv")
    cfg.uv = os.environ.get("PROVISION_UV") or (venv_uv if os.path.exists(venv_uv) else shutil.which("uv"))
    python = os.environ.get("PROVISION_PYTHON") or sys.executable

    mib = 1 << 20
    small = [1, 2, 3, 4, 5, 6, 8, 10, 12] if short else [16, 24, 32, 48, 64, 96, 128, 160, 256]
    sizes = [cfg.big_mib * mib + 12345] + [s * mib + 4099 * i for i, s in enumerate(small, 1)]
    log(f"fixtures in {cfg.work}: {len(sizes)} model files ({sum(sizes) / mib:.0f} MiB), ComfyUI and {cfg.nodes} custom nodes")
    cfg.models = make_models(os.path.join(cfg.work, "origin"), sizes)
    cfg.counter = os.path.join(cfg.work, "install-py-runs.txt")
    cfg.core, cfg.nodes = make_repos(os.path.join(cfg.work, "repos"), cfg.nodes, cfg.counter)
    cfg.origin = Origin(os.path.join(cfg.work, "origin"), python)
    faults = ["drop=300000&times=3", "fail=500&times=2", "fail=429&retry_after=1&times=2", f"hang={2 if short else 35}&times=1",
              "drop=1000000&times=2", "fail=503&times=1", "throttle=20000000", "", "drop=65536&times=1", "fail=500&times=1"]
    manifest = {
        "comfyui": {"url": cfg.core[0], "tag": "v0.3.0"},
        "custom_nodes": [{"name": name, "url": url, "commit": commit} for name, url, commit in cfg.nodes],
        "models": [{"url": f"http://127.0.0.1:{cfg.origin.port}/files/{name}" + (f"?{faults[i % len(faults)]}" if faults[i % len(faults)] else ""),
                    "directory": directory, "filename": name, "sha256": sha, "size": size}
                   for i, (name, directory, size, sha) in enumerate(cfg.models)],
    }
    manifest_file = os.path.join(cfg.work, "manifest.json")
    with open(manifest_file, "w") as f:
        json.dump(manifest, f, indent=1)
    out = subprocess.run([cfg.bin, "plan", manifest_file, "--machine", MACHINE], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"chaos: provision plan failed: {out.stderr.strip()}")
    cfg.plan = json.loads(out.stdout)
    # Leases short enough that a frozen or killed worker's jobs come back within the run, and attempts
    # enough for a job to survive every kill landing on it.
    for job in cfg.plan["jobs"]:
        job["lease_ms"] = cfg.lease_ms
        job["max_attempts"] = max(job.get("max_attempts", 3), cfg.kills + 5)
        job["backoff_ms"] = 200
        job["backoff_max_ms"] = 2000
    log(f"plan: {len(cfg.plan['jobs'])} jobs; origin on port {cfg.origin.port} (drops, 500/503, 429, a stall, a throttle)")

    failed = False
    try:
        clean = None
        if not cfg.no_clean_run:
            log("clean run (no chaos)…")
            clean = run_once(cfg, "clean", chaos=False)
            shutil.rmtree(clean["models_root"], ignore_errors=True)
            report(clean, cfg.known_open)
            failed |= bool(broken(clean, cfg.known_open))
        log(f"chaos run: {cfg.kills} kills (every ~{cfg.kill_every} s), 2 Redis restarts, one worker frozen {cfg.freeze:.0f} s…")
        chaos = run_once(cfg, "chaos", chaos=True)
        report(chaos, cfg.known_open)
        for t, what in chaos["events"]:
            print(f"    {t:7.2f} s  {what}")
        failed |= bool(broken(chaos, cfg.known_open))
        if chaos["kills"] < cfg.kills:
            log(f"note: the machine settled after {chaos['kills']} of {cfg.kills} kills")
        total = sum(s for _, _, s, _ in cfg.models)
        print()
        print(f"{'':22}{'clean':>14}{'chaos':>14}")
        c = clean or {"seconds": float("nan"), "bytes_sent": 0, "jobs": []}
        print(f"{'time to ready':22}{c['seconds']:>12.1f} s{chaos['seconds']:>12.1f} s")
        print(f"{'bytes fetched twice':22}{(c['bytes_sent'] - total) / mib:>10.1f} MiB{(chaos['bytes_sent'] - total) / mib:>10.1f} MiB")
        print(f"{'jobs re-run':22}{reruns(c):>14}{reruns(chaos):>14}")
        def verdict(r):
            return "-" if r is None else "BROKEN" if broken(r, cfg.known_open) else "held" if not r["problems"] else "known open"
        print(f"{'invariants':22}{verdict(clean):>14}{verdict(chaos):>14}")
    finally:
        cfg.origin.stop()
        if own_work and not cfg.keep:
            shutil.rmtree(cfg.work, ignore_errors=True)
    sys.exit(1 if failed else 0)


def report(r, known_open=()):
    log(f"{r['label']}: {r['state']} in {r['seconds']:.1f} s, {r['bytes_sent'] / (1 << 20):.1f} MiB sent by the origin, {reruns(r)} job attempts re-run")
    for tag, text in r["problems"]:
        print(f"    {'KNOWN OPEN (' + tag + ')' if tag in known_open else 'BROKEN'}: {text}")


def broken(r, known_open):
    return [text for tag, text in r["problems"] if tag not in known_open]


if __name__ == "__main__":
    main()
