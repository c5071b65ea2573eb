"""Download benchmark driver, started by bench/downloads/run (which owns nginx, the file and the venv).

Measures the limits (disk write speed of the destination folder, SHA-256 speed, loopback), then
runs each tool one at a time, round-robin over the repeats, verifies every output's SHA-256 against
the source, kills provision part-way and runs it again (resume runs, with nginx's access log), and
prints the table and writes results.json.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

MiB = 1 << 20
PEERS = ("aria2c", "axel", "hf_transfer")
RSS_TARGET_KB = 64_000_000 // 1024  # 64 MB
CURRENT = None  # the child being measured, stopped on SIGTERM
NGINX_PID = 0
TICK = os.sysconf("SC_CLK_TCK")


def on_term(signum, frame):
    if CURRENT is not None and CURRENT.poll() is None:
        CURRENT.kill()
        CURRENT.wait()
    sys.exit(143)


def machine_busy():
    """CPU seconds the whole machine has spent busy (all CPUs; idle and iowait excluded)."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def process_cpu(pids):
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def nginx_pids():
    if not NGINX_PID:
        return []
    out = subprocess.run(["pgrep", "-P", str(NGINX_PID)], capture_output=True, text=True).stdout.split()
    return [NGINX_PID] + [int(x) for x in out]


def measured(cmd, log_prefix, env=None):
    """Runs cmd under /usr/bin/time (whose own tiny RSS is the floor of the child's max RSS: a child
    forked from Python would report Python's); wall seconds by the monotonic clock, CPU of the tool,
    of nginx and of everything else on the machine during the run."""
    global CURRENT
    rusage = log_prefix + ".time"
    servers = nginx_pids()
    with open(log_prefix + ".out", "wb") as out, open(log_prefix + ".err", "wb") as err:
        busy, served = machine_busy(), process_cpu(servers)
        start = time.monotonic()
        CURRENT = subprocess.Popen(["/usr/bin/time", "-o", rusage, "-f", "%M %U %S %x"] + cmd,
                                   stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **env} if env else None)
        code = CURRENT.wait()
        seconds = time.monotonic() - start
        busy, served = machine_busy() - busy, process_cpu(servers) - served
        CURRENT = None
    try:
        rss, user, system, code = open(rusage).read().split()[-4:]
        usage = {"max_rss_kb": int(rss), "user": float(user), "sys": float(system)}
        code = int(code)
    except (OSError, ValueError):
        usage = {"max_rss_kb": 0, "user": 0.0, "sys": 0.0}
    usage["cpu_seconds"] = usage["user"] + usage["sys"]
    usage["nginx_cpu_seconds"] = served
    usage["other_cpu_seconds"] = max(0.0, busy - served - usage["cpu_seconds"])
    return seconds, usage, code


def timed(cmd):
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def sha256_file(path):
    digest = hashlib.sha256()  # OpenSSL's, with SHA-NI where the CPU has it
    buffer = bytearray(8 * MiB)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def clear(folder):
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def settle(folder):
    """Outputs deleted and dirty pages written back, so a run does not pay for the one before."""
    clear(folder)
    subprocess.run(["sync"], check=True)


# ---------------------------------------------------------------- limits

