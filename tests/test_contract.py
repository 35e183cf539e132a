"""The contract (spec/) is what the code generates, is valid AsyncAPI 3.0, type-checks, and is what the gateway sends."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
import referencing
import socketio
import yaml

from blocks_rt import contract, spec
from blocks_rt import events as ev
from blocks_rt import examples as ex
from blocks_rt import messages as msg
from blocks_rt.broker import Position, stamp
from blocks_rt.errors import ServiceUnavailable
from blocks_rt.eventdocs import events_markdown
from blocks_rt.http_api import PUBLISH_ERRORS
from blocks_rt.idempotency import IN_FLIGHT, REUSED
from blocks_rt.router import ROUTES, route
from blocks_rt.settings import NAMESPACE
from blocks_rt.testing.lab import Lab
from blocks_rt.testing.waiting import until

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec"
JS = ROOT / "tests" / "contract_js"
REGENERATE = "regenerate with `blocks-rt spec all` and commit spec/"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """tests/contract_js/node_modules from its package-lock.json (`npm ci` once, bounded)."""
    modules = JS / "node_modules"
    if not (modules / ".package-lock.json").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed for the contract tests (AsyncAPI schema, tsc)"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
    return modules


def schema_file(relative: str) -> dict[str, Any]:
    return json.loads((SPEC / "schemas" / relative).read_text())


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """Validate with a registry that resolves nothing remote: every `$ref` must be inside the schema."""
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator_class(schema, registry=referencing.Registry()).validate(instance)


def server_file(event: str) -> str:
    return f"server/{event.replace(':', '.')}.json"


def client_file(event: str, kind: str = "client") -> str:
    return f"{kind}/{event.replace(':', '.')}.json"


# --- the committed files are exactly what the code generates ---------------------------------------------
def test_committed_spec_is_what_the_models_generate() -> None:
    expected = spec.artifacts()
    committed = {str(p.relative_to(SPEC)): p.read_text() for p in SPEC.rglob("*") if p.is_file()}
    assert sorted(committed) == sorted(expected), REGENERATE
    stale = [path for path, text in expected.items() if committed[path] != text]
    assert stale == [], f"out of date: {stale}; {REGENERATE}"


def test_the_events_page_is_what_the_models_generate_and_names_every_event_and_field() -> None:
    page = (ROOT / "docs" / "events.md").read_text()
    assert page == events_markdown(), "regenerate with `blocks-rt spec events` and commit docs/events.md"
    headings = {line[5:-1] for line in page.splitlines() if line.startswith("### `")}
    assert headings == set(contract.SERVER_EVENTS) | set(msg.CLIENT_EVENTS) | set(ev.DOMAIN_EVENTS)
    for event, model in ev.DOMAIN_EVENTS.items():
        section = page.split(f"### `{event}`\n", 1)[1].split("\n### ", 1)[0]
        assert all(f"| `{field.alias or name}` |" in section for name, field in model.model_fields.items()), event


def test_the_typescript_client_carries_the_generated_types() -> None:
    # @blocks-rt/client types every payload with this copy (it ships inside the npm package, spec/ does not).
    copy = ROOT / "clients" / "typescript" / "src" / "generated" / "blocks-rt.ts"
    assert copy.read_text() == contract.typescript(), (
        "regenerate with `blocks-rt spec typescript -o clients/typescript/src/generated/blocks-rt.ts`")


def test_cli_generates_the_same_bytes_in_another_process(tmp_path: Path) -> None:
    # Another interpreter with another hash seed: nothing may depend on set order, time or randomness.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "blocks_rt.cli", "spec", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    cli("all", "-o", "out")
    written = {str(p.relative_to(tmp_path / "out")): p.read_text() for p in (tmp_path / "out").rglob("*")
               if p.is_file()}
    assert written == spec.artifacts()
    assert cli("asyncapi") == (SPEC / "asyncapi.yaml").read_text()
    cli("typescript", "-o", "types.d.ts")
    assert (tmp_path / "types.d.ts").read_text() == (SPEC / "blocks-rt.d.ts").read_text()
    cli("jsonschema", "-o", "schemas")
    assert {str(p.relative_to(tmp_path / "schemas")) for p in (tmp_path / "schemas").rglob("*.json")} == {
        str(p.relative_to(SPEC / "schemas")) for p in (SPEC / "schemas").rglob("*.json")}


# --- AsyncAPI 3.0 -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def asyncapi_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((SPEC / "asyncapi.yaml").read_text())
    return doc


@pytest.fixture(scope="module")
def official_schema(node_modules: Path) -> dict[str, Any]:
    # The bundled schema embeds every definition under its own `$id`: it resolves offline.
    schema: dict[str, Any] = json.loads((node_modules / "@asyncapi/specs/schemas/3.0.0.json").read_text())
    return schema


def test_asyncapi_document_is_valid_asyncapi_3(asyncapi_doc: dict[str, Any], official_schema: dict[str, Any]) -> None:
    assert official_schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    validate(asyncapi_doc, official_schema)
    # The validator is live: a broken copy is refused.
    broken = {**asyncapi_doc, "channels": {**asyncapi_doc["channels"], "user": {"address": 42}}}
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, official_schema)
    with pytest.raises(jsonschema.ValidationError):
        validate({**asyncapi_doc, "operations": {"ping": {"action": "emit"}}}, official_schema)


def test_asyncapi_describes_server_rooms_and_security(asyncapi_doc: dict[str, Any]) -> None:
    server = asyncapi_doc["servers"]["gateway"]
    assert server["pathname"] == NAMESPACE
    assert server["security"] == [{"$ref": "#/components/securitySchemes/jwt"}]
    assert asyncapi_doc["components"]["securitySchemes"]["jwt"]["bearerFormat"] == "JWT"
    channels = asyncapi_doc["channels"]
    assert {c["address"]: sorted(c.get("parameters", {})) for c in channels.values()} == {
        "user:{userId}": ["userId"], "property:{propertyId}": ["propertyId"],
        "organization:{orgId}": ["orgId"], "announcements": [], None: []}
    for room_routes in ROUTES.values():
        for r in room_routes:
            [channel] = [c for c in channels.values() if c["address"] == r.room]
            assert contract._key(r.event) in channel["messages"], f"{r.event} missing from {r.room}"


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_event_is_a_message_whose_example_matches_its_payload(asyncapi_doc: dict[str, Any]) -> None:
    messages = asyncapi_doc["components"]["messages"]
    by_name = {m["name"]: m for m in messages.values() if "name" in m}
    assert set(by_name) == set(contract.SERVER_EVENTS) | set(msg.CLIENT_EVENTS) | {"connect_error"}
    for key, message in messages.items():
        assert message["examples"], key
        payload_schema = {**message["payload"], "components": asyncapi_doc["components"]}
        for example in message["examples"]:
            validate(example["payload"], payload_schema)
    # Stream events carry eventId and stream; the rest do not pretend to.
    for event in contract.SERVER_EVENTS:
        schema = resolve(asyncapi_doc, by_name[event]["payload"]["$ref"])
        stamped = {"eventId", "stream"} <= set(schema["required"])
        assert stamped == (event in ev.WIRE_EVENTS and event != "connected"), event


def test_client_operations_reply_with_their_acks(asyncapi_doc: dict[str, Any]) -> None:
    operations = asyncapi_doc["operations"]
    for event, ack in msg.ACKS.items():
        op = operations[contract._key(event)]
        assert op["action"] == "receive"
        [sent] = op["messages"]
        assert resolve(asyncapi_doc, resolve(asyncapi_doc, sent["$ref"])["$ref"])["name"] == event
        replies = [resolve(asyncapi_doc, resolve(asyncapi_doc, m["$ref"])["$ref"]) for m in op["reply"]["messages"]]
        assert [r["title"] for r in replies] == [ack.__name__, "ErrorAck"]
    for event in contract.SERVER_EVENTS:
        assert operations[contract._key(event)]["action"] == "send"


def test_error_codes_are_documented(asyncapi_doc: dict[str, Any]) -> None:
    messages = asyncapi_doc["components"]["messages"]
    schemas = asyncapi_doc["components"]["schemas"]
    assert set(schemas["AckErrorDetail"]["properties"]["code"]["enum"]) == set(contract.ACK_ERRORS)
    assert set(schemas["ConnectErrorData"]["properties"]["code"]["enum"]) == set(contract.CONNECT_REFUSALS)
    for code in contract.ACK_ERRORS:
        assert f"| `{code}` |" in messages["errorAck"]["description"]
    for code in contract.CONNECT_REFUSALS:
        assert f"| `{code}` |" in messages["connectError"]["description"]


def _calls(modules: str = "*") -> list[ast.Call]:
    return [node for path in sorted((ROOT / "blocks_rt").rglob(f"{modules}.py"))
            for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]


def _codes(error: str, modules: str = "*") -> set[str]:
    """Every literal `code="..."` passed to `error(...)` in blocks_rt/**/<modules>.py."""
    return {kw.value.value for node in _calls(modules) if getattr(node.func, "id", None) == error
            for kw in node.keywords if kw.arg == "code" and isinstance(kw.value, ast.Constant)}


def test_the_contract_lists_exactly_the_codes_the_code_raises() -> None:
    # Any AuthError refuses a connect; `auth:refresh` passes on the token verifier's (auth.py) codes; a
    # dependency that is down (ServiceUnavailable) refuses a connect or a request with its own code.
    down = {ServiceUnavailable.code}
    assert set(get_args(msg.ConnectRefusalCode)) == _codes("AuthError") | down
    assert set(get_args(msg.AckErrorCode)) == _codes("ClientRequestError") | _codes("AuthError", "auth") | down
    # A session ends through `end_session(sid, reason, ...)`, or, when the engine ends a slow consumer, with a
    # `SessionEnded(reason=...)` it is handed.
    reasons = {node.args[1].value for node in _calls() if getattr(node.func, "attr", None) == "end_session"
               and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)}
    reasons |= {kw.value.value for node in _calls() if getattr(node.func, "attr", None) == "SessionEnded"
                for kw in node.keywords if kw.arg == "reason" and isinstance(kw.value, ast.Constant)}
    assert set(get_args(msg.SessionEndReason)) == reasons


def test_the_contract_lists_exactly_the_publish_api_s_codes(asyncapi_doc: dict[str, Any]) -> None:
    answered = {node.args[1].value for node in _calls("http_api")
                if getattr(node.func, "id", None) in ("_error", "refusal") and isinstance(node.args[1], ast.Constant)}
    validation = _codes("InvalidEvent", "bus")
    idempotency = {IN_FLIGHT, REUSED}
    assert set(PUBLISH_ERRORS) == answered | validation | idempotency
    for code, (status, _) in PUBLISH_ERRORS.items():
        assert f"| `{code}` | {status} |" in asyncapi_doc["info"]["description"]
    assert "Idempotency-Key" in asyncapi_doc["info"]["description"]


# --- examples: real, and shared with routing ---------------------------------------------------------------
def test_examples_validate_against_models_and_schemas() -> None:
    for name, example in ex.DOMAIN_EXAMPLES.items():
        assert ev.DOMAIN_EVENTS[name].model_validate(example.wire()) == example
    for event, payload in ex.SERVER_EXAMPLES.items():
        assert contract.SERVER_EVENTS[event].model_validate(payload).wire() == payload, event
        validate(payload, schema_file(server_file(event)))
    for event, payload in ex.CLIENT_EXAMPLES.items():
        msg.CLIENT_EVENTS[event].model_validate(payload)
        validate(payload, schema_file(client_file(event)))
        ack = ex.ACK_EXAMPLES[event]
        assert msg.ACKS[event].model_validate(ack).wire() == ack
        validate(ack, schema_file(client_file(event, "ack")))
        validate(ex.ERROR_ACK_EXAMPLE, schema_file(client_file(event, "ack")))
    validate(ex.CONNECT_ERROR_EXAMPLE, schema_file("connect_error.json"))
    # The schemas are not vacuous: a payload missing a field or with a wrong type is refused.
    bad = {**ex.SERVER_EXAMPLES["wallet:balance_updated"], "balance": {"usdc": "5000.5", "locked": 0}}
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, schema_file(server_file("wallet:balance_updated")))
    unstamped = {k: v for k, v in ex.SERVER_EXAMPLES["wallet:balance_updated"].items() if k != "eventId"}
    with pytest.raises(jsonschema.ValidationError):
        validate(unstamped, schema_file(server_file("wallet:balance_updated")))


@pytest.mark.parametrize("name", list(ex.DOMAIN_EXAMPLES))
def test_routing_each_domain_example_gives_contract_payloads(name: str) -> None:
    example = ex.DOMAIN_EXAMPLES[name]
    deliveries = route(name, example)
    assert [d.event for d in deliveries] == [r.event for r in ROUTES[name]]
    for seq, delivery in enumerate(deliveries, 1):
        wire = stamp(delivery, "e1", Position(1, seq), 0.0).payload
        model = contract.SERVER_EVENTS[delivery.event]
        assert model.model_validate(wire).wire() == wire
        validate(wire, schema_file(server_file(delivery.event)))
        assert wire["stream"] == delivery.stream and delivery.stream.partition(":")[0] in {
            "user", "property", "organization", "announcements"}


def test_investment_example_routes_to_its_owner_and_its_property() -> None:
    deliveries = route("investment.created", ex.DOMAIN_EXAMPLES["investment.created"])
    assert [(d.event, d.stream) for d in deliveries] == [
        ("investment:created", "user:usr_amira"), ("property:funding_updated", "property:prop_palm")]
    assert "propertyData" not in deliveries[0].payload
    assert deliveries[1].payload["property"] == {"id": "prop_palm", "title": "Palm Crescent Villas",
                                                 "totalTokens": 5000, "soldTokens": 20, "availableTokens": 4980,
                                                 "fundingProgress": 0.4}


# --- TypeScript ---------------------------------------------------------------------------------------------
def test_sample_client_type_checks_against_the_typescript_contract(node_modules: Path) -> None:
    tsc = node_modules / ".bin" / "tsc"
    done = subprocess.run([str(tsc), "-p", str(JS / "tsconfig.json")], cwd=JS, capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    dts = (SPEC / "blocks-rt.d.ts").read_text()
    for event in contract.SERVER_EVENTS:
        assert f"  {json.dumps(event)}: (payload: " in dts
    assert dts.count("ack: (response: ") == len(msg.CLIENT_EVENTS)


# --- the live gateway sends what the contract says ---------------------------------------------------------
class Wire:
    """A plain socket.io client that records every event and ack exactly as received."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)
        self.events: list[tuple[str, Any]] = []
        self.connect_error: Any = None
        self.sio.on("*", self._record, namespace=NAMESPACE)
        self.sio.on("connect_error", self._refused, namespace=NAMESPACE)

    async def _record(self, event: str, payload: Any = None) -> None:
        self.events.append((event, payload))

    async def _refused(self, data: Any = None) -> None:
        self.connect_error = data

    async def connect(self, lab: Lab, auth: dict[str, Any]) -> None:
        await self.sio.connect(lab.url, namespaces=[NAMESPACE], auth=auth, transports=["websocket"],
                               wait_timeout=10)

    def got(self, event: str) -> list[Any]:
        return [p for e, p in self.events if e == event]

    async def wait(self, condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        await until(condition, timeout, what)

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, namespace=NAMESPACE, timeout=5)


