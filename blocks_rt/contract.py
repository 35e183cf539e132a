"""The event contract as artifacts generated from the models: AsyncAPI 3.0, JSON Schemas, TypeScript types.

`blocks-rt spec asyncapi|jsonschema|typescript|all` writes them; spec/ holds the committed copies and
tests/test_contract.py fails when regenerating them gives anything else. Output is deterministic: no
clock, fixed examples (examples.py), JSON with sorted keys, YAML and TypeScript in the models' order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from string import Formatter
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from . import events as ev
from . import examples as ex
from . import messages as msg
from .http_api import IDEMPOTENCY_KEY, PUBLISH_ERRORS
from .router import ROUTES
from .settings import NAMESPACE

JsonSchema = dict[str, Any]
Mode = Literal["validation", "serialization"]


# --- the models, as the wire sees them ------------------------------------------------------------------
def _stamped(model: type[ev.Model]) -> type[ev.Model]:
    """`model` plus the `eventId` and `stream` every logged event carries (broker.stamp), same name."""
    return create_model(
        model.__name__, __base__=model, __module__=__name__, __doc__=model.__doc__,
        event_id=(msg.EventId, Field(description="This event's place in `stream`: keep the last one per stream "
                                                 "and send them as `auth.offsets` when reconnecting to resume.")),
        stream=(msg.StreamName, Field(description="The room (stream) this event was delivered to, "
                                                  "e.g. `user:usr_amira`.")),
    )


ROOMS: dict[str, tuple[str, ...]] = {}
"""Room pattern (`user:{userId}`) → the wire events delivered to it, from the routing table."""
for _routes in ROUTES.values():
    for _r in _routes:
        if _r.event not in ROOMS.setdefault(_r.room, ()):
            ROOMS[_r.room] += (_r.event,)

SERVER_EVENTS: dict[str, type[ev.Model]] = {
    "connected": ev.WIRE_EVENTS["connected"],
    **msg.CONTROL_EVENTS,
    **{event: _stamped(ev.WIRE_EVENTS[event]) for events in ROOMS.values() for event in events},
}
"""Every event the server emits, by wire name, with the model of exactly what goes on the wire."""
assert SERVER_EVENTS.keys() == ev.WIRE_EVENTS.keys() | msg.CONTROL_EVENTS.keys(), "a wire event has no route"

CONNECT_REFUSALS: dict[str, str] = {
    "token_missing": "no token in `auth.token` nor in an `Authorization: Bearer` header",
    "token_too_large": "the token is longer than the server accepts",
    "token_malformed": "the token is not a JWT (or `auth.token` is not a string)",
    "token_algorithm": "the token's `alg` is not one the server allows",
    "token_expired": "the token's `exp` has passed",
    "token_not_yet_valid": "the token's `nbf` is in the future",
    "token_issuer": "wrong `iss`",
    "token_audience": "wrong `aud`",
    "token_claims": "a required claim (`exp`, `sub`) is missing or malformed",
    "token_signature": "the signature does not verify",
    "token_invalid": "the token is invalid for another reason",
    "token_subject": "`sub` is not a valid user id",
    "token_header": "the token's header asks for something the server does not support (`crit`, a bad `kid`)",
    "token_key_unknown": "the token's `kid` names no key the server knows",
    "user_unknown": "no such user",
    "user_inactive": "the user is deactivated",
    "handshake_invalid": "`auth.offsets` is not a map of stream names to event ids",
    "unavailable": "the server could not check the connection right now (a dependency is down): retry later",
}
"""Each `connect_error` code (`err.data.code`), and what it means."""
ACK_ERRORS: dict[str, str] = {
    "unknown_event": "the server does not handle this event",
    "not_connected": "the socket is not (or no longer) authenticated",
    "rate_limited": "too many requests: retry after `retryAfterMs`; keeping on ends the session",
    "invalid_request": "the payload is malformed: `field` names the first bad field",
    "subscription_limit": "already in `limit` property rooms: unsubscribe from one first",
    "forbidden": "not allowed (organization rooms are for that organization's admins)",
    "token_user_mismatch": "`auth:refresh` with a token for another user",
    "unavailable": "a dependency (the event log) is unreachable right now: retry later",
    **{code: f"`auth:refresh`: {text}" for code, text in CONNECT_REFUSALS.items() if code.startswith("token_")},
}
"""Each `error.code` of a refused client event's ack, and what it means."""
assert CONNECT_REFUSALS.keys() == set(get_args(msg.ConnectRefusalCode)), "describe every connect refusal code"
assert ACK_ERRORS.keys() == set(get_args(msg.AckErrorCode)), "describe every ack error code"


