"""What `serve` prints in development mode: a token, a Python client and a `curl` publish, each one ready to be
pasted into a shell as it is (every argument shell-quoted, no line continuations inside quotes)."""

from __future__ import annotations

import json
import shlex
import sys

from .settings import NAMESPACE, Settings

DEV_USER = "usr_amira"
_SAMPLE = {"event": "notification.created", "data": {"userId": DEV_USER, "notification": {
    "id": "n1", "type": "system", "title": "Hello", "body": "from curl"}}}


def local_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


def python_snippet(url: str, token: str) -> str:
    """A client in this interpreter (the one that has python-socketio), printing what it receives or why it
    was refused. Double-quoted for the shell: the code holds no `$`, backquote, backslash or `!`."""
    code = f"""
import asyncio, socketio
async def main():
    client = socketio.AsyncClient()
    client.on('*', lambda event, *data: print(event, *data, flush=True), namespace='{NAMESPACE}')
    client.on('connect_error', lambda data: print('refused:', data, flush=True), namespace='{NAMESPACE}')
    try:
        await client.connect('{url}', namespaces=['{NAMESPACE}'], auth={{'token': '{token}'}})
    except socketio.exceptions.ConnectionError as error:
        raise SystemExit(f'not connected: {{error}}')
    await client.wait()
asyncio.run(main())"""
    return f'{shlex.quote(sys.executable)} -c "{code}"'


def curl_command(url: str, api_key: str) -> str:
    """One line: publish a notification to the dev user, print the HTTP status after the answer."""
    body = json.dumps(_SAMPLE, separators=(",", ":"))
    return shlex.join(["curl", "-s", "-w", " HTTP %{http_code}\\n", "-X", "POST", f"{url}/api/events",
                       "-H", f"Authorization: Bearer {api_key}", "-H", "Content-Type: application/json",
                       "-d", body])


def dev_banner(settings: Settings, token: str) -> str:
    url = local_url(settings)
    admin = ""
    if settings.admin:
        mode = "read-only" if settings.admin_read_only else "read-write"
        login = f"user {settings.admin_user}, password BLOCKS_RT_ADMIN_PASSWORD"
        admin = f"  Admin UI:  {url}/admin/  ({mode}; {login})\n\n"
    return f"""
  Gateway:   {url}  (Socket.IO namespace {NAMESPACE})
  Token for {DEV_USER} (1 h; `blocks-rt token USER_ID` in this folder mints more):
    {token}
  API key:   {settings.api_key}

  Connect from Python (Ctrl-C to stop):
{python_snippet(url, token)}

{admin}  Publish an event:
{curl_command(url, settings.api_key or "")}
"""
