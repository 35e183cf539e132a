#!/usr/bin/env bash
# The perf kit's server contract (PORT, JWT_SECRET, API_KEY, USERS_FILE) mapped onto blocks-rt settings.
# exec keeps the PID, so the kit measures the gateway process itself. BLOCKS_RT_EVENT_RATE=0: measure
# delivery, not the rate limit. With arguments, runs that Python script instead of `blocks-rt serve`.
HERE="$(cd "$(dirname "$0")/.." && pwd)"
export BLOCKS_RT_PORT="${PORT:?}" BLOCKS_RT_JWT_SECRET="${JWT_SECRET:?}" BLOCKS_RT_API_KEY="${API_KEY:?}" \
       BLOCKS_RT_USERS_FILE="${USERS_FILE:?}" BLOCKS_RT_EVENT_RATE="${BLOCKS_RT_EVENT_RATE:-0}" \
       BLOCKS_RT_HOST="${HOST:-127.0.0.1}"
[ $# -gt 0 ] && exec "$HERE/.venv/bin/python" "$@"
exec "$HERE/.venv/bin/python" -m blocks_rt.cli serve