# --- JSON Schema ------------------------------------------------------------------------------------------
class _WireSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, adjusted to say what a client receives.

    `Model.wire()` drops None values, so in serialization mode a field is required unless its default is
    None; and property titles (`Userid`) are noise.
    """

    def field_is_required(self, field: Any, total: bool) -> bool:
        schema = field["schema"]
        if self.mode == "serialization" and schema["type"] == "default":
            return "default_factory" in schema or schema.get("default") is not None
        return super().field_is_required(field, total)

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _mode(model: type[BaseModel]) -> Mode:
    """Client messages are what the server validates; everything else is what the server serializes."""
    return "validation" if model in msg.CLIENT_EVENTS.values() else "serialization"


def _all_models() -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = [*SERVER_EVENTS.values(), *msg.CLIENT_EVENTS.values(), *msg.ACKS.values(),
                                     msg.ErrorAck, msg.ConnectError]
    return list(dict.fromkeys(models))


def _definitions(ref_template: str) -> tuple[dict[type[BaseModel], JsonSchema], dict[str, JsonSchema]]:
    """One schema set for every model: model → its `$ref`, and the named definitions."""
    models = _all_models()
    keys, defs = models_json_schema([(m, _mode(m)) for m in models], by_alias=True, ref_template=ref_template,
                                    schema_generator=_WireSchema)
    return {m: keys[(m, _mode(m))] for m in models}, defs.get("$defs", {})


def _file_name(event: str) -> str:
    return event.replace(":", ".") + ".json"


def json_schemas() -> dict[str, JsonSchema]:
    """Relative path → JSON Schema: one per server event, client message and client event's ack."""
    def schema(model: type[BaseModel]) -> JsonSchema:
        return {"$schema": "https://json-schema.org/draft/2020-12/schema",
                **model.model_json_schema(by_alias=True, mode=_mode(model), schema_generator=_WireSchema)}

    out = {f"server/{_file_name(e)}": schema(m) for e, m in SERVER_EVENTS.items()}
    out |= {f"client/{_file_name(e)}": schema(m) for e, m in msg.CLIENT_EVENTS.items()}
    for event, ack in msg.ACKS.items():
        ok, error = schema(ack), schema(msg.ErrorAck)
        out[f"ack/{_file_name(event)}"] = {
            "$schema": ok.pop("$schema"), "title": f"{event} ack", "anyOf": [
                {"$ref": f"#/$defs/{ok['title']}"}, {"$ref": f"#/$defs/{error['title']}"}],
            "$defs": {**ok.pop("$defs", {}), **error.pop("$defs", {}), ok["title"]: ok, error["title"]: error}}
    out["connect_error.json"] = schema(msg.ConnectError)
    return out


# --- AsyncAPI 3.0 -----------------------------------------------------------------------------------------
def _key(event: str) -> str:
    """`wallet:balance_updated` → `walletBalanceUpdated` (AsyncAPI component keys allow no ':')."""
    first, *rest = re.split(r"[:_]", event)
    return first + "".join(p[:1].upper() + p[1:] for p in rest)


def _model_key(model: type[BaseModel]) -> str:
    """`SubscribeAck` → `subscribeAck`."""
    return model.__name__[:1].lower() + model.__name__[1:]


def _table(title: str, rows: Mapping[str, str]) -> str:
    return f"| {title} | meaning |\n| --- | --- |\n" + "".join(f"| `{k}` | {v} |\n" for k, v in rows.items())


