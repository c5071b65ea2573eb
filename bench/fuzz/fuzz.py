#!/usr/bin/env python3
"""A mutation fuzzer for provision's outside inputs (see bench/fuzz/README.md).

    fuzz.py --bin PROVISION [--seed S] [--cases N] [--kinds files,resp,http] [--jobs J] [--out DIR]

Three kinds of cases, each one run of the `provision` binary:
  files  a plan, manifest, lockfile, config_nodes.json or workflow from protocols/examples/ and the
         test fixtures, mutated (byte flips, truncation, type swaps, huge numbers, deep nesting,
         duplicate keys, long strings, `..` paths, odd URLs), given to `plan`, `analyze`, `export`,
         `verify` and `enqueue` (a real redis-server on loopback)
  resp   `status`, `enqueue`, `cancel`, `events` through a loopback proxy in front of a real
         redis-server that replaces the K-th reply with a hostile one (truncated, wrong type, giant or
         negative lengths, deep nesting, a disconnect mid-reply)
  http   `provision download` from a loopback server whose responses are hostile (wrong
         Content-Range, negative or huge sizes, 100 KB headers, garbage status lines, bodies cut short
         or too long, stalls, odd redirects)

A case passes when provision neither crashes (a signal, or exit >= 128) nor outlives its timeout,
exits with a documented code (0, 1, 2, 3, or 64 for a usage error), says why in a few short lines on
stderr without a Swift dump or stack trace, and, for a download that exits 0, placed exactly the
served bytes. Failing inputs are kept in --out with a line to reproduce them. Exit status: 0 when
every case passed, 1 otherwise.
"""
import argparse
import base64
import concurrent.futures
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCUMENTED_EXITS = {0, 1, 2, 3, 64}
# What a refusal must not look like: a Swift value dumped into the message, a runtime trap, a trace.
DUMP_PATTERNS = [
    re.compile(r"Fatal error|Swift runtime failure|Current stack trace|Stack dump|backtrace|#\d+ 0x[0-9a-f]+", re.I),
    re.compile(r"\b(RedisReply|RedisError|JobFailure|DecodingError|EncodingError|CocoaError|POSIXError|URLError|NSError|ValidationError|PlanError|QueueError|DownloadError)\b"),
    re.compile(r"\b[A-Z][A-Za-z]+\.[a-z][A-Za-z]*\((\"|[a-z_]+:)"),  # an enum case dumped with its payload: Foo.bar("…") / Foo.bar(x: …)
    re.compile(r"\.swift:\d+"),
    re.compile(r"Optional\("),
]
MAX_STDERR = 8192


def judge(status, stderr, timed_out, stdout=b""):
    """The reasons a finished case failed (empty when it passed)."""
    if timed_out:
        return ["hang: still running at the case timeout"]
    problems = []
    if status < 0:
        problems.append(f"crash: killed by signal {-status}")
    elif status >= 128:
        problems.append(f"crash: exit {status}")
    elif status not in DOCUMENTED_EXITS:
        problems.append(f"undocumented exit {status}")
    text = stderr.decode("utf-8", "replace")
    for pattern in DUMP_PATTERNS:
        m = pattern.search(text)
        if m:
            problems.append(f"dump on stderr: {text[max(0, m.start() - 80):m.end() + 80]!r}")
            break
    if len(stderr) > MAX_STDERR:
        problems.append(f"stderr of {len(stderr)} bytes (a refusal is one sentence)")
    if status != 0 and status in DOCUMENTED_EXITS and not text.strip() and not stdout.strip():
        problems.append(f"exit {status} without a word on stderr or stdout")
    return problems


