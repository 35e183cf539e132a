"""The HTTP side of the gateway as an OpenAPI 3.1 document, generated like the AsyncAPI one (contract.py).

`POST /api/events` takes one `{event, data}` or a list of them: each domain event's `data` schema comes from its
pydantic model (events.DOMAIN_EVENTS), its example from examples.py, the error codes from http_api.py. The
answers of the four endpoints are described by the small models below; tests/test_openapi.py checks the
gateway's real answers against them. `blocks-rt spec openapi` prints it; `blocks-rt spec all` writes
spec/openapi.yaml.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from . import events as ev
from . import examples as ex
from .contract import JsonSchema, _Dumper, _WireSchema
from .http_api import IDEMPOTENCY_KEY, PUBLISH_ERRORS
from .idempotency import KEY_PATTERN
from .router import ROUTES
from .settings import Settings

_REF = "#/components/schemas/{model}"
_DEFAULTS = Settings()


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AcceptedEvent(_Answer):
    """One accepted domain event: the `eventId` it got in each stream (room) it was logged to."""

    event: str = Field(description="The domain event's name, as sent.")
    eventIds: dict[str, str] = Field(description="Stream (e.g. `user:usr_amira`) → the event's `eventId` there.")


class PublishAccepted(_Answer):
    """`202 Accepted`: every event of the request was logged, and is being delivered."""

    accepted: int = Field(ge=1, description="How many domain events the request carried (all of them).")
    events: list[AcceptedEvent] = Field(description="One entry per domain event, in the request's order.")


class ErrorDetail(_Answer):
    code: str = Field(description="Stable, machine-readable: see the table of this response.")
    message: str = Field(description="For people; may change.")
    index: int | None = Field(None, description="Which event of a list (0-based) was refused.")
    event: str | None = Field(None, description="That event's name.")
    field: str | None = Field(None, description="The payload field that failed validation (dotted path).")


class Error(_Answer):
    """A refusal: nothing of the request was published."""

    error: ErrorDetail


class Health(_Answer):
    """This node's health: 200 when its fan-out works, 503 when not (take it out of the load balancer)."""

    status: Literal["ok", "unhealthy"]
    fanout: Literal["ok", "down"] = Field(description="The cross-node fan-out (Redis), or the in-process one.")
    sockets: int = Field(ge=0, description="Sockets connected to this node.")
    users: int = Field(ge=0, description="Distinct users connected to this node.")
    outbox: Literal["starting", "leading", "standby", "unreachable"] | None = Field(
        None, description="With `BLOCKS_RT_OUTBOX_DSN`: this node's outbox consumer (one node leads).")


class UserPresence(_Answer):
    """How many sockets a user has open on every node of the cluster."""

    userId: str
    sockets: int = Field(ge=0, description="0: offline (e.g. send a push notification instead).")


_ANSWERS: list[type[BaseModel]] = [PublishAccepted, Error, Health, UserPresence]
_KEY_DESCRIPTION = (f"Makes the request idempotent: a repeat with the same key and the same body within "
                    f"`BLOCKS_RT_IDEMPOTENCY_TTL_S` ({_DEFAULTS.idempotency_ttl_s:g} s by default) publishes nothing "
                    "and gets the first answer again, same status and body. The same key with another body: "
                    "`409 idempotency_key_reused`.")


def _envelope_key(event: str) -> str:
    """`wallet.balance_updated` → `WalletBalanceUpdatedEnvelope`."""
    return "".join(part.capitalize() for part in event.replace(".", "_").split("_")) + "Envelope"


def _wire_of(event: str) -> str:
    return ", ".join(f"`{r.event}` to `{r.room}`" for r in ROUTES[event])