_ROOM_DOCS = {
    "user": ("One user's own events (wallet, investments, transactions, rewards, notifications, portfolio). "
             "Joined automatically on connect; only that user may read it."),
    "property": ("One property's public events (funding bar, status). Any authenticated user may join it "
                 "with `subscribe:property`."),
    "organization": ("An organization's updates, for its admins only: join with `subscribe:organization`."),
    "announcements": "Platform announcements to every connected user; joined automatically on connect.",
}
_CLIENT_DOCS = {
    "subscribe:property": ("Join `property:{propertyId}`. The ack gives the room, the current funding bar (if any) "
                           "and the stream's offset to resume from."),
    "unsubscribe:property": "Leave `property:{propertyId}`.",
    "subscribe:organization": "Join `organization:{orgId}` (admins of that organization only).",
    "unsubscribe:organization": "Leave `organization:{orgId}`.",
    "ping": "Application-level round trip; the ack carries the server time.",
    "auth:refresh": ("Replace the session's access token (same user) before it expires, e.g. on `auth:expired`; "
                     "the ack gives the new expiry."),
}
assert _CLIENT_DOCS.keys() == msg.CLIENT_EVENTS.keys(), "describe every client event"
_PARAMETER_EXAMPLES = {"userId": "usr_amira", "propertyId": "prop_palm", "orgId": "org_marina"}

def _publish_table() -> str:
    return "| error.code | status | meaning |\n| --- | --- | --- |\n" + "".join(
        f"| `{code}` | {status} | {meaning} |\n" for code, (status, meaning) in PUBLISH_ERRORS.items())


_INFO = f"""The real-time gateway of Blocks, generated from the pydantic models of `blocks_rt` \
(`blocks-rt spec asyncapi`): do not edit by hand.

**Connecting.** socket.io-client 4.x to the namespace `{NAMESPACE}`, with
`auth: {{token: "<JWT access token>", offsets: {{"<stream>": "<eventId>", ...}}}}`. A refused handshake
ends in `connect_error` with message `Authentication failed` and `data.code` (see the `connectError`
message). Once accepted, the server sends `connected`, then replays what each stream in `offsets`
missed, then `stream:resumed`, then live events.

**Streams.** Each room is a stream. Every event delivered to a room carries `eventId` and `stream`:
keep the last `eventId` per stream (and the `offsets` of `stream:resumed`) and send them back when
reconnecting, so nothing is lost and nothing arrives twice. `stream:resync_required` means that
stream cannot be replayed: refetch its state over REST.

**Client events** are acknowledged (Socket.IO acks): `{{success: true, ...}}`, or
`{{success: false, error: {{code, message}}}}`, and the connection stays healthy.

**Publish API (backends, HTTP).** `POST /api/events` with `Authorization: Bearer <API key>` and a JSON
body: one `{{"event": "<domain event>", "data": {{...}}}}` or a list of them, all or nothing. With an
`{IDEMPOTENCY_KEY}` header (1-128 characters of `A-Z a-z 0-9 _ . : -`), a repeat with the same key and
the same body within `BLOCKS_RT_IDEMPOTENCY_TTL_S` (24 h) publishes nothing and gets the first answer
again, same status and body. `202` answers what was accepted, each event's `eventId` per stream:
`{{"accepted": 2, "events": [{{"event": "investment.created", "eventIds": {{"user:usr_amira": "<eventId>",
"property:prop_palm": "<eventId>"}}}}, ...]}}`. A refusal is `{{"error": {{"code", "message", ...}}}}`:

{_publish_table()}
Every committed row of the PostgreSQL outbox table `blocks_rt_outbox` (`event`, `data`) is published as
if by this API, once (see docs/outbox.md).
"""


def _message(event: str | None, title: str, model: type[BaseModel], ref: JsonSchema,
             examples: Iterable[tuple[str, Mapping[str, Any]]], description: str | None = None) -> JsonSchema:
    message: JsonSchema = {"name": event} if event else {}
    summary = model.__doc__ or description or title
    message |= {"title": title, "summary": summary.strip().splitlines()[0],
                "contentType": "application/json", "payload": ref,
                "examples": [{"name": name, "payload": dict(payload)} for name, payload in examples]}
    if description:
        message["description"] = description
    return message


