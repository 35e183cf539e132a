"""How cost grows with connections: fan-out and per-user events at 1,000 to 20,000 connected clients.

    [PORT=3198] .venv/bin/python benchmarks/scaling.py [--sizes 1000 5000 10000 20000] [--servers blocks-rt node-ref]
                                                       [--rounds 1] [--no-heap]

For each size and server it starts the server fresh for each scenario (pinned to CPU 0, the perf kit's load
generator, the real socket.io-client 4.8, on CPU 1; loopback only) and runs the kit's scenarios with that many
clients: `connect` (connects/s, RSS per connection), `fanout` (every client watches one property; the number of
events is chosen so each run makes about 500,000 deliveries) and `targeted` (20,000 per-user notifications to
random clients). blocks-rt runs with `--strict` payloads and every layer on (JWT, validation, routing, event
log; pacing off). A last `connect` pass runs blocks-rt with tracemalloc (`heap_probe.py`) for the Python heap
per connection: an upper bound, since the peak includes what the connect storm leaves for the collector.

Prints a table per server and the ratio of each figure at every size to its figure at the smallest size
(flat = 1.0); writes summary.json under benchmarks/results/scaling-<time>/. Every loop is bounded by the
load generator's client and event counts and its timeout. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from compare import KIT, ROOT, SERVERS, ensure_kit

PORT = int(os.environ.get("PORT", "3198"))  # the kit's convention: set PORT to a free port of your own
FANOUT_DELIVERIES = 500_000
TARGETED_EVENTS = 20_000
JWT_SECRET = "scaling-jwt-secret-0123456789abcdef-0123456789"
API_KEY = "scaling-api-key"


def raise_fd_limit(needed: int) -> None:
    """Servers and the load generator each hold one descriptor per client (root may raise the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(needed, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, hard), hard))
        if hard < needed:  # e.g. a sandbox that caps the hard limit: the largest sizes will run out of descriptors
            print(f"warning: open files capped at {hard} (wanted {needed}); the load generator needs one per client "
                  "and a little more, so sizes near that cap fail with EMFILE", file=sys.stderr)


def users_file(size: int) -> Path:
    path = KIT / "work" / f"users-{size}.json"
    if not path.exists():
        subprocess.run(["node", "loadgen/make-users.js", str(path), str(size)], cwd=KIT, check=True,
                       capture_output=True)
    return path