def _schemas() -> dict[str, JsonSchema]:
    """Every schema of the document: the domain events' data, their envelopes, the answers."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((m, "validation") for m in dict.fromkeys(ev.DOMAIN_EVENTS.values())),
        *((m, "serialization") for m in _ANSWERS)]
    keys, defs = models_json_schema(models, by_alias=True, ref_template=_REF, schema_generator=_WireSchema)
    schemas: dict[str, JsonSchema] = dict(defs.get("$defs", {}))
    for event, model in ev.DOMAIN_EVENTS.items():
        schemas[_envelope_key(event)] = {
            "type": "object", "title": event, "required": ["event", "data"],
            "description": f"`{event}`: delivered as {_wire_of(event)}.",
            "properties": {"event": {"const": event}, "data": keys[(model, "validation")]}}
    schemas["DomainEvent"] = {
        "description": "One domain event: its name and its payload.",
        "oneOf": [{"$ref": _REF.format(model=_envelope_key(e))} for e in ev.DOMAIN_EVENTS],
        "discriminator": {"propertyName": "event", "mapping": {
            e: _REF.format(model=_envelope_key(e)) for e in ev.DOMAIN_EVENTS}}}
    schemas["PublishRequest"] = {
        "description": "One domain event, or a list of them published all or nothing.",
        "oneOf": [{"$ref": _REF.format(model="DomainEvent")},
                  {"type": "array", "minItems": 1, "maxItems": _DEFAULTS.max_publish_batch,
                   "items": {"$ref": _REF.format(model="DomainEvent")}}]}
    return dict(sorted(schemas.items()))


def _json(model: type[BaseModel], description: str, **examples: Any) -> JsonSchema:
    content: JsonSchema = {"schema": {"$ref": _REF.format(model=model.__name__)}}
    if examples:
        content["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"description": description, "content": {"application/json": content}}


def _error_responses() -> dict[str, JsonSchema]:
    """Each status the publish API refuses with, with the table of its codes and an example of each."""
    by_status: dict[int, dict[str, str]] = {}
    for code, (status, meaning) in PUBLISH_ERRORS.items():
        by_status.setdefault(status, {})[code] = meaning
    responses = {}
    for status, codes in sorted(by_status.items()):
        table = "| error.code | meaning |\n| --- | --- |\n" + "".join(f"| `{c}` | {m} |\n" for c, m in codes.items())
        examples = {code: {"error": {"code": code, "message": meaning.replace("`", "")}}
                    for code, meaning in codes.items()}
        responses[str(status)] = _json(Error, f"Refused, nothing published.\n\n{table}", **examples)
    return responses


def _domain_example(event: str) -> JsonSchema:
    return {"event": event, "data": ex.DOMAIN_EXAMPLES[event].model_dump(mode="json", by_alias=True)}


def _publish() -> JsonSchema:
    first = next(iter(ev.DOMAIN_EVENTS))
    examples: dict[str, JsonSchema] = {e: {"summary": e, "value": _domain_example(e)} for e in ev.DOMAIN_EVENTS}
    examples["batch"] = {"summary": "a list, all or nothing",
                         "value": [_domain_example(first), _domain_example("notification.created")]}
    accepted_example = {"accepted": 1, "events": [{"event": "notification.created", "eventIds": {
        "user:usr_amira": f"{ex.EPOCH}:1736937000000-0"}}]}
    return {
        "operationId": "publishEvents",
        "summary": "Publish domain events",
        "description": ("Publish one domain event or a list of them, all or nothing: each is validated, routed "
                        "to its rooms, logged (it gets its `eventId` per stream) and delivered to every socket "
                        "in those rooms, on every node. A refused request publishes nothing. Rows committed to "
                        "the PostgreSQL outbox table `blocks_rt_outbox` (`event`, `data`) are published as if by "
                        "this endpoint, once."),
        "security": [{"apiKey": []}],
        "parameters": [{"name": IDEMPOTENCY_KEY, "in": "header", "required": False, "description": _KEY_DESCRIPTION,
                        "schema": {"type": "string", "pattern": f"^{KEY_PATTERN.pattern}$"},
                        "example": "order-7781-confirmed"}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": _REF.format(model="PublishRequest")}, "examples": examples}}},
        "responses": {"202": _json(PublishAccepted, "Accepted: logged and being delivered.",
                                   accepted=accepted_example), **_error_responses()},
    }


def openapi() -> JsonSchema:
    """The OpenAPI 3.1 document of the gateway's HTTP endpoints, as a dict."""
    unauthorized = _json(Error, "Missing or wrong API key.",
                         unauthorized={"error": {"code": "unauthorized", "message": "missing or wrong API key"}})
    return {
        "openapi": "3.1.0",
        "info": {"title": "Blocks real-time gateway: HTTP API", "version": version("blocks-rt"),
                 "description": ("What a backend calls over HTTP: the publish API, presence, health and metrics. "
                                 "Generated from the models of `blocks_rt` (`blocks-rt spec openapi`): do not edit "
                                 "by hand. The Socket.IO side is described by `asyncapi.yaml`.")},
        "servers": [{"url": "http://localhost:3000", "description": "a local development gateway"}],
        "paths": {
            "/api/events": {"post": _publish()},
            "/api/presence/{userId}": {"get": {
                "operationId": "userPresence", "summary": "Is a user online anywhere in the cluster?",
                "security": [{"apiKey": []}],
                "parameters": [{"name": "userId", "in": "path", "required": True, "schema": {"type": "string"},
                                "example": "usr_amira"}],
                "responses": {"200": _json(UserPresence, "The user's socket count over every node.",
                                           online={"userId": "usr_amira", "sockets": 2}),
                              "401": unauthorized}}},
            "/healthz": {"get": {
                "operationId": "health", "summary": "Health of this node (for load balancers)",
                "responses": {
                    "200": _json(Health, "Healthy.", ok={"status": "ok", "fanout": "ok", "sockets": 12, "users": 9}),
                    "503": _json(Health, "Unhealthy: its fan-out is down.",
                                 down={"status": "unhealthy", "fanout": "down", "sockets": 12, "users": 9})}}},
            "/metrics": {"get": {
                "operationId": "metrics", "summary": "Prometheus metrics of this node",
                "responses": {"200": {"description": "The Prometheus text exposition format.", "content": {
                    "text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"apiKey": {
                "type": "http", "scheme": "bearer",
                "description": "`Authorization: Bearer <BLOCKS_RT_API_KEY>`: the backend's key, not a user's token."}},
        },
    }


def openapi_yaml() -> str:
    return yaml.dump(openapi(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
