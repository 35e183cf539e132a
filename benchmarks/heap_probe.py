"""`blocks-rt serve` with tracemalloc on, for benchmarks/scaling.py's Python heap per connection.

    benchmarks/serve-contract.sh benchmarks/heap_probe.py OUT.json

A thread samples the traced heap four times a second and keeps, in OUT.json, the first sample once the
server listens (the idle server) and the largest. Tracing slows the server, so only the memory pass of the
benchmark runs under it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import tracemalloc
from pathlib import Path

from blocks_rt.cli import main


def sample(out: Path) -> None:
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(os.environ["BLOCKS_RT_PORT"])), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(0.5)
    first = tracemalloc.get_traced_memory()[0]
    largest = first
    while True:
        largest = max(largest, tracemalloc.get_traced_memory()[0])
        out.write_text(json.dumps({"first": first, "max": largest}))
        time.sleep(0.25)


if __name__ == "__main__":
    tracemalloc.start()
    threading.Thread(target=sample, args=(Path(sys.argv[1]),), daemon=True).start()
    main(["serve"])
