"""docs/events.md: every wire event, client event and domain event with its fields, generated from the models.

`blocks-rt spec events` writes it; tests/test_contract.py fails when the committed page differs from what the
models give. Two sets of types: as a client receives them (serialization) and as a backend publishes them
(validation: amounts may be numbers or decimal strings, timestamps may be left out).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from . import events as ev
from . import messages as msg
from .contract import _CLIENT_DOCS, ROOMS, SERVER_EVENTS, JsonSchema, _WireSchema
from .router import ROUTES
from .settings import NAMESPACE

_RECEIVED, _PUBLISHED = "received", "published"


def _definitions(models: Iterable[type[BaseModel]], mode: JsonSchemaMode) -> tuple[dict[type[BaseModel], str],
                                                                                  dict[str, JsonSchema]]:
    """Model → its definition's name, and the definitions, every `$ref` being a plain name."""
    models = list(dict.fromkeys(models))
    keys, defs = models_json_schema([(m, mode) for m in models], by_alias=True, ref_template="{model}",
                                    schema_generator=_WireSchema)
    return {m: keys[(m, mode)]["$ref"] for m in models}, defs.get("$defs", {})


def _type(schema: Mapping[str, Any], kind: str) -> str:
    """A schema as a short phrase: `string (date-time)`, `number or string`, a link to a type, ..."""
    if "$ref" in schema:
        return f"[{schema['$ref']}](#{kind}-{schema['$ref'].lower()})"
    if "const" in schema:
        return f"`{schema['const']!r}`".replace("'", '"')
    if "enum" in schema:
        return "one of " + ", ".join(f'`"{value}"`' for value in schema["enum"])
    if "anyOf" in schema:
        kinds = dict.fromkeys(_type(option, kind) for option in schema["anyOf"])
        if "number" in kinds:  # an integer is a number
            kinds.pop("integer", None)
        return " or ".join(kinds)
    kind_of = schema.get("type")
    if kind_of == "array":
        return f"list of {_type(schema.get('items', {}), kind)}"
    if kind_of == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of string to {_type(schema['additionalProperties'], kind)}"
    if kind_of == "string" and "format" in schema:
        return f"string ({schema['format']})"
    return str(kind_of or "any")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _fields(schema: Mapping[str, Any], kind: str) -> str:
    properties = schema.get("properties", {})
    if not properties:
        return "No fields.\n"
    required = set(schema.get("required", ()))
    rows = "".join(f"| `{name}` | {_type(field, kind)} | {'yes' if name in required else 'no'} | "
                   f"{_cell(field.get('description', ''))} |\n" for name, field in properties.items())
    return "| field | type | required | description |\n| --- | --- | --- | --- |\n" + rows


def _summary(schema: Mapping[str, Any]) -> str:
    return _cell(schema.get("description", "")) + "\n\n" if schema.get("description") else ""


def _types(title: str, kind: str, defs: Mapping[str, JsonSchema], skip: set[str]) -> str:
    """Every nested type (those not already shown as an event), alphabetically, with its anchor."""
    parts = [f"## {title}\n\n"]
    for name in sorted(set(defs) - skip):
        parts.append(f'<a id="{kind}-{name.lower()}"></a>\n\n### {name}\n\n{_summary(defs[name])}'
                     f"{_fields(defs[name], kind)}\n")
    return "".join(parts)


def _rooms_of(event: str) -> str:
    rooms = [room for room, events in ROOMS.items() if event in events]
    return ", ".join(f"`{room}`" for room in rooms) if rooms else "the socket itself (no room)"


def events_markdown() -> str:
    """The whole page."""
    server, server_defs = _definitions([*SERVER_EVENTS.values(), *msg.ACKS.values()], "serialization")
    client, client_defs = _definitions(msg.CLIENT_EVENTS.values(), "validation")
    domain, domain_defs = _definitions(ev.DOMAIN_EVENTS.values(), "validation")
    parts = [f"""# Events

Every event a phone receives or sends, and every domain event a backend publishes, with its fields.

Generated from the models of `blocks_rt` by `blocks-rt spec events`: do not edit by hand. The same models give
`spec/asyncapi.yaml` (the Socket.IO side), `spec/openapi.yaml` (the HTTP side), `spec/schemas/` and
`spec/blocks-rt.d.ts`.

- [Server events](#server-events): what a client of the namespace `{NAMESPACE}` receives, and in which room.
- [Client events](#client-events): what a client sends; each is acknowledged.
- [Domain events](#domain-events): what a backend publishes (`POST /api/events`, the outbox table, or the
  in-process bus), and the server events each one becomes.

Every event delivered to a room carries `eventId` and `stream`: keep the last `eventId` per stream and send
them back as `auth.offsets` when reconnecting, so nothing is lost and nothing arrives twice.

## Server events

"""]
    for event in SERVER_EVENTS:
        schema = server_defs[server[SERVER_EVENTS[event]]]
        parts.append(f"### `{event}`\n\nRoom: {_rooms_of(event)}.\n\n{_summary(schema)}"
                     f"{_fields(schema, _RECEIVED)}\n")
    parts.append("## Client events\n\nEach is acknowledged with `{success: true, ...}` (the ack below) or "
                 "`{success: false, error: {code, message}}`.\n\n")
    for event, request in msg.CLIENT_EVENTS.items():
        ack = msg.ACKS[event]
        parts.append(f"### `{event}`\n\n{_CLIENT_DOCS[event]}\n\n{_fields(client_defs[client[request]], _PUBLISHED)}"
                     f"\nAck: {_type({'$ref': server[ack]}, _RECEIVED)}.\n\n")
    parts.append("## Domain events\n\nPublished as `{\"event\": \"<name>\", \"data\": {...}}` (one, or a list, all "
                 "or nothing). Amounts may be numbers or decimal strings.\n\n")
    for event, model in ev.DOMAIN_EVENTS.items():
        routes = "; ".join(f"`{r.event}` to `{r.room}`" for r in ROUTES[event])
        schema = domain_defs[domain[model]]
        parts.append(f"### `{event}`\n\nDelivered as: {routes}.\n\n{_summary(schema)}"
                     f"{_fields(schema, _PUBLISHED)}\n")
    events_shown = {domain[m] for m in ev.DOMAIN_EVENTS.values()} | {client[m] for m in msg.CLIENT_EVENTS.values()}
    parts.append(_types("Types, as received", _RECEIVED, server_defs, {server[m] for m in SERVER_EVENTS.values()}))
    parts.append(_types("Types, as published", _PUBLISHED, {**client_defs, **domain_defs}, events_shown))
    return "".join(parts).rstrip("\n") + "\n"