def asyncapi() -> JsonSchema:
    """The AsyncAPI 3.0 document of the gateway, as a dict."""
    refs, defs = _definitions("#/components/schemas/{model}")
    messages: dict[str, JsonSchema] = {}
    for event, model in SERVER_EVENTS.items():
        messages[_key(event)] = _message(event, event, model, refs[model], [(_key(event), ex.SERVER_EXAMPLES[event])])
    for event, request in msg.CLIENT_EVENTS.items():
        messages[_key(event)] = _message(event, event, request, refs[request],
                                         [(_key(event), ex.CLIENT_EXAMPLES[event])], _CLIENT_DOCS[event])
    ack_examples: dict[type[ev.Model], list[tuple[str, Mapping[str, Any]]]] = {}
    for event, ack in msg.ACKS.items():
        ack_examples.setdefault(ack, []).append((_key(event), ex.ACK_EXAMPLES[event]))
    for ack, examples in ack_examples.items():
        messages[_model_key(ack)] = _message(None, ack.__name__, ack, refs[ack], examples)
    messages["errorAck"] = _message(None, "ErrorAck", msg.ErrorAck, refs[msg.ErrorAck],
                                    [("forbidden", ex.ERROR_ACK_EXAMPLE)], _table("error.code", ACK_ERRORS))
    messages["connectError"] = _message(
        "connect_error", "connect_error", msg.ConnectError, refs[msg.ConnectError],
        [("tokenExpired", ex.CONNECT_ERROR_EXAMPLE)],
        "Socket.IO's CONNECT_ERROR packet for a refused handshake (socket.io-client: `socket.on(\"connect_error\","
        " err => err.message, err.data.code)`); the socket receives nothing else.\n\n"
        + _table("data.code", CONNECT_REFUSALS))

    def channel_messages(keys: Iterable[str]) -> JsonSchema:
        return {k: {"$ref": f"#/components/messages/{k}"} for k in keys}

    channels: dict[str, JsonSchema] = {}
    for room, events in ROOMS.items():
        kind = room.partition(":")[0]
        params = [name for _, name, _, _ in Formatter().parse(room) if name]
        channels[kind] = {"address": room, "title": f"{kind} room", "description": _ROOM_DOCS[kind],
                          "messages": channel_messages(_key(e) for e in events)}
        if params:
            channels[kind]["parameters"] = {p: {"description": f"the `{p}` of the room",
                                                "examples": [_PARAMETER_EXAMPLES[p]]} for p in params}
    session_keys = [_key(e) for e in SERVER_EVENTS if e not in {e for es in ROOMS.values() for e in es}]
    ack_keys = [_model_key(a) for a in ack_examples] + ["errorAck"]
    channels["socket"] = {
        "address": None, "title": "the socket itself",
        "description": "What the server sends one socket outside of any room, what the client sends, and the acks.",
        "messages": channel_messages([*session_keys, "connectError", *(_key(e) for e in msg.CLIENT_EVENTS),
                                      *ack_keys])}

    operations: dict[str, JsonSchema] = {}
    for event in SERVER_EVENTS:
        channel = next((room.partition(":")[0] for room, es in ROOMS.items() if event in es), "socket")
        operations[_key(event)] = {
            "action": "send", "channel": {"$ref": f"#/channels/{channel}"}, "title": f"server sends {event}",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{_key(event)}"}]}
    operations["connectError"] = {
        "action": "send", "channel": {"$ref": "#/channels/socket"}, "title": "server refuses the handshake",
        "messages": [{"$ref": "#/channels/socket/messages/connectError"}]}
    for event, ack in msg.ACKS.items():
        operations[_key(event)] = {
            "action": "receive", "channel": {"$ref": "#/channels/socket"}, "title": f"client sends {event}",
            "messages": [{"$ref": f"#/channels/socket/messages/{_key(event)}"}],
            "reply": {"channel": {"$ref": "#/channels/socket"}, "messages": [
                {"$ref": f"#/channels/socket/messages/{_model_key(ack)}"},
                {"$ref": "#/channels/socket/messages/errorAck"}]}}

    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Blocks real-time gateway", "version": version("blocks-rt"), "description": _INFO},
        "defaultContentType": "application/json",
        "servers": {"gateway": {
            "host": "{host}", "protocol": "wss", "protocolVersion": "Socket.IO 5 (socket.io-client 4.x)",
            "pathname": NAMESPACE, "title": "Socket.IO namespace /mobile",
            "description": (f"Socket.IO namespace `{NAMESPACE}` (Engine.IO path `/socket.io/`): WebSocket, or "
                            "HTTP long-polling upgraded to WebSocket; `ws://` on a local development server."),
            "variables": {"host": {"default": "localhost:3000", "description": "host and port of the gateway"}},
            "security": [{"$ref": "#/components/securitySchemes/jwt"}]}},
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": defs,
            "messages": messages,
            "securitySchemes": {"jwt": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": ("The access token, checked once in the Socket.IO handshake: socket.io-client's "
                                "`auth: {token}` (or an `Authorization: Bearer` header). When it expires the "
                                "server sends `auth:expired`; send `auth:refresh` with a new token in time.")}},
        },
    }