def measure_limits(args, size):
    limits = {}
    count = max(32, min(256, size // (8 * MiB)))
    target = os.path.join(args.dest, "ddtest")
    for mode, flag in (("direct", "oflag=direct"), ("fdatasync", "conv=fdatasync")):
        best = 0.0
        for _ in range(2):
            settle(args.dest)
            seconds = timed(["dd", "if=/dev/zero", f"of={target}", "bs=8M", f"count={count}", flag, "status=none"])
            best = max(best, count * 8 / seconds)
        limits[f"disk_{mode}_mibs"] = best
        print(f"   disk write, dd bs=8M count={count} {flag}: {best:.0f} MiB/s (best of 2)")
    settle(args.dest)
    limits["disk_mibs"] = max(limits["disk_direct_mibs"], limits["disk_fdatasync_mibs"])
    # Writing into the page cache costs what the memory costs: on a VM whose freed memory goes back
    # to the host (free page reporting, a few seconds after it is freed), every page of a new file
    # can be a host fault. For information beside the ideal: buffered writes right after the same
    # amount was freed, and 20 s later.
    mib = count * 8
    for state, pause in (("page_cache_reused", 0), ("page_cache_returned", 20)):
        subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={mib}", "status=none"], check=True)
        settle(args.dest)
        time.sleep(pause)
        seconds = timed(["dd", "if=/dev/zero", f"of={target}", "bs=64K", f"count={mib * 16}", "status=none"])
        limits[f"{state}_mibs"] = mib / seconds
        settle(args.dest)
    print(f"   page-cache write (dd bs=64K, no sync) into memory freed just before: {limits['page_cache_reused_mibs']:.0f} MiB/s; "
          f"freed 20 s before: {limits['page_cache_returned_mibs']:.0f} MiB/s")

    text = subprocess.run(["openssl", "speed", "-evp", "sha256", "-bytes", "8192", "-seconds", "3"],
                          check=True, capture_output=True, text=True).stdout
    line = next(l for l in text.splitlines() if l.startswith("sha256"))
    limits["sha256_openssl_mibs"] = float(line.split()[-1].rstrip("k")) * 1000 / MiB
    print(f"   SHA-256, openssl speed -evp sha256 -bytes 8192: {limits['sha256_openssl_mibs']:.0f} MiB/s")
    start = time.monotonic()
    limits["source_sha256"] = sha256_file(args.source)
    limits["sha256_file_mibs"] = size / MiB / (time.monotonic() - start)
    print(f"   SHA-256 of the source from the page cache (hashlib, 8 MiB reads): {limits['sha256_file_mibs']:.0f} MiB/s")
    limits["sha256_mibs"] = max(limits["sha256_openssl_mibs"], limits["sha256_file_mibs"])

    seconds = timed(["curl", "-sS", "-o", "/dev/null", f"{args.base}/full/{os.path.basename(args.source)}"])
    limits["loopback_curl_null_mibs"] = size / MiB / seconds
    print(f"   loopback, curl 1 connection unthrottled to /dev/null: {limits['loopback_curl_null_mibs']:.0f} MiB/s")
    # What the throttled origin delivers on this machine to N bare clients (curl to /dev/null, one
    # Range of 1/N of the file each, so no request starts mid-run): nginx paces by sleeping after
    # each send, so CPU taken from it by the clients comes off the rate, and N × cap is not reached
    # even by clients that do nothing with the bytes.
    limits["origin_mibs"] = {}
    name = os.path.basename(args.source)
    for n in args.connections:
        best = 0.0
        for _ in range(2):
            part = size // n
            start = time.monotonic()
            procs = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-r",
                                       f"{i * part}-{size - 1 if i == n - 1 else (i + 1) * part - 1}",
                                       f"{args.base}/throttled/{name}"]) for i in range(n)]
            if any(p.wait() != 0 for p in procs):
                raise SystemExit("curl against the throttled route failed")
            best = max(best, size / MiB / (time.monotonic() - start))
        limits["origin_mibs"][str(n)] = best
        print(f"   throttled origin, {n} curls in parallel (one Range each) to /dev/null: {best:.0f} MiB/s "
              f"({best / (n * args.rate_mib):.1%} of {n} × {args.rate_mib}; best of 2)")
    limits["ideal_mibs"] = {}
    for n in args.connections + [1]:
        ideal = min(n * args.rate_mib, limits["disk_mibs"], limits["sha256_mibs"])
        limits["ideal_mibs"][str(n)] = ideal
    print("   ideal (throttled) = min(N × %d MiB/s, disk %.0f, SHA-256 %.0f): %s" % (
        args.rate_mib, limits["disk_mibs"], limits["sha256_mibs"],
        ", ".join(f"N={n}: {limits['ideal_mibs'][str(n)]:.0f} MiB/s" for n in args.connections)))
    return limits


# ---------------------------------------------------------------- runs

def is_https(route):
    """TLS routes: https- (HTTP/1.1, as axel and aria2c need) and h2- (the same nginx offering HTTP/2
    too, as real CDNs do; each client takes what it asks for)."""
    return route.startswith(("https-", "h2-"))


def route_base(args, route):
    """The origin's base URL and path folder of a route."""
    if route.startswith("h2-"):
        return args.h2_base, route[len("h2-"):]
    if route.startswith("https-"):
        return args.tls_base, route[len("https-"):]
    return args.base, route


def is_throttled(route):
    return route.endswith("throttled")


