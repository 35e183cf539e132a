"""The one settings object, read from the environment at the edge (`Settings.from_env`).

Every field is a setting: its variable is `BLOCKS_RT_` + the field name in capitals, its type (with the
constraints in `Annotated`) says how the variable's text is read and checked. Adding a setting is adding a
field; nothing else maps names.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError

DATA_DIR = Path(__file__).resolve().parent / "reference" / "data"  # demo data ships inside the package
NAMESPACE = "/mobile"
ENV_PREFIX = "BLOCKS_RT_"
_SECRET_WORDS = ("secret", "password", "api_key")  # their values never appear in an error message


def _csv(value: Any) -> Any:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value


def _no_wildcard(origins: tuple[str, ...]) -> tuple[str, ...]:
    if "*" in origins:
        raise ValueError("list the allowed origins; '*' is not allowed")
    return origins


Csv = Annotated[tuple[str, ...], BeforeValidator(_csv)]
Origins = Annotated[Csv, AfterValidator(_no_wildcard)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # per second; 0 = off
Count = Annotated[int, Field(ge=0)]
AtLeastOne = Annotated[int, Field(ge=1)]
Port = Annotated[int, Field(ge=0, le=65535)]  # 0: any free port (labs, tests)


class SettingsError(ValueError):
    """The environment holds a value the gateway refuses to start with; the message names the variable."""


def env_var(name: str) -> str:
    """The environment variable of the setting `name`."""
    return ENV_PREFIX + name.upper()


@dataclass(frozen=True)
class Settings:
    """Everything an operator can set; defaults are the embedded, single-process mode."""

    jwt_secret: str | None = None
    jwt_algorithms: Csv = ("HS256",)
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: Seconds = 5.0
    api_key: str | None = None
    data_dir: Path = DATA_DIR
    users_file: Path = DATA_DIR / "users.json"  # data_dir's users.json when only BLOCKS_RT_DATA_DIR is set
    cors_origins: Origins = ()
    redis_url: str | None = None
    redis_prefix: str = "blocks-rt"
    redis_cluster: bool = False  # BLOCKS_RT_REDIS_URL names one seed node of a Redis Cluster
    fanout: Literal["rooms", "broadcast"] = "rooms"  # broadcast: one channel for all (benchmark baseline)
    host: str = "127.0.0.1"
    port: Port = 3000
    event_rate: Rate = 10.0
    log_max_events: AtLeastOne = 1000
    log_max_age_s: PositiveSeconds = 24 * 3600
    max_sockets_per_user: AtLeastOne = 10
    max_subscriptions_per_socket: Count = 100
    client_budget_per_s: Rate = 20.0
    client_budget_burst: Count = 40
    client_abuse_strikes: AtLeastOne = 50
    token_refresh_grace_s: Seconds = 30.0
    connect_timeout_s: PositiveSeconds = 45.0
    max_connect_attempts: AtLeastOne = 5
    ping_interval_s: PositiveSeconds = 25.0
    ping_timeout_s: PositiveSeconds = 20.0
    max_message_bytes: AtLeastOne = 64 * 1024
    max_socket_buffer_bytes: AtLeastOne = 1024 * 1024  # past it a socket is ended as a slow consumer
    max_publish_bytes: AtLeastOne = 1024 * 1024
    max_publish_batch: AtLeastOne = 1000
    max_token_bytes: AtLeastOne = 8 * 1024
    compression: bool = False
    access_log: bool = False
    uvloop: bool = True
    idempotency_ttl_s: PositiveSeconds = 24 * 3600  # how long a publish's Idempotency-Key is remembered
    idempotency_lease_s: PositiveSeconds = 10.0  # a claimed key whose node died is free again after this
    outbox_dsn: str | None = None  # PostgreSQL outbox consumer on when set
    outbox_poll_s: PositiveSeconds = 1.0  # polling fallback when no NOTIFY arrives
    outbox_batch: AtLeastOne = 500
    outbox_retention_s: PositiveSeconds = 7 * 24 * 3600  # published rows are pruned after this
    admin: bool = False  # the Socket.IO Admin UI at /admin/ (needs admin_password)
    admin_user: str = "admin"
    admin_password: str | None = None
    admin_read_only: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"  # json: one object per line (oplog.py)
    auth_failure_delay_s: Seconds = 1.0  # an address's wait after a wrong admin password or API key, doubling; 0: off
    auth_lockout_after: AtLeastOne = 5  # wrong ones in a row, then the address is refused for auth_lockout_s
    auth_lockout_s: Seconds = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None) -> Settings:
        """Read the `BLOCKS_RT_*` variables; unset or empty ones keep their defaults. `flags` (field name →
        text) are command-line options: they override the variable and are checked the same way.

        SettingsError names every variable (or `--flag`) whose value is refused, and why.
        """
        env = os.environ if env is None else env
        given = {f.name: env[env_var(f.name)] for f in fields(cls) if env.get(env_var(f.name))}
        given |= flags or {}
        if "data_dir" in given:
            given.setdefault("users_file", str(Path(given["data_dir"]) / "users.json"))
        try:
            return _adapter().validate_python(given)
        except ValidationError as exc:
            errors = (_explain(error, given, flags or {}) for error in exc.errors())
            raise SettingsError("; ".join(errors)) from None

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and notebooks)."""
        return replace(self, **changes)  # type: ignore[arg-type]


@cache
def _adapter() -> TypeAdapter[Settings]:
    return TypeAdapter(Settings)


def unknown_variables(env: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each `BLOCKS_RT_*` variable that is no setting (a typo is otherwise silently ignored)."""
    env = os.environ if env is None else env
    known = [f.name.upper() for f in fields(Settings)]
    warnings = []
    for name in sorted(n for n in env if n.startswith(ENV_PREFIX) and n.removeprefix(ENV_PREFIX) not in known):
        closest = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), known, n=1)  # the prefix is no clue
        hint = f"did you mean {ENV_PREFIX}{closest[0]}?" if closest else "see the configuration table in the README"
        warnings.append(f"{name} is not a blocks-rt setting and is ignored: {hint}")
    return warnings


def _explain(error: Mapping[str, Any], given: Mapping[str, str], flags: Mapping[str, str]) -> str:
    name = str(error["loc"][0]) if error.get("loc") else ""
    why = str(error["msg"]).removeprefix("Value error, ")
    if name not in given:  # a derived value (users_file from data_dir) or one of several fields
        return f"{env_var(name) if name else 'settings'}: {why}"
    if name in flags:
        return f"--{name.replace('_', '-')} {given[name]}: {why}"
    shown = "(hidden)" if any(word in name for word in _SECRET_WORDS) else repr(given[name])
    return f"{env_var(name)}={shown}: {why}"
