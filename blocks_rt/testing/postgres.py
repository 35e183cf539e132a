"""A private PostgreSQL for tests, notebooks and benchmarks: its own data directory, a free loopback port.

    with PrivatePostgres() as pg:          # initdb + postgres from /usr/lib/postgresql/<newest>/bin
        dsn = pg.dsn                       # postgresql://postgres@127.0.0.1:<port>/postgres (trust auth)
        pg.restart()                       # a real restart of the server (fault tests)

A private server rather than the machine's shared one: tests may restart it, and no test sees another's rows.
initdb and postgres refuse to run as root, so as root they run as the `postgres` system user (`setpriv`, which
execs, so the PID we hold is the server's own), in a directory that user owns. Every process started here is
stopped here, by PID.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from .nodes import free_port


def server_binaries() -> str | None:
    """The newest installed PostgreSQL's bin directory, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class PrivatePostgres:
    """One postgres process on 127.0.0.1; trust authentication; nothing kept after `stop`."""

    def __init__(self, *, durable: bool = False) -> None:
        bindir = server_binaries()
        if bindir is None:
            raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self._bindir = bindir
        # fsync on for benchmarks; off for tests: commits still reach the OS, so a killed server loses nothing
        self._durable = durable
        self.port = free_port()
        self._workdir = tempfile.mkdtemp(prefix="blocks-rt-pg-")
        self._data = os.path.join(self._workdir, "data")
        self._process: subprocess.Popen[bytes] | None = None
        self._user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self._workdir, user.pw_uid, user.pw_gid)
            self._user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if not os.path.exists(self._data):
            self._run(f"{self._bindir}/initdb", "-D", self._data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--no-sync")
        log = open(os.path.join(self._workdir, "server.log"), "ab")  # noqa: SIM115 - the server keeps it
        fsync = "on" if self._durable else "off"
        self._process = subprocess.Popen(
            [*self._user, f"{self._bindir}/postgres", "-D", self._data, "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self._workdir}",
             "-c", f"fsync={fsync}", "-c", f"full_page_writes={fsync}",
             "-c", "max_connections=50", "-c", "shared_buffers=32MB"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if subprocess.run([f"{self._bindir}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                                  timeout=10).returncode == 0:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError(f"private postgres did not start: see {self._workdir}/server.log")
            time.sleep(0.05)

    def stop(self, *, immediate: bool = False) -> None:
        """Fast shutdown (SIGINT), or immediate (SIGQUIT: like a crash, recovery on the next start)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def restart(self, *, immediate: bool = False) -> None:
        self.stop(immediate=immediate)
        self.start()

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)
