"""Private loopback redis-servers for the fleet bench: one server, or a Redis Cluster of N masters.

Shared by measure.py, script_cost.py and fleet.py. Every server is memory-only (`--save ''
--appendonly no`), listens on 127.0.0.1 only, on a free port, in a temporary directory; `stop()`
ends the processes this module started and nothing else.
"""
import os
import socket
import subprocess
import tempfile
import time

import redis


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_cluster_port():
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 <= 65535 and _port_is_free(port + 10000):
            return port
    raise SystemExit("found no free loopback port with a free cluster bus port (port + 10000)")


def _wait_ping(port, process, timeout=10.0):
    r = redis.Redis(port=port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r.ping()
            return r
        except redis.ConnectionError:
            if process.poll() is not None:
                raise SystemExit(f"redis-server on port {port} exited with status {process.returncode}")
            time.sleep(0.05)
    raise SystemExit(f"redis-server on port {port} did not answer PING within {timeout:.0f} s")


class Server:
    """One redis-server process on a free loopback port."""

    def __init__(self, *extra, workdir=None, port=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="bench-redis-")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, *map(str, extra)], stdout=subprocess.DEVNULL)
        self.client = _wait_ping(self.port, self.process)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self):
        return self.process.pid

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _cluster_ok(client):
    info = client.execute_command("CLUSTER", "INFO")
    if isinstance(info, dict):
        return str(info.get("cluster_state")) == "ok"
    return b"cluster_state:ok" in (info if isinstance(info, bytes) else str(info).encode())


class Cluster:
    """N cluster-enabled masters on loopback, joined with `redis-cli --cluster create`, no replicas."""

    def __init__(self, masters=3):
        self.dir = tempfile.mkdtemp(prefix="bench-cluster-")
        self.nodes = []
        try:
            for i in range(masters):
                self.nodes.append(Server("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{i}.conf",
                                         "--cluster-node-timeout", "5000", "--maxclients", 15000,
                                         workdir=os.path.join(self.dir, str(i)), port=free_cluster_port()))
            out = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                                  "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"redis-cli --cluster create failed: {out.stdout[-400:]} {out.stderr[-400:]}")
            deadline = time.monotonic() + 30
            while not all(_cluster_ok(n.client) for n in self.nodes):
                if time.monotonic() > deadline:
                    raise SystemExit("the cluster did not reach cluster_state:ok within 30 s")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node_for_slot(self, slot):
        """The Server that serves `slot` (the slot map of the first node)."""
        by_port = {n.port: n for n in self.nodes}
        for start, end, master, *_ in self.nodes[0].client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return by_port[int(master[1])]
        raise SystemExit(f"no node serves slot {slot}")

    def stop(self):
        for n in self.nodes:
            n.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
