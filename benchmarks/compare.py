"""Side by side, in one run: blocks-rt against the Node.js Socket.IO reference and bare python-socketio.

    .venv/bin/python benchmarks/compare.py [--rounds 3] [--servers blocks-rt node-ref py-ref blocks-rt+admin]
                                           [--scenarios connect_1000 connect_3000 fanout_max ...]

Uses the perf kit of ../shared/perf (copied to .perf-kit/, git-ignored, `npm ci` on first use) and its load
generator, the real socket.io-client 4.8 (server pinned to CPU 0, load generator to CPU 1). Servers run
interleaved, one round of every server at a time, so the machine's mood is shared. Every run verifies
delivery (nothing lost, duplicated or misrouted) or is invalid; runs disturbed by other processes are
flagged noisy and left out of the medians when clean ones exist (the kit's rules).

Scenarios (the kit's names): connect storm (connect_1000, connect_3000: connects/s, KiB per connection),
property fan-out (fanout_max, fanout_paced at 10,000 deliveries/s), reward day (targeted_max: 20,000 per-user
events as fast as they drain) and targeted steady state (targeted_paced at 2,000 events/s). blocks-rt runs with
`--strict` payloads and BLOCKS_RT_EVENT_RATE=0, so delivery is measured, not the rate limit.

`--base DIR` adds `blocks-rt@base`: the same server run from another checkout of blocks-rt (e.g. `git archive
main | tar -x -C DIR`, on this venv's dependencies), interleaved with the others; its "vs" column is this
checkout's gain over it (> 1.0: this checkout is better), a before/after from one run.

`blocks-rt+admin` is blocks-rt with the Admin UI's instrumentation on (BLOCKS_RT_ADMIN=true, nobody
watching), `blocks-rt+admin-watched` the same with one admin logged in: their "vs" columns are the admin's
cost (> 1.0: blocks-rt without it is better by that factor).

Prints the table of medians and the ratios that the targets are about; writes JSON and CSV next to the raw
JSONL under benchmarks/results/<time>/. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / ".perf-kit"
SHARED_KIT = ROOT.parent / "shared" / "perf"
SERVERS = {
    "blocks-rt": {"cmd": f"{ROOT}/benchmarks/serve-contract.sh", "strict": True},
    "node-ref": {"cmd": "node node-ref/server.js", "strict": False},
    "py-ref": {"cmd": f"{ROOT}/.venv/bin/python py-ref/server.py", "strict": False},
    # The Admin UI's instrumentation on, nobody watching (what a gateway pays for having it available).
    "blocks-rt+admin": {"cmd": "env BLOCKS_RT_ADMIN=true BLOCKS_RT_ADMIN_PASSWORD=benchmark-admin-password "
                               f"{ROOT}/benchmarks/serve-contract.sh", "strict": True},
    # ... and one admin watching, as when someone has the UI open (benchmarks/admin_watcher.py).
    "blocks-rt+admin-watched": {"cmd": f"{ROOT}/benchmarks/serve-admin-watched.sh", "strict": True},
}
DEFAULT_SERVERS = ["blocks-rt", "node-ref", "py-ref"]
REFERENCES = ("node-ref", "py-ref", "blocks-rt+admin", "blocks-rt+admin-watched", "blocks-rt@base")
SCENARIOS = ["connect_1000", "connect_3000", "fanout_max", "fanout_paced", "targeted_max", "targeted_paced"]
METRICS = [  # (scenario, metric path in the kit's summary, label, lower is better)
    ("connect_1000", "connect_rate_per_s", "connects/s (1000)", False),
    ("connect_1000", "server_ms_per_connect", "server ms/connect", True),
    ("connect_3000", "rss_per_conn_kib", "KiB/conn (3000)", True),
    ("connect_1000", "rss_per_conn_kib", "KiB/conn (1000)", True),
    ("fanout_max", "server_us_per_delivery", "fanout µs/delivery", True),
    ("fanout_max", "deliveries_per_s", "fanout deliveries/s", False),
    ("fanout_paced", "latency_p99_ms", "fanout paced p99 ms", True),
    ("fanout_paced", "server_cpu_pct", "fanout paced CPU %", True),
    ("targeted_max", "server_us_per_delivery", "reward day µs/event", True),
    ("targeted_max", "deliveries_per_s", "reward day events/s", False),
    ("targeted_max", "latency_p99_ms", "reward day p99 ms", True),
    ("targeted_paced", "latency_p99_ms", "targeted paced p99 ms", True),
    ("targeted_paced", "server_cpu_pct", "targeted paced CPU %", True),
]


def ensure_kit() -> None:
    """A writable copy of the shared perf kit with its Node dependencies (the kit's own instructions)."""
    if not (KIT / "compare.sh").exists():
        shutil.copytree(SHARED_KIT, KIT)
        subprocess.run(["chmod", "-R", "u+w", str(KIT)], check=True)
    if not (KIT / "node_modules").exists():
        subprocess.run(["npm", "ci", "--silent"], cwd=KIT, check=True, timeout=600)


def progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = width * done // total
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}", end="", file=sys.stderr,
          flush=True)


