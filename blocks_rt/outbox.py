"""The PostgreSQL outbox consumer: every committed row of `blocks_rt_outbox` reaches its sockets once.

A backend inserts `(event, data)` in the same transaction as its business change (`outbox.sql` creates the
table). Rows become visible when their transaction commits, each numbered in commit order (`seq`), and
rolled-back rows never become visible. The consumer never reads "ids above the last one seen" (a row whose
transaction commits late would be skipped); it takes the rows not yet processed, in `seq` order.

Several nodes may run the consumer: one leads (a session advisory lock), the others wait to take over. One
reader keeps each stream in commit order; a second reader could not without dividing streams among nodes, and
one node publishes tens of thousands of rows a second, more than the log behind it takes.
A batch is first marked with its own key (committed), then published with that key as its idempotency key,
then marked processed. A leader that dies anywhere in between leaves a marked batch: the next leader publishes
it again under the same key, and the idempotency store answers from what was logged, so no row is logged or
delivered twice. A row that can never be published (unknown event, invalid payload) is set aside with its
error (`dead_at`, `error`) and the rows behind it go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal

import psycopg
from prometheus_client import Counter, Gauge

from . import oplog
from .broker import History
from .bus import DomainEvent, validate
from .dispatcher import Dispatcher
from .errors import BlocksError, InvalidEvent
from .idempotency import IdempotencyConflict, IdempotencyStore
from .metrics import Metrics
from .publish_once import publish_once

log = logging.getLogger(__name__)
CHANNEL = "blocks_rt_outbox"
LEADER_LOCK = 0x626C6F636B73  # pg_advisory_lock key of the leading consumer ("blocks")
PRUNE_EVERY_S = 30.0
COLUMNS = "id, event, data"  # of a `Row`
OutboxState = Literal["starting", "leading", "standby", "unreachable"]


def schema() -> str:
    """The idempotent DDL of the outbox table, its indexes and its commit trigger."""
    return files("blocks_rt").joinpath("outbox.sql").read_text()


async def init(dsn: str) -> None:
    """Create (or confirm) the outbox table: what `blocks-rt outbox init` runs."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(schema().encode())


@dataclass(frozen=True)
class Row:
    id: int
    event: str
    data: Any


class OutboxMetrics:
    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.rows = Counter("blocks_rt_outbox_rows_total", "Outbox rows handled by this node, by outcome",
                            ["outcome"], registry=r)
        self.dead = Gauge("blocks_rt_outbox_dead_rows", "Rows set aside in the outbox table (dead letters)",
                          registry=r)
        self.reachable = Gauge("blocks_rt_outbox_up", "1 while the outbox database is reachable", registry=r)