def command(args, tool, n, route, output):
    """The command line of one run. On an https- route every client is told to trust the bench's
    self-signed certificate with its own option (axel and hf_transfer through SSL_CERT_FILE, see
    tool_env); verification stays on for all."""
    tls = is_https(route)
    base, path = route_base(args, route)
    url = f"{base}/{path}/{os.path.basename(args.source)}"
    if tool in args.variants or tool == "provision":
        binary = args.variants[tool][0] if tool in args.variants else args.bin
        return [binary, "download", url, "--output", output, "--connections", str(n), "--allow-loopback", "--json"] + (
            ["--ca-file", args.ca_file] if tls else [])
    if tool == "curl":
        return ["curl", "-sS", "--fail", "-o", output] + (["--cacert", args.ca_file] if tls else []) + [url]
    if tool == "aria2c":
        return ["aria2c", "-x", str(n), "-s", str(n), "-k", "1M", "--file-allocation=falloc",
                "-d", os.path.dirname(output), "-o", os.path.basename(output), "--allow-overwrite=true",
                "--auto-file-renaming=false", "--console-log-level=error", "--summary-interval=0", "-q"] + (
                    [f"--ca-certificate={args.ca_file}", "--check-certificate=true"] if tls else []) + [url]
    if tool == "axel":
        return ["axel", "-q", "-n", str(n), "-o", output, url]
    if tool == "hf_transfer":
        return [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_get.py"),
                url, output, str(n), str(args.hf_chunk_mib * MiB)]
    raise ValueError(tool)


def tool_env(args, tool, route):
    """The environment of one run: a variant's settings; on an https- route, SSL_CERT_FILE for the
    clients without a CA option of their own (axel's OpenSSL, hf_transfer's rustls native roots)."""
    env = dict(args.variants[tool][1]) if tool in args.variants else {}
    if is_https(route) and tool in ("axel", "hf_transfer"):
        env["SSL_CERT_FILE"] = args.ca_file
    return env or None


def machine_busy_fraction(window=0.5):
    busy, start = machine_busy(), time.monotonic()
    time.sleep(window)
    return (machine_busy() - busy) / ((time.monotonic() - start) * os.cpu_count())


WAIT_LEFT = [0.0]


def wait_for_quiet(args):
    """Waits (within --quiet-wait per run and --quiet-budget overall) until the machine is nearly idle:
    other work on these 2 CPUs takes the CPU time the downloads need. Returns the busy fraction."""
    start = time.monotonic()
    while True:
        busy = machine_busy_fraction()
        waited = time.monotonic() - start
        if busy <= args.quiet_busy or waited >= args.quiet_wait or WAIT_LEFT[0] - waited <= 0:
            WAIT_LEFT[0] = max(0.0, WAIT_LEFT[0] - waited)
            return busy, waited


def one_run(args, size, source_sha, tool, n, route, rep, logs):
    settle(args.dest)
    if args.settle > 0:
        # Memory freed by the previous run's output, left long enough for a VM with free page
        # reporting to hand it back: what a machine that has been up a while offers a download.
        time.sleep(args.settle)
    busy_before, waited = wait_for_quiet(args)
    output = os.path.join(args.dest, "model.bin")
    prefix = os.path.join(logs, f"{tool}-{route}-{n}-{rep}")
    env = tool_env(args, tool, route)
    seconds, usage, code = measured(command(args, tool, n, route, output), prefix, env)
    sync_seconds = timed(["sync"])  # what a peer leaves to the kernel; provision fsyncs inside its time
    record = {"tool": tool, "n": n, "route": route, "rep": rep, "seconds": seconds, "exit": code,
              "sync_seconds": sync_seconds, "busy_before": busy_before, "waited_for_quiet": waited, **usage}
    if is_provision(args, tool):
        try:
            reported = json.loads(open(prefix + ".out").read().strip().splitlines()[-1])
            record["reported_seconds"] = reported["seconds"]
            record["reported_sha256"] = reported["sha256"]
            record["fetched_bytes"] = reported["fetched_bytes"]
        except (ValueError, IndexError, KeyError):
            pass
    ok = code == 0 and os.path.exists(output) and os.path.getsize(output) == size
    # The check of the output is what a peer's user would run to know the file is the right one
    # (provision hashes inside its own time): timed, after the sync, from the page cache.
    verify_start = time.monotonic()
    record["sha256_ok"] = ok and sha256_file(output) == source_sha
    record["verify_seconds"] = time.monotonic() - verify_start
    if is_provision(args, tool):
        record["sha256_ok"] = record["sha256_ok"] and record.get("reported_sha256") == source_sha
    mibs = size / MiB / seconds
    status = "ok" if record["sha256_ok"] else f"FAILED (exit {code}, see {prefix}.err)"
    print(f"   {tool:12} N={n:<2} {route:9} {seconds:7.2f} s {mibs:7.1f} MiB/s  +sync {sync_seconds:5.2f} s"
          f"  cpu {usage['cpu_seconds']:5.2f} s, nginx {usage['nginx_cpu_seconds']:4.2f}, rest {usage['other_cpu_seconds']:4.2f}"
          f"  rss {usage['max_rss_kb'] / 1024:5.1f} MiB  sha256 {status}"
          f"  (busy before {busy_before:.0%}{f', waited {waited:.0f} s' if waited >= 1 else ''})", flush=True)
    clear(args.dest)
    return record


