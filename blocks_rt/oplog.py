"""The operator's log: one line for each thing that happened to a gateway, as text or as JSON.

At info: startup, each connect and disconnect, each refused connect, each session the server ended, each
publish request, each outbox batch and its dead letters, shutdown. Nothing per delivery (fan-out stays as cheap
as it was). Lines carry ids, names, codes and counts, never a token, secret, API key or password: a URL is
logged `redacted`. `BLOCKS_RT_LOG_FORMAT=json` writes one object per line with stable keys: `ts`, `level`,
`event`, `node`, then the event's own fields (`userId`, `sid`, `code`, ...); other modules' records come as
`event: "log"` with `logger` and `message`.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import orjson
from aiohttp import web

from .settings import Settings

_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)")


def redacted(url: str) -> str:
    """`url` (or a `key=value` PostgreSQL DSN) with its password replaced: fit for a message or a log line."""
    parts = urlsplit(url)
    if "://" in url and parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return _KEYWORD_PASSWORD.sub(r"\1***", url)  # key=value DSNs, and URLs' ?password=


log = logging.getLogger("blocks_rt.ops")
_FIELDS = "blocks_rt_fields"  # the LogRecord attribute holding an event's fields
_node = f"{socket.gethostname()}-{os.getpid()}"  # until startup names the node (the app's id starts with this)


def _emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    if log.isEnabledFor(level):
        log.log(level, event, extra={_FIELDS: fields})


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, event, node, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname.lower()}
        fields = getattr(record, _FIELDS, None)
        if fields is None:
            line |= {"event": "log", "node": _node, "logger": record.name, "message": record.getMessage()}
        else:
            line |= {"event": record.msg, "node": _node, **fields}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`ts LEVEL event key=value ...` for the gateway's events; `ts LEVEL logger: message` for the others."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS, None)
        if fields is None:
            text = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        else:
            pairs = " ".join(f"{key}={_text(value)}" for key, value in fields.items() if value is not None)
            text = f"{_timestamp(record)} {record.levelname} {record.msg} {pairs}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _text(value: Any) -> str:
    text = ",".join(str(v) for v in value) or "-" if isinstance(value, list | tuple) else str(value)
    return orjson.dumps(text).decode() if not text or " " in text or '"' in text else text


def configure(settings: Settings) -> None:
    """Send every record of the process to standard error, at `BLOCKS_RT_LOG_LEVEL`, as `BLOCKS_RT_LOG_FORMAT`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def _modes(settings: Settings) -> list[str]:
    modes = ["redis-cluster" if settings.redis_cluster else "redis"] if settings.redis_url else ["embedded"]
    modes += ["outbox"] if settings.outbox_dsn else []
    modes += [f"admin-{'read-only' if settings.admin_read_only else 'read-write'}"] if settings.admin else []
    return modes


def started(settings: Settings, node: str) -> None:
    """The gateway is up: where, as which node, in which modes (URLs without their passwords)."""
    global _node
    _node = node
    _emit("startup", host=settings.host, port=settings.port, modes=_modes(settings),
          redis=redacted(settings.redis_url) if settings.redis_url else None,
          outbox=redacted(settings.outbox_dsn) if settings.outbox_dsn else None)


def stopped(sockets: int) -> None:
    _emit("shutdown", sockets=sockets)


def refused(code: str) -> None:
    """A connect refused (bad or expired token, unknown user, ...): the code the client got."""
    _emit("connect_refused", code=code)


def session_ended(sid: str, user_id: str, reason: str) -> None:
    """The server ended a session: slow consumer, rate-limit abuse, expired token, too many sockets, ..."""
    _emit("session_ended", level=logging.WARNING if reason in ("slow_consumer", "rate_limit_abuse") else logging.INFO,
          sid=sid, userId=user_id, reason=reason)


class Sessions:
    """Connects and disconnects of one gateway, with each session's duration."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[float, str]] = {}  # sid -> (connected at, user id)

    def connected(self, sid: str, user_id: str, environ: Mapping[str, Any], resumed: int) -> None:
        """`environ`: the handshake request's; `resumed`: streams the client asked to resume (and may read)."""
        self._open[sid] = (time.monotonic(), user_id)
        if log.isEnabledFor(logging.INFO):
            transport = parse_qs(environ.get("QUERY_STRING", "")).get("transport", ["?"])[0]
            _emit("connect", sid=sid, userId=user_id, transport=transport, resumedStreams=resumed)

    def disconnected(self, sid: str, reason: object) -> None:
        opened = self._open.pop(sid, None)
        if opened is not None:
            since, user_id = opened
            _emit("disconnect", sid=sid, userId=user_id, reason=str(reason or "unknown"),
                  durationS=round(time.monotonic() - since, 3))


PUBLISH_PATH = "/api/events"


@web.middleware
async def publish_log(request: web.Request, response: web.StreamResponse) -> None:
    """One line per publish request, read from its answer as it is sent: events and streams accepted, or the
    refusal's code. An `on_response_prepare` signal, not a middleware: a middleware's frame would wrap every
    request, a websocket's too, and keep its request alive for the connection's life."""
    if request.path == PUBLISH_PATH and request.method == "POST" and log.isEnabledFor(logging.INFO):
        body = response.body if isinstance(response, web.Response) else None
        _published(request.headers.get("Idempotency-Key"), response.status,
                   orjson.loads(body) if isinstance(body, bytes) and body else {})


def _published(key: str | None, status: int, answer: Mapping[str, Any]) -> None:
    if status == 202:
        events = answer.get("events", [])
        streams = {stream for event in events for stream in event.get("eventIds", {})}
        _emit("publish", status=status, outcome="accepted", events=len(events),
              types=sorted({event.get("event", "?") for event in events}), streams=len(streams),
              idempotencyKey=key)
    else:
        error = answer.get("error", {})
        _emit("publish", level=logging.WARNING, status=status, outcome="refused", code=error.get("code"),
              index=error.get("index"), idempotencyKey=key)


def outbox_batch(batch: str, delivered: int, dead: int) -> None:
    _emit("outbox_batch", batch=batch, delivered=delivered, dead=dead)


def dead_letters(rows: list[tuple[int, str]]) -> None:
    """Outbox rows set aside (never published): their ids and why."""
    for row_id, error in rows:
        _emit("outbox_dead_letter", level=logging.WARNING, row=row_id, error=error)