def run_case(argv, timeout, env=None, stdin=None):
    """Runs argv in its own process group; returns (status, stdout, stderr, timed_out)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return proc.returncode, out, err, True


# ---------------------------------------------------------------------------------------------- files

ODD_STRINGS = [
    "..", "../../../../etc/passwd", "/etc/passwd", "a/../../b", "./..", "models/../../x", "..\\..\\x",
    "", " ", "\u0000", "x\u0000y", "\n", "a\nb", "\u202e", "😀" * 50, "%2e%2e/%2e%2e", "~/x", "-rf", "--help",
    "file:///etc/passwd", "http://169.254.169.254/latest/meta-data/", "http://[::ffff:7f00:1]:6379/",
    "http://2130706433/", "http://user:secret@host.invalid/x", "javascript:alert(1)", "http://", "http://:0/",
    "http://host.invalid:99999/", "ftp://host.invalid/x", "gopher://127.0.0.1:6379/_FLUSHALL",
    "https://huggingface.co/../../x", "http://a b/c", "http://[::1/", "git@github.com:x/y.git",
    "ext::sh -c touch% /tmp/pwned", "--upload-pack=touch /tmp/pwned", "https://github.com/a/b.git#egg=../x",
    "${HOME}", "${REDIS_URL}", "$(id)", "`id`", "a" * 5000,
]
HUGE_NUMBERS = [
    "1e400", "-1e400", "99999999999999999999999999999", "-99999999999999999999999", "9223372036854775807",
    "9223372036854775808", "-9223372036854775809", "18446744073709551616", "1.7976931348623157e308",
    "-0", "0.5", "1e-400", "NaN", "Infinity", "-1", "0", "2147483648", "4294967296", "1E5", "0x10", "00012",
]


class JSONMutator:
    def __init__(self, rng):
        self.rng = rng

    def nodes(self, value, path=()):
        yield path, value
        if isinstance(value, dict):
            for k, v in value.items():
                yield from self.nodes(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from self.nodes(v, path + (i,))

    def replace(self, root, path, new):
        if not path:
            return new
        parent = root
        for p in path[:-1]:
            parent = parent[p]
        parent[path[-1]] = new
        return root

    def random_value(self):
        r = self.rng
        choice = r.randrange(9)
        if choice == 0:
            return None
        if choice == 1:
            return r.choice([True, False])
        if choice == 2:
            return r.choice([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64, 10**30, 1.5, -0.0])
        if choice == 3:
            return r.choice(ODD_STRINGS)
        if choice == 4:
            return []
        if choice == 5:
            return {}
        if choice == 6:
            return [r.choice(ODD_STRINGS)]
        if choice == 7:
            return {"id": r.choice(ODD_STRINGS)}
        return "x" * r.choice([1, 256, 4096, 70000, 1 << 20])

    def structural(self, doc):
        """A JSON-aware mutation; returns text (some mutations only exist as text)."""
        r = self.rng
        everything = list(self.nodes(doc))
        path, value = r.choice(everything)
        op = r.randrange(11)
        if op == 0:  # type swap
            doc = self.replace(doc, path, self.random_value())
        elif op == 1 and isinstance(value, str):  # odd string / path / URL
            doc = self.replace(doc, path, r.choice(ODD_STRINGS))
        elif op == 2 and isinstance(value, dict) and value:  # drop a key
            value.pop(r.choice(list(value)))
        elif op == 3 and isinstance(value, dict):  # an unknown key
            value[r.choice(["x", "__proto__", "", "id", "kind", "depends_on"])] = self.random_value()
        elif op == 4 and isinstance(value, list) and value:  # duplicate or empty a list
            if r.random() < 0.5:
                value.append(json.loads(json.dumps(r.choice(value))))
            else:
                value.clear()
        elif op == 5 and isinstance(value, list) and value:  # many copies
            value.extend([json.loads(json.dumps(value[0]))] * r.choice([100, 5000]))
        elif op == 6:  # huge number, as text
            marker = "\u0001FUZZNUM\u0001"
            doc = self.replace(doc, path, marker)
            return json.dumps(doc).replace(json.dumps(marker), r.choice(HUGE_NUMBERS))
        elif op == 7:  # deep nesting
            depth = r.choice([64, 1000, 100000])
            marker = "\u0001FUZZDEEP\u0001"
            doc = self.replace(doc, path, marker)
            opener, closer = r.choice([("[", "]"), ('{"a":', "}")])
            return json.dumps(doc).replace(json.dumps(marker), opener * depth + "1" + closer * depth)
        elif op == 8 and isinstance(value, dict) and value:  # duplicate key, as text
            key = r.choice(list(value))
            marker = "\u0001FUZZDUP\u0001"
            value["\u0001FUZZDUP\u0001"] = 0
            dup = json.dumps(key) + ":" + json.dumps(self.random_value())
            return json.dumps(doc).replace(json.dumps(marker) + ": 0", dup)
        elif op == 9 and isinstance(value, str):  # a long string
            doc = self.replace(doc, path, value * r.choice([100, 10000]) if value else "y" * 100000)
        else:
            doc = self.replace(doc, path, self.random_value())
        return json.dumps(doc)

    def bytewise(self, data):
        r = self.rng
        data = bytearray(data)
        op = r.randrange(7)
        if op == 0 and data:  # byte flips
            for _ in range(r.randint(1, 8)):
                i = r.randrange(len(data))
                data[i] ^= 1 << r.randrange(8)
        elif op == 1:  # truncation
            data = data[: r.randrange(len(data) + 1)]
        elif op == 2 and data:  # a random byte
            data[r.randrange(len(data))] = r.randrange(256)
        elif op == 3:  # invalid UTF-8, NUL, BOM
            i = r.randrange(len(data) + 1)
            data[i:i] = r.choice([b"\xff\xfe", b"\x00", b"\xef\xbb\xbf", b"\xc3", b"\xed\xa0\x80", b"\\u0000", b"\\ud800"])
        elif op == 4 and data:  # delete a span
            i = r.randrange(len(data))
            del data[i: i + r.randint(1, 64)]
        elif op == 5 and data:  # repeat a span
            i = r.randrange(len(data))
            span = data[i: i + r.randint(1, 64)]
            data[i:i] = span * r.randint(2, 50)
        else:  # a completely different document
            data = bytearray(r.choice([b"", b"null", b"[]", b"{}", b"1", b'"x"', b"[" * 50000, b"\x00" * 100, b"{" + b'"a":1,' * 10000 + b"}"]))
        return bytes(data)

    def mutate(self, text):
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            doc = None
        out = text.encode() if isinstance(text, str) else text
        for _ in range(self.rng.choice([1, 1, 1, 2, 3])):
            if doc is not None and self.rng.random() < 0.65:
                out = self.structural(doc).encode("utf-8", "surrogatepass")
                try:
                    doc = json.loads(out)
                except (ValueError, RecursionError):
                    doc = None
            else:
                out = self.bytewise(out)
                doc = None
        return out


def corpus():
    """(name, kind, text) of every seed input."""
    seeds = []
    def add(path, kind):
        with open(path, encoding="utf-8") as f:
            seeds.append((os.path.relpath(path, ROOT), kind, f.read()))
    ex = os.path.join(ROOT, "protocols/examples")
    for name in sorted(os.listdir(ex)):
        if not name.endswith(".json"):
            continue
        kind = ("plan" if name.startswith("plan-") else "lock" if name.startswith("lockfile") else
                "manifest" if name.startswith("manifest") else "other")
        add(os.path.join(ex, name), kind)
    inv = os.path.join(ex, "invalid")
    for name in sorted(os.listdir(inv)):
        if name.endswith(".json"):
            add(os.path.join(inv, name), "plan")
    fx = os.path.join(ROOT, "Tests/ManifestTests/Fixtures")
    add(os.path.join(fx, "config_nodes.json"), "manifest")
    add(os.path.join(fx, "workflow-ui.json"), "workflow")
    add(os.path.join(fx, "workflow-api.json"), "workflow")
    return seeds


def file_commands(kind, path, ctx, index):
    """The provision invocations a mutated input of this kind goes to (one of them per case)."""
    empty = ctx["empty_workspace"]
    machine = f"fz{index}"
    offline = [
        ["plan", path],
        ["analyze", path, "--json", "--no-registry"],
        ["analyze", path, "--no-registry", "--strict"],
        ["export", "--lock", path, "--format", ctx["rng_format"](index)],
        ["verify", "--lock", path, "--workspace", empty, "--json"],
    ]
    enqueue = ["enqueue", "--redis", ctx["redis_url"], "--machine", machine, "--plan", path]
    enqueue_spec = ["enqueue", "--redis", ctx["redis_url"], "--machine", machine, "--spec", path]
    if kind == "plan":
        return [enqueue, enqueue, enqueue] + offline[:1]
    if kind in ("lock", "manifest"):
        return [offline[0], offline[0], offline[3], offline[4], enqueue_spec]
    if kind == "workflow":
        return [offline[1], offline[2], offline[0]]
    return offline + [enqueue]


def files_case(ctx, index, rng):
    seeds = ctx["seeds"]
    name, kind, text = rng.choice(seeds)
    data = JSONMutator(rng).mutate(text)
    suffix = ".json"
    path = os.path.join(ctx["work"], f"case-{index}{suffix}")
    with open(path, "wb") as f:
        f.write(data)
    args = rng.choice(file_commands(kind, path, ctx, index))
    status, out, err, timed_out = run_case([ctx["bin"]] + args, ctx["timeout"], env=ctx["env"])
    problems = judge(status, err, timed_out, out)
    label = f"files:{args[0]}"
    keep = None
    if problems:
        keep = os.path.join(ctx["out"], f"files-{ctx['seed']}-{index}.json")
        shutil.copyfile(path, keep)
    os.unlink(path)
    return label, status, problems, {"seed_input": name, "argv": ["provision"] + args, "kept": keep, "stderr": err[-600:].decode("utf-8", "replace")}


# ----------------------------------------------------------------------------------------------- resp

def read_reply(sock_file):
    """Reads one RESP reply from a buffered socket file; returns its raw bytes (None on EOF)."""
    line = sock_file.readline()
    if not line:
        return None
    raw = bytearray(line)
    t = line[:1]
    if t in (b"+", b"-", b":", b"_", b",", b"#", b"("):
        return bytes(raw)
    if t in (b"$", b"=", b"!"):
        n = int(line[1:-2])
        if n >= 0:
            raw += sock_file.read(n + 2)
        return bytes(raw)
    if t in (b"*", b"~", b">", b"%", b"|"):
        n = int(line[1:-2])
        count = n * 2 if t in (b"%", b"|") else n
        for _ in range(max(0, count)):
            inner = read_reply(sock_file)
            if inner is None:
                return None
            raw += inner
        return bytes(raw)
    return bytes(raw)


def read_command(buf):
    """Splits one RESP command (an array of bulk strings, or an inline line) off buf: (command, rest)."""
    if not buf:
        return None, buf
    if buf[:1] != b"*":
        i = buf.find(b"\r\n")
        return (buf[: i + 2], buf[i + 2:]) if i >= 0 else (None, buf)
    i = buf.find(b"\r\n")
    if i < 0:
        return None, buf
    n = int(buf[1:i])
    pos = i + 2
    for _ in range(n):
        j = buf.find(b"\r\n", pos)
        if j < 0:
            return None, buf
        length = int(buf[pos + 1: j])
        pos = j + 2 + length + 2
        if pos > len(buf):
            return None, buf
    return buf[:pos], buf[pos:]


def hostile_reply(rng, real):
    """(bytes to send instead of the real reply, whether to close the connection after)."""
    choices = [
        lambda: (real[: rng.randrange(max(1, len(real)))], True),            # truncated, then gone
        lambda: (b"", True),                                                  # disconnect before the reply
        lambda: (b":42\r\n", False),                                          # wrong types
        lambda: (b"$5\r\nhello\r\n", False),
        lambda: (b"+OK\r\n", False),
        lambda: (b"-ERR fuzz says no\r\n", False),
        lambda: (b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", False),
        lambda: (b"-NOSCRIPT No matching script.\r\n", False),
        lambda: (b"-LOADING Redis is loading the dataset in memory\r\n", False),
        lambda: (b"-READONLY You can't write against a read only replica.\r\n", False),
        lambda: (b"-MOVED 3999 127.0.0.1:1\r\n", False),
        lambda: (b"*2\r\n:1\r\n:2\r\n", False),
        lambda: (b"*3\r\n$1\r\na\r\n*1\r\n:7\r\n$-1\r\n", False),
        lambda: (b"*-1\r\n", False),
        lambda: (b"$-1\r\n", False),
        lambda: (b"*0\r\n", False),
        lambda: (b"$0\r\n\r\n", False),
        lambda: (b"$9999999999999\r\nabc", True),                              # giant bulk length
        lambda: (b"$2147483648\r\n", True),
        lambda: (b"$-5\r\n", False),                                          # negative lengths
        lambda: (b"*-7\r\n", False),
        lambda: (b"*1000000000\r\n", True),                                   # giant array
        lambda: (b"*1\r\n" * 64 + b":1\r\n", False),                          # deep nesting
        lambda: (b"?what\r\n", True),                                         # not RESP
        lambda: (b"$3\r\nabcdef\r\n", True),                                  # bulk longer than announced
        lambda: (b":99999999999999999999999\r\n", False),                     # integer overflow
        lambda: (b":abc\r\n", False),
        lambda: (b"*2\r\n$4\r\n\xff\xfe\x00\x01\r\n:1\r\n", False),           # binary in a string
        lambda: (b"_\r\n", False),                                            # RESP3 in a RESP2 session
        lambda: (b"%1\r\n+a\r\n:1\r\n", False),
        lambda: (real + real, False),                                         # one reply twice: desync
        lambda: (b"+" + b"x" * (1 << 20) + b"\r\n", False),                   # a 1 MiB status line
        lambda: (real[: max(1, len(real) // 2)], False),                      # half a reply, then silence
    ]
    return rng.choice(choices)()


class RESPProxy:
    """A loopback proxy to a real redis-server that spoils the K-th reply of each connection's
    session (K counted across every connection the case opens)."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.plan = None  # (k, rng)
        self.count = 0
        self.hit = False
        threading.Thread(target=self.accept, daemon=True).start()

    def arm(self, k, rng):
        with self.lock:
            self.plan, self.count, self.hit = (k, rng), 0, False

    def accept(self):
        while True:
            client, _ = self.server.accept()
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client):
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()
            return
        up = upstream.makefile("rb")
        buf = b""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                buf += data
                while True:
                    command, buf = read_command(buf)
                    if command is None:
                        break
                    upstream.sendall(command)
                    real = read_reply(up)
                    if real is None:
                        raise OSError("upstream closed")
                    with self.lock:
                        k, rng = self.plan if self.plan else (-1, None)
                        mine = self.count == k
                        self.count += 1
                        if mine:
                            self.hit = True
                            reply, close = hostile_reply(rng, real)
                    if not mine:
                        client.sendall(real)
                        continue
                    if reply:
                        client.sendall(reply)
                    if close:
                        raise OSError("closing on purpose")
                    if reply == real[: max(1, len(real) // 2)]:
                        time.sleep(30)  # silence: the client's timeout has to notice
                        raise OSError("closing on purpose")
        except (OSError, ValueError):
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.close()
                except OSError:
                    pass


def resp_case(ctx, index, rng):
    proxy = ctx["proxy"]
    url = f"redis://127.0.0.1:{proxy.port}/0"
    machine = "fz-resp"
    choices = [
        ["status", "--redis", url, "--machine", machine],
        ["status", "--redis", url, "--machine", machine, "--json"],
        ["status", "--redis", url, "--machine", machine, "--jobs"],
        ["status", "--redis", url, "--machine", machine, "--wait", "--timeout", "3", "--no-live"],
        ["enqueue", "--redis", url, "--machine", f"fz-resp-{index}", "--plan", ctx["minimal_plan"]],
        ["enqueue", "--redis", url, "--machine", machine, "--plan", ctx["dag_plan"], "--replace"],
        ["events", "--redis", url, "--machine", machine],
        ["cancel", "--redis", url, "--machine", f"fz-cancel-{index}"],
        ["services", "--redis", url, "--machine", machine, "--json"],
    ]
    args = rng.choice(choices)
    k = rng.randrange(0, 14)
    with ctx["resp_lock"]:  # one case at a time through the proxy: K counts one process's replies
        proxy.arm(k, random.Random(rng.random()))
        status, out, err, timed_out = run_case([ctx["bin"]] + args, ctx["timeout"], env=ctx["env"])
        hit = proxy.hit
    problems = judge(status, err, timed_out, out)
    return f"resp:{args[0]}" + ("" if hit else " (reply not reached)"), status, problems, {"argv": ["provision"] + args, "k": k, "stderr": err[-600:].decode("utf-8", "replace")}


# ----------------------------------------------------------------------------------------------- http

class HostileHTTP:
    """A loopback HTTP/1.1 server: /c/ID/NAME serves case ID's file, spoiling responses as its
    scenario says."""

    def __init__(self):
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(256)
        self.port = self.server.getsockname()[1]
        self.cases = {}
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.server.accept()
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client):
        client.settimeout(60)
        f = client.makefile("rb")
        try:
            while True:
                request = f.readline(65536)
                if not request:
                    return
                headers = {}
                while True:
                    line = f.readline(65536)
                    if line in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = line.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                parts = request.decode("latin-1").split()
                if len(parts) < 2:
                    return
                method, target = parts[0], parts[1]
                segs = target.split("?")[0].split("/")
                case = self.cases.get(segs[2]) if len(segs) > 3 and segs[1] == "c" else None
                if case is None:
                    client.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                with self.lock:
                    n = case["requests"]
                    case["requests"] += 1
                keep = case["respond"](client, method, headers, n, case)
                if not keep:
                    return
        except (OSError, ValueError):
            pass
        finally:
            try:
                client.close()
            except OSError:
                pass


def correct_parts(body, headers):
    """(status line, header list, body bytes) of a correct answer to the request's Range."""
    size = len(body)
    rng_header = headers.get("range")
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng_header or "")
    if m and size > 0:
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start >= size or end < start:
            return "HTTP/1.1 416 Range Not Satisfiable", [("Content-Range", f"bytes */{size}"), ("Content-Length", "0")], b""
        chunk = body[start: end + 1]
        return "HTTP/1.1 206 Partial Content", [("Content-Range", f"bytes {start}-{end}/{size}"), ("Content-Length", str(len(chunk))),
                                                ("Accept-Ranges", "bytes"), ("ETag", '"fz"')], chunk
    return "HTTP/1.1 200 OK", [("Content-Length", str(size)), ("Accept-Ranges", "bytes"), ("ETag", '"fz"')], body