def start_server(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        server = subprocess.Popen(["taskset", "-c", "0", "bash", "-c", f"exec {command}"], cwd=KIT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited; see {log}")
        probe = subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{PORT}"], capture_output=True)
        if probe.returncode == 0:
            time.sleep(0.3)
            return server
        time.sleep(0.1)
    stop(server)
    raise RuntimeError(f"server did not listen on {PORT} within 20 s")


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def loadgen(scenario: str, size: int, server: subprocess.Popen[bytes], strict: bool, log: Path) -> dict[str, Any]:
    args = ["--scenario", scenario, "--clients", str(size), "--concurrency", "100", "--timeout", "240"]
    if scenario == "fanout":
        events = max(10, FANOUT_DELIVERIES // size)
        args += ["--events", str(events), "--batch", str(min(50, events)), "--rate", "0", "--inflight", "1"]
    elif scenario == "targeted":
        args += ["--events", str(TARGETED_EVENTS), "--batch", "50", "--rate", "0", "--inflight", "4"]
    args += ["--url", f"http://127.0.0.1:{PORT}", "--jwt-secret", JWT_SECRET, "--api-key", API_KEY,
             "--users", str(users_file(size)), "--server-pid", str(server.pid), "--name", scenario]
    if strict:
        args.append("--strict")
    with log.open("ab") as err:
        done = subprocess.run(["taskset", "-c", "1", "node", "loadgen/loadgen.js", *args], cwd=KIT,
                              stdout=subprocess.PIPE, stderr=err, timeout=300, check=False)
    if done.returncode != 0:
        return {"error": f"loadgen exit {done.returncode}; see {log}"}
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def figures(scenario: str, run: dict[str, Any]) -> dict[str, float | None]:
    """The figures of merit of one run; a run that lost, duplicated or misrouted anything is refused."""
    if "error" in run:
        raise RuntimeError(run["error"])
    delivery = run.get("delivery")
    if delivery and (delivery["lost"] or delivery["duplicated"] or delivery.get("misrouted")):
        raise RuntimeError(f"{scenario}: invalid run (lost/duplicated/misrouted): {delivery}")
    cpu_s = run["cpu"].get("server_cpu_s")
    if scenario == "connect":
        connect = run["connect"]
        return {"connects/s": connect["rate_per_s"], "RSS KiB/conn": run.get("rss", {}).get("per_conn_kib")}
    delivered = delivery["delivered"] if delivery else 0
    return {"µs/delivery": 1e6 * cpu_s / delivered if cpu_s and delivered else None,
            "p50 ms": delivery["latency_ms"]["p50"] if delivery else None,
            "p99 ms": delivery["latency_ms"]["p99"] if delivery else None}


def heap_per_connection(size: int, env: dict[str, str], log: Path, outdir: Path) -> float | None:
    probe = outdir / f"heap-{size}.json"
    command = f"{SERVERS['blocks-rt']['cmd']} {ROOT}/benchmarks/heap_probe.py {probe}"
    server = start_server(command, env, log)
    try:
        run = loadgen("connect", size, server, True, log)
    finally:
        stop(server)
    if "error" in run or not probe.exists():
        return None
    heap = json.loads(probe.read_text())
    return round((heap["max"] - heap["first"]) / 1024 / run["connect"]["connected"], 2)


def server_env(name: str, size: int) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKS_RT_")}
    return {**base, "PORT": str(PORT), "JWT_SECRET": JWT_SECRET, "API_KEY": API_KEY,
            "USERS_FILE": str(users_file(size)), "BLOCKS_RT_MAX_SOCKETS_PER_USER": "10"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 10000, 20000])
    parser.add_argument("--servers", nargs="+", default=["blocks-rt", "node-ref"], choices=list(SERVERS))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-heap", action="store_true", help="skip the tracemalloc pass")
    args = parser.parse_args()
    ensure_kit()
    raise_fd_limit(2 * max(args.sizes) + 1024)
    outdir = ROOT / "benchmarks" / "results" / time.strftime("scaling-%Y%m%d-%H%M%S")
    outdir.mkdir(parents=True)
    log = outdir / "runs.log"
    table: dict[str, dict[int, dict[str, float | None]]] = {name: {} for name in args.servers}
    for size in args.sizes:
        for name in args.servers:
            runs: list[dict[str, float | None]] = []
            for _ in range(args.rounds):
                merged: dict[str, float | None] = {}
                for scenario in ("connect", "fanout", "targeted"):
                    print(f"{name} {size} clients: {scenario}", file=sys.stderr, flush=True)
                    server = start_server(str(SERVERS[name]["cmd"]), server_env(name, size), log)
                    try:
                        run = loadgen(scenario, size, server, bool(SERVERS[name]["strict"]), log)
                    finally:
                        stop(server)
                    prefix = "" if scenario == "connect" else f"{scenario} "
                    merged |= {prefix + k: v for k, v in figures(scenario, run).items()}
                runs.append(merged)
            row = {key: _median([r[key] for r in runs]) for key in runs[0]}
            if name == "blocks-rt" and not args.no_heap:
                row["heap KiB/conn"] = heap_per_connection(size, server_env(name, size), log, outdir)
            table[name][size] = row
            # after every size, so a run that fails at a larger size keeps what it measured
            (outdir / "summary.json").write_text(
                json.dumps({n: {str(s): r for s, r in t.items()} for n, t in table.items()}, indent=1))
    for name, rows in table.items():
        print_table(name, rows)
    if "blocks-rt" in table:
        print_versus(table)
    print(f"\nsummary.json and the run log in {outdir}")


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def print_table(name: str, rows: dict[int, dict[str, float | None]]) -> None:
    sizes = sorted(rows)
    keys = list(rows[sizes[0]])
    print(f"\n{name}: figure at each size (and × its figure at {sizes[0]:,} clients)")
    print(f"{'':>24}" + "".join(f"{s:>20,}" for s in sizes))
    for key in keys:
        first = rows[sizes[0]].get(key)
        cells = []
        for size in sizes:
            value = rows[size].get(key)
            ratio = f" ({value / first:.2f}x)" if value is not None and first else ""
            cells.append(f"{'–' if value is None else f'{value:,.2f}'}{ratio}")
        print(f"{key:>24}" + "".join(f"{c:>20}" for c in cells))


def print_versus(table: dict[str, dict[int, dict[str, float | None]]]) -> None:
    """How many times better blocks-rt is than each other server at each size (> 1.0 is better)."""
    higher_better = {"connects/s"}
    ours = table["blocks-rt"]
    for name, rows in table.items():
        if name == "blocks-rt":
            continue
        sizes = sorted(set(ours) & set(rows))
        print(f"\nblocks-rt × {name} (> 1.0: blocks-rt better)")
        print(f"{'':>24}" + "".join(f"{s:>12,}" for s in sizes))
        for key in rows[sizes[0]]:
            cells = []
            for size in sizes:
                a, b = ours[size].get(key), rows[size].get(key)
                cells.append("–" if not a or not b else f"{(a / b if key in higher_better else b / a):.2f}")
            print(f"{key:>24}" + "".join(f"{c:>12}" for c in cells))


if __name__ == "__main__":
    main()