def is_provision(args, tool):
    return tool == "provision" or tool in args.variants


def plan(args):
    runs = []
    for route in args.routes:
        for n in args.connections:
            for tool in ("provision",) + tuple(args.variants) + PEERS:
                if tool in args.only or tool in args.variants:
                    runs.append((tool, n, route))
        if "curl" in args.only:
            runs.append(("curl", 1, route))
    return runs


# ---------------------------------------------------------------- report

def summarise(args, size, limits, records):
    rows = {}
    for r in records:
        rows.setdefault((r["tool"], r["n"], r["route"]), []).append(r)
    table = []
    for (tool, n, route), rs in rows.items():
        good = [r for r in rs if r["sha256_ok"]]
        # Best of the repeats: other work on the machine only ever adds time, so the fastest run is
        # the closest to what the tool can do here; the median is kept beside it.
        best = min(good, key=lambda r: r["seconds"]) if good else None
        seconds = best["seconds"] if best else None
        row = {"tool": tool, "n": n, "route": route, "runs": len(rs), "verified": len(good),
               "seconds": seconds, "seconds_median": statistics.median(r["seconds"] for r in good) if good else None,
               # A run that failed or did not verify counts as the worst.
               "seconds_worst": (max(r["seconds"] for r in good) if len(good) == len(rs) else float("inf")) if good else None,
               "seconds_all": [round(r["seconds"], 3) for r in rs],
               "mibs": size / MiB / seconds if seconds else None,
               "seconds_with_sync": min(r["seconds"] + r["sync_seconds"] for r in good) if good else None,
               # Equal work: on disk and its SHA-256 known. provision's own time already is that.
               "seconds_verified": (min(r["seconds"] + (0 if is_provision(args, tool) else r["sync_seconds"] + r.get("verify_seconds", 0))
                                        for r in good) if good else None),
               "cpu_seconds": best["cpu_seconds"] if best else None,
               "other_cpu_seconds": best["other_cpu_seconds"] if best else None,
               "max_rss_kb": max(r["max_rss_kb"] for r in rs)}
        if is_throttled(route) and row["mibs"]:
            row["ideal_mibs"] = limits["ideal_mibs"][str(n)]
            row["ratio_to_ideal"] = row["mibs"] / row["ideal_mibs"]
            row["ratio_to_ideal_median"] = size / MiB / row["seconds_median"] / row["ideal_mibs"]
            row["ratio_to_ideal_worst"] = size / MiB / row["seconds_worst"] / row["ideal_mibs"]
            if route == "throttled" and str(n) in limits.get("origin_mibs", {}):
                row["ratio_to_origin"] = row["mibs"] / limits["origin_mibs"][str(n)]
        table.append(row)
    order = {t: i for i, t in enumerate(("provision",) + tuple(args.variants) + ("aria2c", "axel", "hf_transfer", "curl"))}
    table.sort(key=lambda r: (args.routes.index(r["route"]), r["n"] if r["tool"] != "curl" else 99, order[r["tool"]]))

    comparisons = []
    variants = []
    for route in args.routes:
        for n in args.connections:
            mine = next((r for r in table if r["tool"] == "provision" and r["n"] == n and r["route"] == route and r["mibs"]), None)
            peers = [r for r in table if r["tool"] in PEERS and r["n"] == n and r["route"] == route and r["mibs"]]
            if not mine or not peers:
                continue
            best = max(peers, key=lambda r: r["mibs"])
            best_sync = min(peers, key=lambda r: r["seconds_with_sync"])
            best_verified = min(peers, key=lambda r: r["seconds_verified"])
            for label in args.variants:
                other = next((r for r in table if r["tool"] == label and r["n"] == n and r["route"] == route and r["mibs"]), None)
                if other:
                    variants.append({"route": route, "n": n, "variant": label, "variant_over_provision": other["mibs"] / mine["mibs"],
                                     "variant_over_fastest_peer": other["mibs"] / best["mibs"]})
            curl = next((r for r in table if r["tool"] == "curl" and r["route"] == route and r["mibs"]), None)
            comparisons.append({"route": route, "n": n, "fastest_peer": best["tool"],
                                "provision_over_curl": mine["mibs"] / curl["mibs"] if curl else None,
                                "provision_over_fastest_peer_median": best["seconds_median"] / mine["seconds_median"],
                                "provision_over_fastest_peer": mine["mibs"] / best["mibs"],
                                "fastest_peer_to_disk": best_sync["tool"],
                                "provision_over_fastest_peer_to_disk": best_sync["seconds_with_sync"] / mine["seconds_with_sync"],
                                "fastest_peer_verified": best_verified["tool"],
                                "provision_over_fastest_peer_verified": best_verified["seconds_verified"] / mine["seconds_verified"]})
    return table, comparisons, variants