HTTP_MUTATIONS = [
    "wrong-content-range-start", "wrong-content-range-total", "content-range-garbage", "content-range-star",
    "content-range-huge", "content-range-negative", "no-content-range", "content-length-negative",
    "content-length-huge", "content-length-garbage", "content-length-twice", "no-content-length-close",
    "header-100k", "header-1m", "many-headers", "status-garbage", "status-empty", "status-binary", "status-999",
    "status-100-only", "status-304", "status-416", "status-500", "status-429-retry-huge", "status-429-retry-garbage",
    "status-200-for-range", "body-truncated", "body-too-long", "close-before-headers", "close-mid-headers",
    "stall-headers", "stall-body", "redirect-file", "redirect-metadata", "redirect-loop", "redirect-garbage",
    "redirect-relative-dots", "chunked-garbage", "chunked-huge", "etag-changes", "lf-only", "nul-in-header",
]

# Waits the downloader is designed to make (Retry-After is honoured up to 4 × its longest backoff,
# 2 minutes): only with --slow.
SLOW_MUTATIONS = {"status-429-retry-huge"}
# A conflicting second Content-Length 7 bytes longer is a stall too (libcurl waits for the 7 bytes).
BOUNDED_MUTATIONS = {"status-429-retry-huge", "stall-headers", "stall-body", "status-100-only", "content-length-twice"}


