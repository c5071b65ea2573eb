#!/usr/bin/env python3
"""A loopback HTTP origin for the downloader tests: honours Range and If-Range, and misbehaves on
request (per-connection throttle, dropped connections, 500/429, a wrong body, ignoring Range,
redirects to another port, a token check). It counts every body byte it sends.

    origin.py --root DIR --port-file FILE [--port N]

Query parameters of /files/NAME (they apply to every request of that URL):
  throttle=B       at most B bytes/s per connection
  drop=N           close the connection after N body bytes (the first `times` requests)
  fail=CODE        answer CODE (500, 429, 503, 404...) to the first `times` requests;
                   retry_after=S adds a Retry-After header
  times=K          how many requests the fault applies to (default: all)
  norange=1        ignore Range (always 200 with the whole file)
  wrongbody=1      flip one byte in the middle of the file
  noetag=1         send no ETag / Last-Modified
  hang=S           after the headers, send nothing for S seconds (the first `times` requests)
  badtotal=1       a Content-Range total one byte short (the first `times` requests)
/redirect/PORT/files/NAME?...  answers 302 to http://127.0.0.1:PORT/files/NAME?...
                 with sign=K, the target carries a fresh signed=TOKEN that is good for K requests,
                 then answers 403 (an expired signed CDN URL)
/goto?to=URL     answers 302 to URL as given (any host spelling: the address checks' tests)
/auth/NAME       like /files/NAME but 401 without "Authorization: Bearer origin-secret"
/hf/OWNER/REPO/resolve/REV/NAME  imitates Hugging Face for an LFS file: 302 to /files/NAME carrying
                 X-Linked-Etag: "<sha256 of NAME>", X-Linked-Size and X-Repo-Commit (REPO_COMMIT below);
                 ?nolinked=1 leaves the X-Linked-* headers out (a file the origin publishes no hash for)
/_stats          JSON: requests (path, query, range, status, bytes, authorization, x-test) and totals
/_reset          clears the stats and fault counters
"""
import argparse
import hashlib
import json
import os
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

REPO_COMMIT = "0123456789abcdef0123456789abcdef01234567"
LOCK = threading.Lock()
STATS = {"requests": [], "bytes_sent": 0}
FAULT_COUNTS = {}
SIGNED = {"next": 0, "uses": {}}


def record(entry):
    with LOCK:
        STATS["requests"].append(entry)
        STATS["bytes_sent"] += entry.get("bytes", 0)