def targets(table, comparisons):
    """The targets of issue 21: throttled N=16 in every run (the worst of the series), the ratios to
    the fastest peer and to one plain curl in the same run (load on the machine cancels out)."""
    checks = []
    for n, goal in ((8, 0.95), (16, 0.95)):
        row = next((r for r in table if r["tool"] == "provision" and r["n"] == n and r["route"] == "throttled" and r.get("ratio_to_ideal")), None)
        if row:
            checks.append((f"provision ≥ {goal:.0%} of ideal at N={n} (throttled), every run", f"worst {row['ratio_to_ideal_worst']:.1%}, "
                           f"median {row['ratio_to_ideal_median']:.1%}, best {row['ratio_to_ideal']:.1%} ({row['verified']}/{row['runs']} runs)",
                           row["ratio_to_ideal_worst"] >= goal))
    for c in comparisons:
        checks.append((f"provision ≥ 1.0× fastest peer, N={c['n']} {c['route']}", f"{c['provision_over_fastest_peer']:.2f}× {c['fastest_peer']} "
                       f"(medians {c['provision_over_fastest_peer_median']:.2f}×)", c["provision_over_fastest_peer"] >= 1.0))
        checks.append((f"provision ≥ 1.0× fastest peer to a verified file on disk (peer + sync + sha256), N={c['n']} {c['route']}",
                       f"{c['provision_over_fastest_peer_verified']:.2f}× {c['fastest_peer_verified']}", c["provision_over_fastest_peer_verified"] >= 1.0))
        if c["n"] == 8 and not is_throttled(c["route"]) and c.get("provision_over_curl"):
            checks.append((f"provision ≥ 1.05× one plain curl, N=8 {c['route']}", f"{c['provision_over_curl']:.2f}×", c["provision_over_curl"] >= 1.05))
    rss = [r["max_rss_kb"] for r in table if r["tool"] == "provision"]
    if rss:
        checks.append(("provision max RSS < 64 MB", f"{max(rss) * 1024 / 1e6:.1f} MB", max(rss) < RSS_TARGET_KB))
    return checks


def print_report(args, size, limits, table, comparisons, variants, checks):
    print()
    print(f"{size / MiB:.0f} MiB file, best of {args.repeat} run(s) each (curl on a throttled route: 1 run), median and worst beside it; "
          f"ideal (throttled) = min(N × {args.rate_mib} MiB/s, disk {limits['disk_mibs']:.0f} MiB/s, SHA-256 {limits['sha256_mibs']:.0f} MiB/s)")
    print("provision's time includes its SHA-256 and its fsync; the peers hash nothing and leave the write-back to the kernel (column 's with sync': best seconds + the sync after;"
          " column 's verified': + the SHA-256 of the output too, the same work provision's time holds).")
    print(f"The throttled origin paced with nginx's {'millisecond clock (--origin-pacing exact)' if args.origin_pacing == 'exact' else 'event-loop clock (--origin-pacing loop)'}.")
    if getattr(args, "settle", 0):
        print(f"Each run started {args.settle:g} s after the previous run's output was deleted (--settle).")
    print()
    header = "| tool | N | route | seconds | median s | worst s | MiB/s | ratio to ideal (best / median / worst) | ÷ origin's delivery | s with sync | s verified | CPU s | others' CPU s | max RSS MiB |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in table:
        if r["seconds"] is None:
            print(f"| {r['tool']} | {r['n']} | {r['route']} | failed | | | | | | | | | | {r['max_rss_kb'] / 1024:.1f} |")
            continue
        ratio = (f"{r['ratio_to_ideal']:.1%} / {r['ratio_to_ideal_median']:.1%} / {r['ratio_to_ideal_worst']:.1%}"
                 if r.get("ratio_to_ideal") else "–")
        origin = f"{r['ratio_to_origin']:.1%}" if r.get("ratio_to_origin") else "–"
        print(f"| {r['tool']} | {r['n']} | {r['route']} | {r['seconds']:.2f} | {r['seconds_median']:.2f} | {r['seconds_worst']:.2f} | {r['mibs']:.0f} | {ratio} | {origin} | "
              f"{r['seconds_with_sync']:.2f} | {r['seconds_verified']:.2f} | {r['cpu_seconds']:.2f} | {r['other_cpu_seconds']:.2f} | {r['max_rss_kb'] / 1024:.1f} |")
    print()
    for c in comparisons:
        print(f"provision ÷ fastest peer, N={c['n']:<2} {c['route']:9}: {c['provision_over_fastest_peer']:.2f}× ({c['fastest_peer']})"
              f"; to disk (peer + sync): {c['provision_over_fastest_peer_to_disk']:.2f}× ({c['fastest_peer_to_disk']})"
              f"; to a verified file (peer + sync + sha256): {c['provision_over_fastest_peer_verified']:.2f}× ({c['fastest_peer_verified']})"
              + (f"; ÷ one plain curl: {c['provision_over_curl']:.2f}×" if c.get("provision_over_curl") else ""))
    for v in variants:
        print(f"{v['variant']} ÷ provision, N={v['n']:<2} {v['route']:9}: {v['variant_over_provision']:.2f}×; "
              f"÷ fastest peer: {v['variant_over_fastest_peer']:.2f}×")
    print()
    for name, value, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {value}")


