"""`blocks-rt spec`: every artifact generated from the models, written to spec/ (and the events page to docs/).

The Socket.IO side comes from contract.py (AsyncAPI, JSON Schemas, TypeScript), the HTTP side from openapi.py, the
page of every event from eventdocs.py; the drift tests (tests/test_contract.py) compare what is committed with these.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .contract import asyncapi_yaml, json_schemas, typescript
from .eventdocs import events_markdown
from .openapi import openapi_yaml


def schema_files() -> dict[str, str]:
    """Path under spec/schemas/ → file content."""
    return {path: json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            for path, schema in json_schemas().items()}


def artifacts() -> dict[str, str]:
    """Path under spec/ → file content, for everything `blocks-rt spec all` writes."""
    files = {"asyncapi.yaml": asyncapi_yaml(), "openapi.yaml": openapi_yaml(), "blocks-rt.d.ts": typescript()}
    return files | {f"schemas/{path}": text for path, text in schema_files().items()}


def write(files: Mapping[str, str], directory: Path) -> None:
    for path, text in files.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def add_parser(subparsers: Any) -> Any:
    """The `spec` command and its kinds (returned: other modules add theirs)."""
    p = subparsers.add_parser(
        "spec", help="generate the contract (AsyncAPI, OpenAPI, JSON Schema, TypeScript, the events page)",
        description="Write the contract generated from the models: the Socket.IO side (AsyncAPI 3.0, JSON Schemas, "
                    "TypeScript), the HTTP side (OpenAPI 3.1), the page of every event (docs/events.md), or the "
                    "spec notebooks as a site. Reads no environment variable.")
    kinds = p.add_subparsers(dest="kind", required=True)
    kinds.add_parser("asyncapi", help="AsyncAPI 3.0 YAML (standard output or -o FILE)").add_argument("-o", "--output")
    kinds.add_parser("typescript", help="socket.io-client typings (standard output or -o FILE)").add_argument(
        "-o", "--output")
    kinds.add_parser("openapi", help="OpenAPI 3.1 YAML of the HTTP endpoints (standard output or -o FILE)"
                     ).add_argument("-o", "--output")
    kinds.add_parser("events", help="the page of every wire and domain event (-o FILE, default docs/events.md)"
                     ).add_argument("-o", "--output", default="docs/events.md")
    kinds.add_parser("jsonschema", help="one JSON Schema per event, message and ack into -o DIR").add_argument(
        "-o", "--output", default="spec/schemas")
    kinds.add_parser("all", help="everything into -o DIR (spec/ of this repository)").add_argument(
        "-o", "--output", default="spec")
    return kinds


def run(args: argparse.Namespace) -> None:
    if args.kind in ("jsonschema", "all"):
        files = schema_files() if args.kind == "jsonschema" else artifacts()
        write(files, Path(args.output))
        print(f"wrote {len(files)} files under {args.output}", file=sys.stderr)
        return
    generate = {"asyncapi": asyncapi_yaml, "typescript": typescript, "openapi": openapi_yaml, "events": events_markdown}
    text = generate[args.kind]()
    if args.output:
        write({Path(args.output).name: text}, Path(args.output).parent)
    else:
        sys.stdout.write(text)