class OutboxConsumer:
    """Read `blocks_rt_outbox` and publish each committed row once, woken by NOTIFY, polling as the fallback."""

    def __init__(self, dsn: str, dispatcher: Dispatcher, log_: History, idempotency: IdempotencyStore,
                 metrics: Metrics, *,
                 poll_s: float = 1.0, batch: int = 500, retention_s: float = 7 * 24 * 3600) -> None:
        self._dsn = dsn
        self._dispatcher = dispatcher
        self._log = log_
        self._idempotency = idempotency
        self._metrics = OutboxMetrics(metrics)
        self._poll_s = poll_s
        self._batch = batch
        self._retention_s = retention_s
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0
        self._progressed = False
        self.state: OutboxState = "starting"

    async def __aenter__(self) -> OutboxConsumer:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True,
                                                                 connect_timeout=5) as conn:
                    await self._lead(conn)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError, BlocksError) as exc:
                if not isinstance(exc, BlocksError):
                    self._set_state("unreachable")
                log.warning("outbox: %s; retrying", exc)
            except Exception:
                log.exception("outbox consumer failed; restarting it")
            # A failed batch is retried first, so it leaves `_lead` (the next one recovers it); backing off
            # until a batch goes through again keeps a Redis outage from spinning.
            backoff = 0.1 if self._progressed else min(backoff * 2, max(self._poll_s, 1.0))
            self._progressed = False
            await asyncio.sleep(backoff)

    def _set_state(self, state: OutboxState) -> None:
        self.state = state
        self._metrics.reachable.set(0 if state == "unreachable" else 1)

    async def _lead(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(f"LISTEN {CHANNEL}")
        self._set_state("standby")
        while not await self._scalar(conn, "SELECT pg_try_advisory_lock(%s)", LEADER_LOCK):
            await self._wait(conn)
        self._set_state("leading")
        # Batches a former leader (or this one, before a failure) marked and did not finish, in order.
        cursor = await conn.execute(f"SELECT batch, {COLUMNS} FROM blocks_rt_outbox WHERE batch IS NOT NULL "
                                    "AND processed_at IS NULL AND dead_at IS NULL ORDER BY seq, id")
        unfinished: dict[str, list[Row]] = {}
        for batch, *columns in await cursor.fetchall():
            unfinished.setdefault(batch, []).append(Row(*columns))
        for key, rows in unfinished.items():
            await self._publish(conn, key, rows)
        while True:
            while await self._next_batch(conn):
                pass
            if time.monotonic() - self._pruned_at >= min(PRUNE_EVERY_S, self._retention_s):
                await self._prune(conn)
            await self._wait(conn)

    async def _wait(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Until a commit notifies us, or the poll interval passes (a lost notification costs one interval)."""
        async for _ in conn.notifies(timeout=self._poll_s, stop_after=1):
            break
        # Every commit notifies: those that came while a batch was published are covered by the next one.
        async for _ in conn.notifies(timeout=0):
            pass

    @staticmethod
    async def _scalar(conn: psycopg.AsyncConnection[Any], query: str, *args: Any) -> Any:
        cursor = await conn.execute(query.encode(), args)
        found = await cursor.fetchone()
        return found[0] if found else None

    async def _next_batch(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Mark the next rows (committed: a successor finds them) and publish them; whether there were any."""
        key = f"outbox:{secrets.token_hex(8)}"
        cursor = await conn.execute(
            f"UPDATE blocks_rt_outbox SET batch = %s WHERE id IN (SELECT id FROM blocks_rt_outbox "
            f"WHERE processed_at IS NULL AND dead_at IS NULL AND batch IS NULL ORDER BY seq, id LIMIT %s) "
            f"RETURNING seq, {COLUMNS}", (key, self._batch))
        found = sorted(await cursor.fetchall(), key=lambda r: (r[0] is None, r[0] or 0, r[1]))
        if not found:
            return False
        await self._publish(conn, key, [Row(*columns) for _, *columns in found])
        return True

    async def _publish(self, conn: psycopg.AsyncConnection[Any], key: str, rows: list[Row]) -> None:
        valid: list[tuple[Row, DomainEvent]] = []
        dead: list[tuple[int, str]] = []
        for row in rows:
            try:
                valid.append((row, validate(row.event, row.data)))
            except InvalidEvent as exc:
                dead.append((row.id, f"{exc.code}: {exc.message}"))
        if valid:
            fingerprint = hashlib.sha256(",".join(str(row.id) for row, _ in valid).encode()).hexdigest()
            try:
                answer = await publish_once(self._idempotency, self._dispatcher, self._log, key, fingerprint,
                                            lambda: [event for _, event in valid])
            except IdempotencyConflict as exc:  # a former leader, cut off from PostgreSQL, still publishing it
                raise BlocksError(f"batch {key}: {exc.message}") from exc
            if answer.status != 202:  # cannot happen: every row was validated above
                raise BlocksError(f"batch {key} refused: {answer.body}")
        # One round trip, and no wait for the disk: if PostgreSQL loses this commit in a crash, the batch is
        # still marked (that commit was waited for) and is published again under its key, which resumes it.
        async with conn.pipeline(), conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            for row_id, error in dead:
                await conn.execute("UPDATE blocks_rt_outbox SET dead_at = now(), batch = NULL, error = %s "
                                   "WHERE id = %s", (error, row_id))
            await conn.execute("UPDATE blocks_rt_outbox SET processed_at = now(), batch = NULL WHERE id = ANY(%s)",
                               ([row.id for row, _ in valid],))
        self._progressed = True
        oplog.outbox_batch(key, len(valid), len(dead))
        self._metrics.rows.labels("delivered").inc(len(valid))
        if dead:
            self._metrics.rows.labels("dead").inc(len(dead))
            oplog.dead_letters(dead)
            self._metrics.dead.set(await self._scalar(
                conn, "SELECT count(*) FROM blocks_rt_outbox WHERE dead_at IS NOT NULL"))

    async def _prune(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Delete rows processed longer ago than the retention; dead letters stay until someone looks."""
        await conn.execute("DELETE FROM blocks_rt_outbox WHERE processed_at < now() - make_interval(secs => %s)",
                           (self._retention_s,))
        self._metrics.dead.set(await self._scalar(
            conn, "SELECT count(*) FROM blocks_rt_outbox WHERE dead_at IS NOT NULL"))
        self._pruned_at = time.monotonic()