class _Dumper(yaml.SafeDumper):
    """No anchors/aliases for repeated objects; multi-line text as readable `|` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _str)


def asyncapi_yaml() -> str:
    return yaml.dump(asyncapi(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


# --- TypeScript -------------------------------------------------------------------------------------------
_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def _ts_type(schema: JsonSchema) -> str:
    """The TypeScript type of a JSON Schema of the shapes pydantic emits for our models."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        return " | ".join(dict.fromkeys(_ts_type(s) for s in schema.get("anyOf") or schema["oneOf"]))
    kind = schema.get("type")
    if kind == "array":
        item = _ts_type(schema.get("items", {}))
        return f"({item})[]" if "|" in item else f"{item}[]"
    if kind == "object":
        values = schema.get("additionalProperties", True)
        return f"Record<string, {_ts_type(values) if isinstance(values, dict) else 'unknown'}>"
    return {"string": "string", "integer": "number", "number": "number", "boolean": "boolean",
            "null": "null"}.get(str(kind), "unknown")


def _doc(text: str | None, indent: str = "") -> str:
    if not text:
        return ""
    lines = text.strip().splitlines()
    return f"{indent}/** {lines[0]} */\n" if len(lines) == 1 else (
        f"{indent}/**\n" + "".join(f"{indent} * {line}".rstrip() + "\n" for line in lines) + f"{indent} */\n")


def _ts_declaration(name: str, schema: JsonSchema) -> str:
    if schema.get("type") != "object" or "properties" not in schema:
        return f"{_doc(schema.get('description'))}export type {name} = {_ts_type(schema)};\n"
    required = set(schema.get("required", ()))
    body = "".join(
        f"{_doc(prop.get('description'), '  ')}  {key if _IDENT.match(key) else json.dumps(key)}"
        f"{'' if key in required else '?'}: {_ts_type(prop)};\n"
        for key, prop in schema["properties"].items())
    return f"{_doc(schema.get('description'))}export interface {name} {{\n{body}}}\n"


def typescript() -> str:
    """A .d.ts with every payload type and socket.io-client's `ServerToClientEvents`/`ClientToServerEvents`."""
    refs, defs = _definitions("#/$defs/{model}")

    def name(model: type[BaseModel]) -> str:
        return _ts_type(refs[model])

    server = "".join(f"  {json.dumps(e)}: (payload: {name(m)}) => void;\n" for e, m in SERVER_EVENTS.items())
    client = "".join(
        f"  {json.dumps(e)}: (payload: {name(m)}, ack: (response: {name(msg.ACKS[e])} | {name(msg.ErrorAck)})"
        " => void) => void;\n" for e, m in msg.CLIENT_EVENTS.items())
    return (
        "// The Blocks real-time contract, generated from blocks_rt's pydantic models by\n"
        "// `blocks-rt spec typescript`: do not edit by hand.\n"
        "//\n"
        '//   import { io, Socket } from "socket.io-client";\n'
        '//   import type { ServerToClientEvents, ClientToServerEvents } from "./blocks-rt";\n'
        '//   const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(`${url}/mobile`, { auth });\n\n'
        + "\n".join(_ts_declaration(n, defs[n]) for n in sorted(defs))
        + f"\n/** Everything the gateway emits on `{NAMESPACE}`, by event name. */\n"
        f"export interface ServerToClientEvents {{\n{server}}}\n"
        "\n/** Everything a client may emit, each answered by an ack (`success: false` carries `error.code`). */\n"
        f"export interface ClientToServerEvents {{\n{client}}}\n"
    )