def http_case(ctx, index, rng):
    server = ctx["http"]
    size = rng.choice([0, 1, 100, 4096, 65537, 300_000, 1_100_000, 5_000_000])
    body = rng.randbytes(size)
    mutation = rng.choice(HTTP_MUTATIONS if ctx["slow"] else [m for m in HTTP_MUTATIONS if m not in SLOW_MUTATIONS])
    # Which requests are spoiled: all, only the first, or every other one (retries may then succeed).
    # A stall costs --stall-timeout per spoiled request and a huge Retry-After the capped wait (2 min):
    # those spoil one request, so the case's time stays bounded.
    which = rng.choice(["first", "third"] if mutation in BOUNDED_MUTATIONS else ["all", "first", "alternate", "third"])
    timeout = ctx["http_timeout"] + (130 if mutation in SLOW_MUTATIONS else 0)

    def respond(client, method, headers, n, case):
        status, hdrs, chunk = correct_parts(body, headers)
        spoil = (which == "all" or (which == "first" and n == 0) or (which == "alternate" and n % 2 == 0)
                 or (which == "third" and n == 2))
        if not spoil:
            client.sendall(encode(status, hdrs, chunk if method != "HEAD" else b""))
            return True
        return spoil_response(client, method, mutation, status, hdrs, chunk, size, rng, server.port, index)

    case_id = f"{ctx['seed']}-{index}"
    server.cases[case_id] = {"requests": 0, "respond": respond}
    out_dir = tempfile.mkdtemp(dir=ctx["work"], prefix="dl-")
    output = os.path.join(out_dir, "model.bin")
    args = ["download", f"http://127.0.0.1:{server.port}/c/{case_id}/model.bin", "--output", output,
            "--allow-origin", f"127.0.0.1:{server.port}", "--stall-timeout", "2",
            "--connections", str(rng.choice([1, 2, 4, 8]))]
    if rng.random() < 0.5:
        args += ["--size", str(size)]
    if rng.random() < 0.5:
        args += ["--sha256", hashlib.sha256(body).hexdigest()]
    if rng.random() < 0.4:
        # Tiny chunks only for small files: a chunk per request, and every request may be spoiled.
        args += ["--chunk-size", str(rng.choice([1, 1000, 65536]) if size <= 100 else rng.choice([1000, 65536]) if size <= 65537 else rng.choice([65536, 1 << 20]))]
    if rng.random() < 0.3:
        args.append("--json")
    status, out, err, timed_out = run_case([ctx["bin"]] + args, timeout, env=ctx["env"])
    problems = judge(status, err, timed_out, out)
    if status == 0 and not timed_out:
        try:
            with open(output, "rb") as f:
                got = f.read()
            if got != body:
                problems.append(f"exit 0 but placed {len(got)} bytes that differ from the {size} served")
        except OSError as e:
            problems.append(f"exit 0 but no file: {e}")
    del server.cases[case_id]
    shutil.rmtree(out_dir, ignore_errors=True)
    return f"http:{mutation}", status, problems, {"argv": ["provision"] + args, "mutation": mutation, "which": which, "size": size,
                                                  "stderr": err[-600:].decode("utf-8", "replace")}


