"""spec/openapi.yaml (openapi.py): valid OpenAPI 3.1, complete (every domain event, every error code), and what
a real gateway answers. Drift against the models is tests/test_contract.py's (it is one of the artifacts)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import referencing
import yaml
from openapi_spec_validator import validate as validate_openapi
from samples import sample

from blocks_rt import events as ev
from blocks_rt.http_api import IDEMPOTENCY_KEY, PUBLISH_ERRORS
from blocks_rt.openapi import openapi
from blocks_rt.testing.lab import Lab

DOCUMENT = Path(__file__).resolve().parent.parent / "spec" / "openapi.yaml"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def conforms(document: dict[str, Any], schema: str, instance: Any) -> None:
    """`instance` is valid against the document's `schema`, every `$ref` resolved inside the document."""
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": document["components"],
            "$ref": f"#/components/schemas/{schema}"}
    jsonschema.Draft202012Validator(root, registry=referencing.Registry()).validate(instance)


def test_the_committed_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate_openapi(document)
    assert document == openapi()


def test_it_names_every_endpoint_every_domain_event_and_every_error_code(document: dict[str, Any]) -> None:
    assert set(document["paths"]) == {"/api/events", "/api/presence/{userId}", "/healthz", "/metrics"}
    publish = document["paths"]["/api/events"]["post"]
    envelopes = document["components"]["schemas"]["DomainEvent"]["discriminator"]["mapping"]
    assert set(envelopes) == set(ev.DOMAIN_EVENTS)
    assert [p["name"] for p in publish["parameters"]] == [IDEMPOTENCY_KEY]
    documented = {code: int(status) for status, response in publish["responses"].items() if status != "202"
                  for code in response["content"]["application/json"]["examples"]}
    assert documented == {code: status for code, (status, _) in PUBLISH_ERRORS.items()}
    for example in publish["requestBody"]["content"]["application/json"]["examples"].values():
        conforms(document, "PublishRequest", example["value"])
    with pytest.raises(jsonschema.ValidationError):
        conforms(document, "PublishRequest", {"event": "wallet.balance_updated", "data": {"userId": "usr_amira"}})
    with pytest.raises(jsonschema.ValidationError):
        conforms(document, "PublishRequest", [])


async def test_a_running_gateway_answers_what_the_document_says(
        document: dict[str, Any], make_lab: Callable[..., Awaitable[Lab]]) -> None:
    lab = await make_lab()
    payload = {"event": "notification.created", "data": sample("notification.created", ident="n1")}
    conforms(document, "PublishRequest", payload)
    answers: list[tuple[str, int, Any]] = []
    status, body = await lab.publish(payload)
    answers.append(("/api/events", status, body))
    for bad, key in ((payload, "wrong-key"), ({"event": "no.such", "data": {}}, None), ([], None)):
        status, body = await lab.publish(bad, api_key=key)
        answers.append(("/api/events", status, body))
    headers = {"Authorization": f"Bearer {lab.settings.api_key}"}
    async with aiohttp.ClientSession() as http:
        for path, auth in (("/healthz", {}), ("/api/presence/usr_amira", headers), ("/api/presence/usr_amira", {})):
            async with http.get(lab.url + path, headers=auth) as response:
                answers.append((path.replace("usr_amira", "{userId}"), response.status, await response.json()))
        async with http.get(lab.url + "/metrics") as response:
            assert response.status == 200 and response.content_type == "text/plain"
    assert [status for _, status, _ in answers] == [202, 401, 400, 400, 200, 200, 401]
    for path, status, body in answers:
        operation = next(iter(document["paths"][path].values()))
        ref = operation["responses"][str(status)]["content"]["application/json"]["schema"]["$ref"]
        conforms(document, ref.rsplit("/", 1)[1], body)