async def test_the_gateway_sends_what_the_contract_says(make_lab: Callable[..., Awaitable[Lab]]) -> None:
    lab = await make_lab(token_refresh_grace_s=0.3)
    amira, olivia, resumer, expiring, refused = Wire(), Wire(), Wire(), Wire(), Wire()
    try:
        await amira.connect(lab, {"token": lab.token("usr_amira")})
        await olivia.connect(lab, {"token": lab.token("usr_olivia")})
        acks: list[tuple[str, Any, bool]] = [
            ("subscribe:property", await amira.call("subscribe:property", {"propertyId": "prop_palm"}), True),
            ("subscribe:property", await amira.call("subscribe:property", {"propertyId": "prop_creek"}), True),
            ("subscribe:organization", await olivia.call("subscribe:organization", {"orgId": "org_marina"}), True),
            ("ping", await amira.call("ping", {}), True),
            ("auth:refresh", await amira.call("auth:refresh", {"token": lab.token("usr_amira")}), True),
            ("subscribe:organization", await amira.call("subscribe:organization", {"orgId": "org_marina"}), False),
            ("subscribe:property", await amira.call("subscribe:property", {"propertyId": ""}), False),
            ("auth:refresh", await amira.call("auth:refresh", {"token": lab.token("usr_ben")}), False),
        ]
        for event, ack, ok in acks:
            validate(ack, schema_file(client_file(event, "ack")))
            assert ("error" not in ack) is ok, (event, ack)

        status, body = await lab.publish([{"event": n, "data": e.wire()} for n, e in ex.DOMAIN_EXAMPLES.items()])
        assert status == 202, body
        amira_events = {e for es in contract.ROOMS.values() for e in es} - {"organization:updated"}
        await amira.wait(lambda: amira_events <= {e for e, _ in amira.events}, "amira got every stream event")
        await olivia.wait(lambda: bool(olivia.got("organization:updated")), "olivia got the org update")

        await resumer.connect(lab, {"token": lab.token("usr_ben"), "offsets": {"user:usr_ben": "gone:1-0"}})
        await resumer.wait(lambda: bool(resumer.got("stream:resumed")), "stream:resumed")

        expiring_token = lab.token("usr_ben", ttl_s=1)
        await expiring.connect(lab, {"token": expiring_token})
        await expiring.wait(lambda: bool(expiring.got("session:ended")), "auth:expired, then session:ended")

        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(lab, {"token": "not-a-jwt"})
        validate(refused.connect_error, schema_file("connect_error.json"))
        assert refused.connect_error["data"]["code"] == "token_malformed"

        received = amira.events + olivia.events + resumer.events + expiring.events
        assert {e for e, _ in received} == set(contract.SERVER_EVENTS), "every server event was seen on the wire"
        for event, payload in received:
            validate(payload, schema_file(server_file(event)))
        assert resumer.got("stream:resync_required")[0]["stream"] == "user:usr_ben"
    finally:
        for wire in (amira, olivia, resumer, expiring, refused):
            await wire.sio.disconnect()