# ---------------------------------------------------------------- resume

def served_since(log, offset):
    """Body bytes nginx logged as sent for the requests it finished after `offset` of its access log
    ('$status $body_bytes_sent "$http_range"'), probes (`Range: bytes=0-0`, one byte each) aside."""
    with open(log, "rb") as f:
        f.seek(offset)
        data = f.read()
    total = 0
    for line in data.decode().splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[2].strip('"') != "bytes=0-0":
            total += int(parts[1])
    return total, offset + len(data)


def planned_chunk(size, n):
    """provision's chunk size (ChunkPlan.chunkSize), for a run killed before it saved a state."""
    return min(64 * MiB, max(8 * MiB, size // (n * 8)))


def resume_runs(args, size, source_sha, logs, table):
    """provision killed with SIGKILL part-way (at 1/(R+1), 2/(R+1), ... of its best time), then run
    again to the end: what the origin served in all beyond the file's size is the resume overhead."""
    records = []
    output = os.path.join(args.dest, "model.bin")
    global CURRENT
    for route, n, rep, tool in ((route, n, rep, tool) for route in args.routes if not is_https(route) for n in args.connections
                                for rep in range(args.repeat) for tool in ("provision",) + tuple(args.variants)):
        row = next((r for r in table if r["tool"] == tool and r["n"] == n and r["route"] == route and r["seconds"]), None)
        if not row:
            continue
        fraction = (rep + 1) / (args.repeat + 1)
        settle(args.dest)
        wait_for_quiet(args)
        cmd = command(args, tool, n, route, output)
        env = tool_env(args, tool, route)
        prefix = os.path.join(logs, f"resume-{tool}-{route}-{n}-{rep}")
        offset = os.path.getsize(args.access_log)
        with open(prefix + ".first.err", "wb") as err:
            CURRENT = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                       env={**os.environ, **env} if env else None)
            try:
                CURRENT.wait(timeout=row["seconds"] * fraction)
                killed = False
            except subprocess.TimeoutExpired:
                CURRENT.kill()  # SIGKILL: nothing more is saved
                killed = True
            CURRENT.wait()
            CURRENT = None
        time.sleep(0.5)  # nginx logs a request once it notices the closed connection
        served_first, offset = served_since(args.access_log, offset)
        try:
            state = json.load(open(output + ".partial.state"))
            recorded, chunk = sum(state["written"]), state["chunk_size"]
        except (OSError, ValueError, KeyError):
            recorded, chunk = 0, planned_chunk(size, n)
        seconds, _, code = measured(cmd, prefix + ".second", env)
        time.sleep(0.5)
        served_second, offset = served_since(args.access_log, offset)
        try:
            reported = json.loads(open(prefix + ".second.out").read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            reported = {}
        ok = code == 0 and os.path.exists(output) and sha256_file(output) == source_sha
        again = served_first + served_second - size
        record = {"tool": tool, "route": route, "n": n, "rep": rep, "killed": killed, "killed_after": row["seconds"] * fraction,
                  "served_first": served_first, "recorded_in_state": recorded, "second_seconds": seconds,
                  "second_fetched": reported.get("fetched_bytes"), "second_resumed": reported.get("resumed_bytes"),
                  "served_second": served_second, "served_again": again, "chunk_size": chunk,
                  "chunks_again": again / chunk, "sha256_ok": ok}
        records.append(record)
        print(f"   {tool:12} N={n:<2} {route:9} killed at {record['killed_after']:.2f} s ({fraction:.0%}; {'SIGKILL' if killed else 'it had finished'}):"
              f" origin had sent {served_first / MiB:.0f} MiB, the state recorded {recorded / MiB:.0f} MiB;"
              f" the second run {seconds:.2f} s, origin sent {served_second / MiB:.0f} MiB;"
              f" {again / MiB:.1f} MiB sent twice = {again / chunk:.2f} chunks of {chunk / MiB:.0f} MiB (bound: {n})"
              f"  sha256 {'ok' if ok else 'FAILED'}", flush=True)
        clear(args.dest)
    return records


def resume_checks(records):
    killed = [r for r in records if r["killed"] and r.get("tool", "provision") == "provision"]
    if not killed:
        return []
    worst = max(killed, key=lambda r: r["chunks_again"] / r["n"])
    ok = all(r["sha256_ok"] and r["served_again"] <= r["n"] * r["chunk_size"] for r in killed)
    return [("provision after SIGKILL sends again at most one chunk per connection",
             f"worst {worst['chunks_again']:.2f} chunks at N={worst['n']} {worst['route']} ({len(killed)} kills)", ok)]


# ---------------------------------------------------------------- profile

def profile(args, size, source_sha, logs):
    """provision once more per route at the largest N, under strace -c and perf record (when present)."""
    os.makedirs(args.profile_dir, exist_ok=True)
    n = max(args.connections)
    output = os.path.join(args.dest, "model.bin")
    for route in args.routes:
        base = command(args, "provision", n, route, output)
        if shutil.which("strace"):
            settle(args.dest)
            path = os.path.join(args.profile_dir, f"strace-{route}-{n}.txt")
            measured(["strace", "-f", "-c", "-o", path] + base, os.path.join(logs, f"strace-{route}"))
            calls = {}
            for line in open(path):
                parts = line.split()
                if len(parts) >= 5 and parts[-1] in ("pwrite64", "futex", "recvfrom", "pread64", "epoll_wait", "poll"):
                    calls[parts[-1]] = int(parts[3])
            summary = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
            per_write = size / calls["pwrite64"] / 1024 if calls.get("pwrite64") else 0
            print(f"   strace -f -c {route} N={n}: {summary}; {per_write:.0f} KiB per pwrite ({path})")
        if shutil.which("perf"):
            settle(args.dest)
            data = os.path.join(args.profile_dir, f"perf-{route}-{n}.data")
            measured(["perf", "record", "-q", "-g", "-o", data] + base, os.path.join(logs, f"perf-{route}"))
            report = os.path.join(args.profile_dir, f"perf-{route}-{n}.txt")
            with open(report, "w") as f:
                for sort, extra in (("comm,dso", ["-g", "none"]), ("dso,sym", ["-g", "none", "--percent-limit", "0.5"]),
                                    ("sym", ["-g", "caller,0.5,callee", "--percent-limit", "3"])):
                    f.write(f"######## perf report --sort {sort}\n")
                    f.flush()
                    subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort] + extra,
                                   stdout=f, stderr=subprocess.DEVNULL)
            os.unlink(data)
            print(f"   perf report: {report}")
    clear(args.dest)


