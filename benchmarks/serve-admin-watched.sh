#!/usr/bin/env bash
# blocks-rt with the Admin UI on and one admin watching (benchmarks/admin_watcher.py, a side process that
# logs in like the UI and takes every report), under the perf kit's server contract. exec keeps the PID, so
# the kit measures the gateway alone; the watcher's own CPU lands on the machine, not on the gateway.
HERE="$(cd "$(dirname "$0")/.." && pwd)"
export BLOCKS_RT_ADMIN=true BLOCKS_RT_ADMIN_PASSWORD="benchmark-admin-password"
"$HERE/.venv/bin/python" "$HERE/benchmarks/admin_watcher.py" "http://127.0.0.1:${PORT:?}" "$BLOCKS_RT_ADMIN_PASSWORD" &
exec "$HERE/benchmarks/serve-contract.sh"