def encode(status, headers, body):
    return (status + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1") + body


def set_header(headers, name, value):
    out = [(k, v) for k, v in headers if k.lower() != name.lower()]
    if value is not None:
        out.append((name, value))
    return out


def spoil_response(client, method, mutation, status, hdrs, chunk, size, rng, port, index):
    """Sends one hostile response; returns whether the connection stays open."""
    send = client.sendall
    m = mutation
    cr = dict((k.lower(), v) for k, v in hdrs).get("content-range", "")
    if m == "wrong-content-range-start" and cr.startswith("bytes "):
        a, b = cr[6:].split("/")[0].split("-")
        hdrs = set_header(hdrs, "Content-Range", f"bytes {int(a) + 1}-{int(b) + 1}/{size}")
    elif m == "wrong-content-range-total" and cr:
        hdrs = set_header(hdrs, "Content-Range", cr.split("/")[0] + f"/{size + rng.choice([-1, 1, 1000])}")
    elif m == "content-range-garbage":
        hdrs = set_header(hdrs, "Content-Range", rng.choice(["bytes", "bytes x-y/z", "lines 0-1/2", "bytes 5-1/3", "", "bytes 0-0/0", "\u00ff"]))
    elif m == "content-range-star":
        hdrs = set_header(hdrs, "Content-Range", "bytes 0-%d/*" % max(0, len(chunk) - 1))
    elif m == "content-range-huge":
        hdrs = set_header(hdrs, "Content-Range", "bytes 0-%d/99999999999999999999999" % max(0, len(chunk) - 1))
    elif m == "content-range-negative":
        hdrs = set_header(hdrs, "Content-Range", "bytes -5-10/-20")
    elif m == "no-content-range":
        hdrs = set_header(hdrs, "Content-Range", None)
    elif m == "content-length-negative":
        hdrs = set_header(hdrs, "Content-Length", "-1")
    elif m == "content-length-huge":
        hdrs = set_header(hdrs, "Content-Length", rng.choice(["9223372036854775807", "99999999999999999999999", "18446744073709551615"]))
        send(encode(status, hdrs, chunk))
        return False
    elif m == "content-length-garbage":
        hdrs = set_header(hdrs, "Content-Length", rng.choice(["abc", "1e3", "0x10", " ", "12 34"]))
    elif m == "content-length-twice":
        hdrs = hdrs + [("Content-Length", str(len(chunk) + 7))]
    elif m == "no-content-length-close":
        send(encode(status, set_header(hdrs, "Content-Length", None), chunk))
        return False
    elif m == "header-100k":
        hdrs = hdrs + [("X-Big", "a" * 100_000)]
    elif m == "header-1m":
        hdrs = hdrs + [("X-Big", "a" * 1_000_000)]
    elif m == "many-headers":
        hdrs = hdrs + [(f"X-H{i}", "v") for i in range(20000)]
    elif m == "status-garbage":
        status = rng.choice(["HTTP/1.1 abc Nope", "FOO BAR", "HTTP/9.9 206 x", "HTTP/1.1 -206 x", "HTTP/1.1 2060 x", "ICY 200 OK"])
    elif m == "status-empty":
        send(b"\r\n\r\n")
        return False
    elif m == "status-binary":
        send(bytes(rng.randrange(256) for _ in range(200)))
        return False
    elif m == "status-999":
        status = "HTTP/1.1 999 Strange"
    elif m == "status-100-only":
        send(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(3)
        return False
    elif m in ("status-304", "status-416", "status-500"):
        code = m[-3:]
        send(encode(f"HTTP/1.1 {code} X", [("Content-Length", "0")], b""))
        return True
    elif m == "status-429-retry-huge":
        send(encode("HTTP/1.1 429 Too Many Requests", [("Retry-After", rng.choice(["99999999999", "86400", "Wed, 21 Oct 2099 07:28:00 GMT"])), ("Content-Length", "0")], b""))
        return True
    elif m == "status-429-retry-garbage":
        send(encode("HTTP/1.1 429 Too Many Requests", [("Retry-After", rng.choice(["-5", "abc", "", "NaN", "1.5"])), ("Content-Length", "0")], b""))
        return True
    elif m == "status-200-for-range":
        status = "HTTP/1.1 200 OK"
        hdrs = set_header(hdrs, "Content-Range", None)
    elif m == "body-truncated":
        send(encode(status, hdrs, chunk[: len(chunk) // 2]))
        return False
    elif m == "body-too-long":
        send(encode(status, hdrs, chunk + b"EXTRA" * 100))
        return False
    elif m == "close-before-headers":
        return False
    elif m == "close-mid-headers":
        send(encode(status, hdrs, b"")[:20])
        return False
    elif m == "stall-headers":
        time.sleep(8)
        return False
    elif m == "stall-body":
        send(encode(status, hdrs, chunk[: len(chunk) // 3]))
        time.sleep(8)
        return False
    elif m.startswith("redirect"):
        location = {"redirect-file": "file:///etc/passwd", "redirect-metadata": "http://169.254.169.254/latest/meta-data/",
                    "redirect-loop": f"http://127.0.0.1:{port}/loop-{index}",
                    "redirect-garbage": "http://[::1:bad", "redirect-relative-dots": "../../../../etc/passwd"}[m]
        if m == "redirect-loop":
            send(encode("HTTP/1.1 302 Found", [("Location", f"/c/none-{index}/x"), ("Content-Length", "0")], b""))
        else:
            send(encode("HTTP/1.1 302 Found", [("Location", location), ("Content-Length", "0")], b""))
        return True
    elif m == "chunked-garbage":
        hdrs = set_header(set_header(hdrs, "Content-Length", None), "Transfer-Encoding", "chunked")
        send(encode(status, hdrs, b"zz\r\nabc\r\n0\r\n\r\n"))
        return False
    elif m == "chunked-huge":
        hdrs = set_header(set_header(hdrs, "Content-Length", None), "Transfer-Encoding", "chunked")
        send(encode(status, hdrs, b"FFFFFFFFFFFFFFFFFF\r\nabc"))
        return False
    elif m == "etag-changes":
        hdrs = set_header(hdrs, "ETag", f'"other-{rng.random()}"')
    elif m == "lf-only":
        send(encode(status, hdrs, b"").replace(b"\r\n", b"\n") + chunk)
        return False
    elif m == "nul-in-header":
        hdrs = hdrs + [("X-Nul", "a\x00b")]
    send(encode(status, hdrs, chunk if method != "HEAD" else b""))
    return True


# ----------------------------------------------------------------------------------------------- main

def start_redis(work):
    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("fuzz: redis-server did not start")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("PROVISION_BIN") or os.path.join(ROOT, ".build/debug/provision"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--kinds", default="files,resp,http")
    parser.add_argument("--share", default="60,20,20", help="how the cases divide among files,resp,http (percent)")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=15)
    parser.add_argument("--http-timeout", type=float, default=60, help="seconds a download case may take")
    parser.add_argument("--slow", action="store_true", help="also serve 429s whose Retry-After the downloader waits out (2 minutes a case)")
    parser.add_argument("--out", default=os.path.join(ROOT, ".build/fuzz"))
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    shares = dict(zip(["files", "resp", "http"], [int(x) for x in args.share.split(",")]))
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="provision-fuzz-")
    redis_proc, redis_port = start_redis(work)
    env = dict(os.environ)
    for key in ("REDIS_URL", "MACHINE_ID", "PROVISION_PREFIX", "HF_TOKEN", "CIVITAI_TOKEN"):
        env.pop(key, None)
    env["PROVISION_STATE_DIR"] = os.path.join(work, "state")
    env["HOME"] = work
    empty = os.path.join(work, "empty-workspace")
    os.makedirs(empty)
    formats = ["script", "dockerfile", "dependencies-json"]
    ctx = {
        "bin": args.bin, "seed": args.seed, "work": work, "out": args.out, "env": env, "timeout": args.timeout,
        "http_timeout": args.http_timeout, "slow": args.slow, "seeds": corpus(), "empty_workspace": empty,
        "redis_url": f"redis://127.0.0.1:{redis_port}/0", "rng_format": lambda i: formats[i % 3],
        "minimal_plan": os.path.join(ROOT, "protocols/examples/plan-minimal.json"),
        "dag_plan": os.path.join(ROOT, "protocols/examples/plan-dag.json"),
        "resp_lock": threading.Lock(),
    }
    # A plan for the resp cases to read (status, events, services).
    subprocess.run([args.bin, "enqueue", "--redis", ctx["redis_url"], "--machine", "fz-resp", "--plan", ctx["dag_plan"]],
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    ctx["proxy"] = RESPProxy(redis_port)
    ctx["http"] = HostileHTTP()

    total = sum(shares[k] for k in kinds)
    plan = []
    master = random.Random(args.seed)
    for i in range(args.cases):
        r = master.randrange(total)
        for k in kinds:
            if r < shares[k]:
                plan.append((i, k, master.getrandbits(64)))
                break
            r -= shares[k]
    runners = {"files": files_case, "resp": resp_case, "http": http_case}
    counts, exits, failures = {}, {}, []
    began = time.monotonic()

    def one(item):
        i, kind, case_seed = item
        return (i, kind, case_seed) + runners[kind](ctx, i, random.Random(case_seed))

    try:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for i, kind, case_seed, label, status, problems, detail in pool.map(one, plan):
                counts[kind] = counts.get(kind, 0) + 1
                exits.setdefault(kind, {}).setdefault(status, 0)
                exits[kind][status] += 1
                if problems:
                    failures.append({"case": i, "kind": kind, "label": label, "status": status, "problems": problems, **detail})
                    print(f"FAIL case {i} ({label}): {'; '.join(problems)}\n    {' '.join(map(str, detail.get('argv', [])))[:400]}\n    stderr: {detail.get('stderr', '')[-300:]!r}", flush=True)
    finally:
        redis_proc.terminate()
        redis_proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - began
    report = {"seed": args.seed, "cases": len(plan), "seconds": round(seconds, 1), "by_kind": counts,
              "exit_codes": {k: {str(s): n for s, n in sorted(v.items())} for k, v in exits.items()}, "failures": failures}
    with open(os.path.join(args.out, f"report-{args.seed}.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"fuzz: seed {args.seed}, {len(plan)} cases in {seconds:.1f} s: " +
          ", ".join(f"{k} {counts.get(k, 0)}" for k in kinds) + f"; {len(failures)} failed")
    for kind in kinds:
        print(f"  {kind}: exit codes " + ", ".join(f"{s}×{n}" for s, n in sorted(exits.get(kind, {}).items())))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