def run_server(name: str, scenarios: list[str], out: Path) -> None:
    server = SERVERS[name]
    env = {"LABEL": name, "REPS": "1", "SCENARIOS": " ".join(scenarios), "OUT": str(out), "QUIET_WAIT_S": "20"}
    if server["strict"]:
        env |= {"LOADGEN_EXTRA": "--strict", "CONTRACT_EXTRA": "--strict"}
    with (out.parent / f"compare-{name}.log").open("a") as log:
        subprocess.run(["./compare.sh", server["cmd"]], cwd=KIT, env={**_base_env(), **env}, stdout=log,
                       stderr=log, timeout=1800, check=False)


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("BLOCKS_RT_")}


def summarize(raw: list[Path]) -> list[dict[str, Any]]:
    """The kit's summary: per (server, scenario) the median, min and max of each metric over the runs."""
    result = subprocess.run(["node", "loadgen/summarize.js", *map(str, raw)], cwd=KIT, capture_output=True,
                            text=True, check=True)
    summary: list[dict[str, Any]] = json.loads(result.stdout)["summary"]
    return summary


def pick(rows: list[dict[str, Any]], label: str, scenario: str, metric: str) -> float | None:
    for row in rows:
        if row.get("label") == label and row.get("name") == scenario and isinstance(row.get(metric), dict):
            return float(row[metric]["median"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", nargs="+", default=DEFAULT_SERVERS, choices=list(SERVERS))
    parser.add_argument("--scenarios", nargs="+", default=SCENARIOS, choices=SCENARIOS)
    parser.add_argument("--base", type=Path, help="also run blocks-rt from this checkout, as blocks-rt@base")
    args = parser.parse_args()
    if args.base:
        # Its package ahead of this checkout's on the path; the server script and venv stay this checkout's.
        SERVERS["blocks-rt@base"] = {"cmd": f"env PYTHONPATH={args.base.resolve()} {SERVERS['blocks-rt']['cmd']}",
                                     "strict": True}
        args.servers.append("blocks-rt@base")
    ensure_kit()
    outdir = ROOT / "benchmarks" / "results" / time.strftime("%Y%m%d-%H%M%S")
    outdir.mkdir(parents=True)
    raw = {name: outdir / f"raw-{name}.jsonl" for name in args.servers}
    steps = [(r, name) for r in range(args.rounds) for name in args.servers]
    for i, (r, name) in enumerate(steps):
        progress(i, len(steps), f"round {r + 1}: {name}")
        run_server(name, (["contract"] if r == 0 else []) + args.scenarios, raw[name])
    progress(len(steps), len(steps), "done")
    print(file=sys.stderr)
    rows = summarize([p for p in raw.values() if p.exists()])
    (outdir / "summary.json").write_text(json.dumps(rows, indent=1))
    table = []
    for scenario, metric, label, lower_better in METRICS:
        if scenario not in args.scenarios:
            continue
        values = {name: pick(rows, name, scenario, metric) for name in args.servers}
        line: dict[str, Any] = {"metric": label, **values}
        ours = values.get("blocks-rt")
        for ref in REFERENCES:
            theirs = values.get(ref)
            if ours and theirs:
                # > 1.0 means blocks-rt is better, whichever way the metric points
                line[f"vs {ref}"] = round(theirs / ours if lower_better else ours / theirs, 2)
        table.append(line)
    columns = ["metric", *args.servers, *[f"vs {r}" for r in REFERENCES if r in args.servers]]
    with (outdir / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    print(f"\nmedians over {args.rounds} round(s); 'vs X' > 1.0 means blocks-rt is better than X")
    print(" | ".join(f"{c:>22}" for c in columns))
    for line in table:
        print(" | ".join(f"{_fmt(line.get(c)):>22}" for c in columns))
    print(f"\nraw runs, summary.json and table.csv in {outdir}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return "–" if value is None else str(value)


if __name__ == "__main__":
    main()