def report_again(path):
    """Prints the table of a results.json again (python3 bench.py --report FILE)."""
    data = json.load(open(path))
    args = argparse.Namespace(repeat=data["repeat"], rate_mib=data["rate_mib"], connections=data["connections"], settle=data.get("settle", 0),
                              origin_pacing=data.get("origin_pacing", "loop"),
                              routes=list(dict.fromkeys(r["route"] for r in data["runs"])),
                              variants={k: (v["bin"], v["env"]) for k, v in data.get("variant_definitions", {}).items()})
    table, comparisons, variants = summarise(args, data["size_bytes"], data["limits"], data["runs"])
    checks = targets(table, comparisons) + resume_checks(data.get("resumes", []))
    print_report(args, data["size_bytes"], data["limits"], table, comparisons, variants, checks)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        return report_again(sys.argv[2])
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--tls-base", default="", help="https://127.0.0.1:PORT of the same nginx's TLS server")
    parser.add_argument("--h2-base", default="", help="https://127.0.0.1:PORT of the same nginx's TLS server that offers HTTP/2")
    parser.add_argument("--ca-file", default="", help="the TLS server's self-signed certificate, for the clients to trust")
    parser.add_argument("--series", action="store_true", help="(recorded only) the run is a series: targets on the worst run")
    parser.add_argument("--source", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--connections", default="8 16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate-mib", type=int, default=40)
    parser.add_argument("--only", default="provision,curl,aria2c,axel,hf_transfer")
    parser.add_argument("--routes", default="throttled,full")
    parser.add_argument("--hf-chunk-mib", type=int, default=10)
    parser.add_argument("--results", required=True)
    parser.add_argument("--load-before", default="")
    parser.add_argument("--profile-dir")
    parser.add_argument("--nginx-pid", type=int, default=0)
    parser.add_argument("--quiet-busy", type=float, default=0.15, help="machine busy fraction that counts as quiet")
    parser.add_argument("--quiet-wait", type=float, default=15, help="seconds to wait for quiet before one run")
    parser.add_argument("--quiet-budget", type=float, default=180, help="seconds to wait for quiet in all")
    parser.add_argument("--settle", type=float, default=0, help="seconds to wait after deleting the previous output")
    parser.add_argument("--access-log", default="", help="nginx's access log (status, body bytes, Range); empty: no resume runs")
    parser.add_argument("--origin-pacing", default="exact", choices=["exact", "loop"], help="how nginx paces /throttled/ (recorded only)")
    parser.add_argument("--variant", action="append", default=[],
                        help="'LABEL BIN [VAR=VALUE ...]': another provision binary (or settings) run beside provision")
    args = parser.parse_args()
    args.connections = [int(x) for x in re.split(r"[ ,]+", args.connections.strip())]
    args.only = set(args.only.split(","))
    args.routes = [r for r in args.routes.split(",") if r]
    if any(r.startswith("https-") for r in args.routes) and not (args.tls_base and args.ca_file):
        parser.error("https- routes need --tls-base and --ca-file")
    if any(r.startswith("h2-") for r in args.routes) and not (args.h2_base and args.ca_file):
        parser.error("h2- routes need --h2-base and --ca-file")
    args.variants = {}
    for spec in args.variant:
        label, binary, *assignments = spec.split()
        args.variants[label] = (binary, dict(a.split("=", 1) for a in assignments))
    signal.signal(signal.SIGTERM, on_term)
    WAIT_LEFT[0] = args.quiet_budget
    global NGINX_PID
    NGINX_PID = args.nginx_pid

    size = os.path.getsize(args.source)
    logs = os.path.join(os.path.dirname(args.results), "logs")
    os.makedirs(logs, exist_ok=True)
    print("== limits")
    limits = measure_limits(args, size)
    print(f"== runs: one at a time, round-robin over {args.repeat} repeat(s); outputs deleted and `sync` between runs")
    records = []
    runs = plan(args)
    for rep in range(args.repeat):
        for tool, n, route in runs:
            if tool == "curl" and is_throttled(route) and rep > 0:
                continue  # size ÷ 40 MiB/s each time, and always the same
            records.append(one_run(args, size, limits["source_sha256"], tool, n, route, rep, logs))
    table, comparisons, variants = summarise(args, size, limits, records)
    checks = targets(table, comparisons)
    resumes = []
    if args.access_log and "provision" in args.only:
        print("== resume: provision killed part-way, then run again")
        resumes = resume_runs(args, size, limits["source_sha256"], logs, table)
        checks += resume_checks(resumes)
    print_report(args, size, limits, table, comparisons, variants, checks)
    if args.profile_dir:
        print("== profile")
        profile(args, size, limits["source_sha256"], logs)

    results = {"size_bytes": size, "connections": args.connections, "repeat": args.repeat, "rate_mib": args.rate_mib, "settle": args.settle,
               "origin_pacing": args.origin_pacing, "series": args.series,
               "cpus": os.cpu_count(), "load_before": args.load_before, "limits": limits, "table": table,
               "comparisons": comparisons, "variants": variants,
               "variant_definitions": {k: {"bin": b, "env": e} for k, (b, e) in args.variants.items()}, "targets": [{"target": n, "value": v, "met": ok} for n, v, ok in checks],
               "runs": records, "resumes": resumes}
    with open(args.results, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nresults: {args.results}")
    failed = sorted({r["tool"] for r in records if not r["sha256_ok"]})
    if failed:
        print(f"runs that failed or did not verify: {', '.join(failed)} (see {logs})", file=sys.stderr)
        if any(is_provision(args, t) for t in failed):
            sys.exit(1)


if __name__ == "__main__":
    main()
