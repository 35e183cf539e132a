"""The gateway's HTTP endpoints: `POST /api/events` for a backend in another process (idempotent with an
`Idempotency-Key`), `GET /api/presence/{user_id}`, `/healthz` and `/metrics`."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .broker import Broker
from .bus import DomainEvent, validate_many
from .dispatcher import Dispatcher
from .errors import InvalidEvent, ServiceUnavailable
from .gateway import Gateway
from .guessing import GuessThrottle
from .idempotency import KEY_PATTERN, Answer, IdempotencyConflict, IdempotencyStore, fingerprint
from .metrics import Metrics
from .publish_once import accepted, publish_once, refusal, refused

if TYPE_CHECKING:
    from .outbox import OutboxConsumer

MAX_JSON_DEPTH = 32
IDEMPOTENCY_KEY = "Idempotency-Key"
PUBLISH_ERRORS = {  # error.code -> (HTTP status, meaning); the contract lists them (contract.py)
    "unauthorized": (401, "missing or wrong API key"),
    "invalid_idempotency_key": (400, f"the {IDEMPOTENCY_KEY} header is not 1-128 characters of A-Z a-z 0-9 _ . : -"),
    "too_large": (413, "body over `BLOCKS_RT_MAX_PUBLISH_BYTES`"),
    "bad_body": (400, "the body could not be read"),
    "invalid_json": (400, "the body is not JSON"),
    "too_deep": (400, f"JSON nested deeper than {MAX_JSON_DEPTH}"),
    "empty_batch": (400, "an empty list"),
    "batch_too_large": (413, "more events than `BLOCKS_RT_MAX_PUBLISH_BATCH`"),
    "invalid_envelope": (400, "an item is not `{event, data}` (`index` says which)"),
    "unknown_event": (400, "not a domain event (`index`, `event`)"),
    "invalid_event": (400, "a payload fails validation (`index`, `event`, `field`)"),
    "idempotency_key_reused": (409, "the key was used with another body: nothing published"),
    "idempotency_key_in_flight": (409, "a request with this key is being published: retry shortly"),
    "unavailable": (503, "Redis is down or the gateway is starting: nothing accepted, retry (with the same key)"),
}


def _error(status: int, code: str, message: str, **details: Any) -> web.Response:
    return web.json_response(refusal(status, code, message, **details).body, status=status)


def _dumps(body: Any) -> str:
    return orjson.dumps(body).decode()


def _deeper_than(node: Any, limit: int) -> bool:
    """Whether parsed JSON nests more than `limit` containers deep (a call per container, not per value)."""
    if limit <= 0:
        return True
    children = node.values() if type(node) is dict else node
    return any(type(child) in (dict, list) and _deeper_than(child, limit - 1) for child in children)


class HttpApi:
    """Publish domain events over HTTP (all-or-nothing per request, once per `Idempotency-Key`), and the
    gateway's state for a backend (presence) and for operators (health, metrics)."""

    def __init__(self, metrics: Metrics, gateway: Gateway, broker: Broker, *, api_key: str | None, max_bytes: int,
                 max_batch: int, guesses: GuessThrottle | None = None) -> None:
        self._metrics = metrics
        self._gateway = gateway
        self._broker = broker
        self._api_key = api_key.encode() if api_key else None
        self._max_bytes = max_bytes
        self._max_batch = max_batch
        self._guesses = guesses or GuessThrottle("api_key", metrics)
        self._dispatcher: Dispatcher | None = None
        self._idempotency: IdempotencyStore | None = None
        self._outbox: OutboxConsumer | None = None

    def start(self, dispatcher: Dispatcher, idempotency: IdempotencyStore, outbox: OutboxConsumer | None) -> None:
        """Accept requests from now on (the app's lifecycle calls it once the broker runs)."""
        self._dispatcher, self._idempotency, self._outbox = dispatcher, idempotency, outbox

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/events", self.publish), web.get("/api/presence/{user_id}", self.user_presence),
                web.get("/healthz", self.healthz), web.get("/metrics", self.metrics)]

    def authorized(self, request: web.Request) -> bool:
        """Whether the request carries the API key (compared in constant time); not checked while its address waits
        after wrong keys (guessing.py)."""
        address = request.remote or ""
        if self._guesses.wait_s(address):
            return False
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        # Compared in constant time, and always compared, so timing says nothing about the key.
        expected = self._api_key or b"\x00" * 32
        ok = hmac.compare_digest(key.strip().encode(), expected)
        ok = ok and scheme.lower() == "bearer" and self._api_key is not None
        (self._guesses.succeeded if ok else self._guesses.failed)(address)
        return ok

    async def publish(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            await self._guesses.slow_answer(request.remote or "")
            return _error(401, "unauthorized", "missing or wrong API key")
        key = request.headers.get(IDEMPOTENCY_KEY)
        if key is not None and not KEY_PATTERN.fullmatch(key):
            return _error(400, "invalid_idempotency_key", PUBLISH_ERRORS["invalid_idempotency_key"][1])
        if request.content_length is not None and request.content_length > self._max_bytes:
            return _error(413, "too_large", f"body over {self._max_bytes} bytes")
        try:
            raw = await request.read()  # the whole body, up to the application's client_max_size (the same limit)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "too_large", f"body over {self._max_bytes} bytes")
        except (ValueError, OSError):
            return _error(400, "bad_body", "could not read the request body")
        try:
            body = orjson.loads(raw)
        except (ValueError, RecursionError):
            return _error(400, "invalid_json", "body is not valid JSON")
        outcome = await self._publish(body, key)
        # Told apart only for refused bodies: one that validates keeps nothing deeper than the models, which
        # nest a few levels (ignored extras are dropped unread), so the walk stays off the hot path.
        if outcome.status == 400 and isinstance(body, dict | list) and _deeper_than(body, MAX_JSON_DEPTH):
            return _error(400, "too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH}")
        return web.json_response(outcome.body, status=outcome.status, dumps=_dumps)

    async def _publish(self, body: Any, key: str | None) -> Answer:
        """Publish the parsed body (one event or a list), all or nothing: the answer to send."""
        items = body if isinstance(body, list) else [body]
        if not items:
            return refusal(400, "empty_batch", "no events in the request")
        if len(items) > self._max_batch:
            return refusal(413, "batch_too_large", f"more than {self._max_batch} events in one request")
        batch = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("event"), str) or "data" not in item:
                return refusal(400, "invalid_envelope",
                                f"event[{index}] must be {{\"event\": str, \"data\": object}}", index=index)
            batch.append((item["event"], item["data"]))
        if self._dispatcher is None or self._idempotency is None:
            return refusal(503, "unavailable", "the gateway is starting")

        def validated() -> list[DomainEvent]:
            return validate_many(batch)

        try:
            if key is None:
                try:
                    return accepted(await self._dispatcher.dispatch(validated()))
                except InvalidEvent as exc:
                    return refused(exc)
            return await publish_once(self._idempotency, self._dispatcher, self._broker, key, fingerprint(body),
                                      validated)
        except IdempotencyConflict as exc:
            return refusal(409, exc.code, exc.message)
        except ServiceUnavailable as exc:
            return refusal(503, exc.code, exc.message)

    async def user_presence(self, request: web.Request) -> web.Response:
        """Is a user online anywhere in the cluster (e.g. push notification or not)? Backend only."""
        if not self.authorized(request):
            await self._guesses.slow_answer(request.remote or "")
            return _error(401, "unauthorized", "missing or wrong API key")
        user_id = request.match_info["user_id"]
        return web.json_response({"userId": user_id, "sockets": await self._gateway.user_socket_count(user_id)})

    async def healthz(self, request: web.Request) -> web.Response:
        healthy = self._broker.healthy
        presence = self._gateway.presence
        body = {"status": "ok" if healthy else "unhealthy", "fanout": "ok" if healthy else "down",
                "sockets": presence.socket_count, "users": presence.user_count}
        if self._outbox is not None:  # said, not failed on: sockets are served while the outbox database is away
            body["outbox"] = self._outbox.state
        return web.json_response(body, status=200 if healthy else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.exposition(), content_type="text/plain", charset="utf-8")