def take_fault(key, times):
    """True while the fault identified by key has been applied fewer than `times` times."""
    with LOCK:
        used = FAULT_COUNTS.get(key, 0)
        if times is not None and used >= times:
            return False
        FAULT_COUNTS[key] = used + 1
        return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path == "/_stats":
            with LOCK:
                body = json.dumps(STATS).encode()
            return self.simple(200, body, "application/json")
        if path == "/_reset":
            with LOCK:
                STATS["requests"].clear()
                STATS["bytes_sent"] = 0
                FAULT_COUNTS.clear()
            return self.simple(200, b"ok", "text/plain")
        if path.startswith("/redirect/"):
            _, _, port, rest = path.split("/", 3)
            location = f"http://127.0.0.1:{int(port)}/{rest}" + (f"?{parts.query}" if parts.query else "")
            if "sign" in query:
                with LOCK:
                    SIGNED["next"] += 1
                    location += f"&signed={SIGNED['next']}"
            self.note(path, query, None, 302, 0)
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/goto":
            self.note(path, query, None, 302, 0)
            self.send_response(302)
            self.send_header("Location", query.get("to", "/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path.startswith("/hf/"):
            return self.huggingface(path, query, parts.query)
        if path.startswith("/auth/"):
            if self.headers.get("Authorization") != "Bearer origin-secret":
                self.note(path, query, self.headers.get("Range"), 401, 0)
                return self.simple(401, b"unauthorized", "text/plain")
            name = path[len("/auth/"):]
        elif path.startswith("/files/"):
            name = path[len("/files/"):]
        else:
            return self.simple(404, b"not found", "text/plain")
        if "/" in name or name.startswith("."):
            return self.simple(404, b"not found", "text/plain")
        full = os.path.join(self.root, name)
        if not os.path.isfile(full):
            self.note(path, query, self.headers.get("Range"), 404, 0)
            return self.simple(404, b"not found", "text/plain")
        if "signed" in query:
            with LOCK:
                uses = SIGNED["uses"].get(query["signed"], 0) + 1
                SIGNED["uses"][query["signed"]] = uses
            if uses > int(query.get("sign", "0")):
                self.note(path, query, self.headers.get("Range"), 403, 0)
                return self.simple(403, b"Request has expired", "text/plain")
        times = int(query["times"]) if "times" in query else None
        key = self.path
        if "fail" in query and take_fault(key + "#fail", times):
            code = int(query["fail"])
            self.note(path, query, self.headers.get("Range"), code, 0)
            extra = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
            return self.simple(code, b"injected failure", "text/plain", extra)
        self.serve_file(full, path, query, key, times)

    def serve_file(self, full, path, query, key, times):
        st = os.stat(full)
        size = st.st_size
        etag = f'"{size:x}-{st.st_mtime_ns:x}"'
        last_modified = formatdate(st.st_mtime, usegmt=True)
        range_header = self.headers.get("Range")
        start, end, status = 0, size - 1, 200
        if range_header and query.get("norange") != "1":
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range in (etag, last_modified):
                parsed = parse_range(range_header, size)
                if parsed is None:
                    self.note(path, query, range_header, 416, 0)
                    return self.simple(416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
                start, end = parsed
                status = 206
        length = max(0, end - start + 1)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        if query.get("norange") != "1":
            self.send_header("Accept-Ranges", "bytes")
        if query.get("noetag") != "1":
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
        if status == 206:
            total = size - 1 if query.get("badtotal") == "1" and take_fault(key + "#badtotal", times) else size
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.end_headers()
        throttle = float(query["throttle"]) if "throttle" in query else None
        drop = int(query["drop"]) if "drop" in query else None
        if drop is not None and not take_fault(key + "#drop", times):
            drop = None
        flip_at = size // 2 if query.get("wrongbody") == "1" else -1
        if "hang" in query and status == 206 and take_fault(key + "#hang", times):
            self.wfile.flush()
            time.sleep(float(query["hang"]))
        sent = 0
        began = time.monotonic()
        try:
            with open(full, "rb") as f:
                f.seek(start)
                while sent < length:
                    n = min(65536, length - sent)
                    if drop is not None:
                        n = min(n, drop - sent)
                        if n <= 0:
                            self.close_abruptly()
                            break
                    data = bytearray(f.read(n))
                    if start + sent <= flip_at < start + sent + len(data):
                        data[flip_at - start - sent] ^= 0xFF
                    self.wfile.write(data)
                    sent += len(data)
                    if throttle:
                        ahead = sent / throttle - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.note(path, query, range_header, status, sent)

    def huggingface(self, path, query, raw_query):
        segments = path.split("/")
        if len(segments) < 7 or segments[4] != "resolve":
            return self.simple(404, b"not found", "text/plain")
        name = segments[-1]
        full = os.path.join(self.root, name)
        if name.startswith(".") or not os.path.isfile(full):
            self.note(path, query, self.headers.get("Range"), 404, 0)
            return self.simple(404, b"not found", "text/plain")
        self.note(path, query, self.headers.get("Range"), 302, 0)
        self.send_response(302)
        self.send_header("Location", f"/files/{name}" + (f"?{raw_query}" if raw_query else ""))
        self.send_header("Content-Length", "0")
        self.send_header("X-Repo-Commit", REPO_COMMIT)
        if query.get("nolinked") != "1":
            with open(full, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            self.send_header("X-Linked-Etag", f'"{digest}"')
            self.send_header("X-Linked-Size", str(os.path.getsize(full)))
        self.end_headers()

    def close_abruptly(self):
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True

    def note(self, path, query, range_header, status, sent):
        record({"path": path, "query": query, "range": range_header, "status": status, "bytes": sent,
                "authorization": self.headers.get("Authorization"), "x_test": self.headers.get("X-Test"),
                "if_range": self.headers.get("If-Range")})

    def simple(self, code, body, content_type, extra=None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def parse_range(header, size):
    if not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes="):].partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return None
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    Handler.root = args.root
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
