"""The one settings object, read from the environment at the edge (`Settings.from_env`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "reference" / "data"  # demo data ships inside the package
NAMESPACE = "/mobile"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything an operator can set; defaults are the embedded, single-process mode."""

    jwt_secret: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = 5.0
    api_key: str | None = None
    data_dir: Path = DATA_DIR
    users_file: Path = DATA_DIR / "users.json"
    cors_origins: tuple[str, ...] = ()
    redis_url: str | None = None
    redis_prefix: str = "blocks-rt"
    fanout: str = "rooms"
    host: str = "127.0.0.1"
    port: int = 3000
    event_rate: float = 10.0
    log_max_events: int = 1000
    log_max_age_s: float = 24 * 3600
    max_sockets_per_user: int = 10
    max_subscriptions_per_socket: int = 100
    client_budget_per_s: float = 20.0
    client_budget_burst: int = 40
    client_abuse_strikes: int = 50
    token_refresh_grace_s: float = 30.0
    connect_timeout_s: float = 45.0
    max_connect_attempts: int = 5
    ping_interval_s: float = 25.0
    ping_timeout_s: float = 20.0
    max_message_bytes: int = 64 * 1024
    max_publish_bytes: int = 1024 * 1024
    max_publish_batch: int = 1000
    max_token_bytes: int = 8 * 1024
    compression: bool = False
    access_log: bool = False
    uvloop: bool = True
    admin: bool = False
    admin_user: str = "admin"
    admin_password: str | None = None
    admin_read_only: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read `BLOCKS_RT_*` variables; unset ones keep their defaults."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(f"BLOCKS_RT_{name}")

        values: dict[str, object] = {}
        text = {"JWT_SECRET": "jwt_secret", "JWT_ISSUER": "jwt_issuer", "JWT_AUDIENCE": "jwt_audience",
                "API_KEY": "api_key", "REDIS_URL": "redis_url", "REDIS_PREFIX": "redis_prefix", "HOST": "host",
                "FANOUT": "fanout", "ADMIN_USER": "admin_user", "ADMIN_PASSWORD": "admin_password"}
        for name, attr in text.items():
            if get(name):
                values[attr] = get(name)
        paths = {"USERS_FILE": "users_file", "DATA_DIR": "data_dir", "JWT_PUBLIC_KEY_FILE": "jwt_public_key_file",
                 "JWT_JWKS_FILE": "jwt_jwks_file"}
        for name, attr in paths.items():
            if get(name):
                values[attr] = Path(str(get(name)))
        if "data_dir" in values and "users_file" not in values:
            values["users_file"] = Path(str(values["data_dir"])) / "users.json"
        if get("JWT_ALGORITHMS"):
            values["jwt_algorithms"] = _csv(str(get("JWT_ALGORITHMS")))
        if get("CORS_ORIGINS") is not None:
            values["cors_origins"] = _csv(str(get("CORS_ORIGINS")))
        numbers = {"PORT": ("port", int), "EVENT_RATE": ("event_rate", float),
                   "JWT_LEEWAY_S": ("jwt_leeway_s", float),
                   "LOG_MAX_EVENTS": ("log_max_events", int), "LOG_MAX_AGE_S": ("log_max_age_s", float),
                   "MAX_SOCKETS_PER_USER": ("max_sockets_per_user", int),
                   "MAX_SUBSCRIPTIONS_PER_SOCKET": ("max_subscriptions_per_socket", int),
                   "CLIENT_BUDGET_PER_S": ("client_budget_per_s", float),
                   "CLIENT_BUDGET_BURST": ("client_budget_burst", int),
                   "CLIENT_ABUSE_STRIKES": ("client_abuse_strikes", int),
                   "TOKEN_REFRESH_GRACE_S": ("token_refresh_grace_s", float),
                   "CONNECT_TIMEOUT_S": ("connect_timeout_s", float),
                   "MAX_CONNECT_ATTEMPTS": ("max_connect_attempts", int),
                   "PING_INTERVAL_S": ("ping_interval_s", float), "PING_TIMEOUT_S": ("ping_timeout_s", float),
                   "MAX_MESSAGE_BYTES": ("max_message_bytes", int),
                   "MAX_PUBLISH_BYTES": ("max_publish_bytes", int),
                   "MAX_PUBLISH_BATCH": ("max_publish_batch", int),
                   "MAX_TOKEN_BYTES": ("max_token_bytes", int)}
        for name, (attr, kind) in numbers.items():
            raw = get(name)
            if raw:
                try:
                    values[attr] = kind(raw)
                except ValueError as exc:
                    raise ValueError(f"BLOCKS_RT_{name}={raw!r} is not a valid {kind.__name__}") from exc
        for name, attr in (("COMPRESSION", "compression"), ("ACCESS_LOG", "access_log"), ("UVLOOP", "uvloop"),
                           ("ADMIN", "admin"), ("ADMIN_READ_ONLY", "admin_read_only")):
            if get(name):
                values[attr] = _bool(str(get(name)))
        if values.get("fanout", "rooms") not in ("rooms", "broadcast"):
            raise ValueError("BLOCKS_RT_FANOUT must be 'rooms' (default) or 'broadcast' (benchmark baseline)")
        if "*" in values.get("cors_origins", ()):  # type: ignore[operator]
            raise ValueError("BLOCKS_RT_CORS_ORIGINS must list origins; '*' with credentials is not allowed")
        return cls(**values)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and notebooks)."""
        return replace(self, **changes)  # type: ignore[arg-type]
