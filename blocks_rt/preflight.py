"""What `serve` checks before it prints anything: each refusal is one line naming the variable (or flag) and the
fix, never a traceback. Packages, the listening address, keys and users, then Redis and PostgreSQL (with a
short bounded retry, for services started alongside the gateway)."""

from __future__ import annotations

import asyncio
import errno
import importlib
import socket
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from .auth import TokenVerifier
from .directory import JsonUserDirectory
from .oplog import redacted
from .settings import Settings

ATTEMPTS = 3  # for Redis and PostgreSQL: about two seconds in all, then refuse
RETRY_S = 0.5
CONNECT_TIMEOUT_S = 1


class StartupRefused(Exception):
    """The gateway cannot start as configured; the message says what to change."""




def check_packages(settings: Settings) -> None:
    """The packages the configured modes need (a trimmed install may lack them)."""
    needed = [("redis", "BLOCKS_RT_REDIS_URL")] if settings.redis_url else []
    needed += [("psycopg", "BLOCKS_RT_OUTBOX_DSN")] if settings.outbox_dsn else []
    for module, variable in needed:  # both come with blocks-rt: missing, the install was trimmed by hand
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            raise StartupRefused(f"{variable} is set but {module} is missing: pip install blocks-rt (it depends on "
                                 "it)") from None


def check_listen(host: str, port: int) -> None:
    """That `host:port` can be listened on (as aiohttp will: address reuse on), before anything is printed."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        why = f"not an address of this machine ({exc.strerror})"
        raise StartupRefused(f"BLOCKS_RT_HOST / --host {host!r}: {why}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise StartupRefused(_bind_refusal(host, port, exc)) from None


def _bind_refusal(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is in use: stop what listens there, or choose another port with "
                "BLOCKS_RT_PORT / --port")
    if exc.errno == errno.EACCES:
        return f"port {port} needs privileges: choose a port above 1023 with BLOCKS_RT_PORT / --port"
    return f"cannot listen on {host}:{port} ({exc.strerror}): check BLOCKS_RT_HOST / --host"


def check_keys(settings: Settings) -> None:
    """The token settings the gateway verifies with, and the user directory's file."""
    try:
        TokenVerifier(settings)
    except OSError as exc:  # a key file that cannot be read
        variable = "JWKS_FILE" if exc.filename == str(settings.jwt_jwks_file) else "PUBLIC_KEY_FILE"
        raise StartupRefused(f"BLOCKS_RT_JWT_{variable}={exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise StartupRefused(str(exc)) from None
    if not settings.users_file.is_file():
        raise StartupRefused(f"BLOCKS_RT_USERS_FILE={settings.users_file}: no such file "
                             "(unset it for the demo users, or point it at a JSON list of users)")
    try:
        JsonUserDirectory.from_file(settings.users_file)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise StartupRefused(f"BLOCKS_RT_USERS_FILE={settings.users_file}: not a list of users ({where}: "
                             f"{first['msg']}; {exc.error_count()} error(s))") from None
    except ValueError as exc:
        raise StartupRefused(f"BLOCKS_RT_USERS_FILE={settings.users_file}: {exc}") from None


async def check_services(settings: Settings) -> None:
    """Redis and PostgreSQL answer, each within a few attempts."""
    if settings.redis_url:
        await _retry(_ping_redis, settings.redis_url, "BLOCKS_RT_REDIS_URL", "Redis")
    if settings.outbox_dsn:
        await _retry(_ping_postgres, settings.outbox_dsn, "BLOCKS_RT_OUTBOX_DSN", "PostgreSQL")


async def _retry(ping: Callable[[str], Awaitable[None]], url: str, variable: str, what: str) -> None:
    for attempt in range(ATTEMPTS):
        try:
            await ping(url)
            return
        except Exception as exc:  # the client's error, whatever its kind: the message is what the user needs
            reason = _reason(exc)
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(RETRY_S)
    raise StartupRefused(f"{variable}={redacted(url)}: {what} does not answer ({reason}): start it, or fix the "
                         f"variable ({ATTEMPTS} attempts)")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def _ping_redis(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _ping_postgres(dsn: str) -> None:
    import psycopg

    connection = await psycopg.AsyncConnection.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S)
    await connection.close()
