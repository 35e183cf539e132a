"""Settings (settings.py): every variable's default, every kind of bad value, the refusals at startup. No server."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from blocks_rt.app import create_app
from blocks_rt.cli import main
from blocks_rt.settings import DATA_DIR, Settings, SettingsError, env_var, unknown_variables
from blocks_rt.testing.lab import LAB_API_KEY, LAB_SECRET

README = Path(__file__).resolve().parent.parent / "README.md"

# The README's configuration table, written out as values: what an operator gets when a variable is unset.
DEFAULTS = {
    "BLOCKS_RT_JWT_SECRET": None, "BLOCKS_RT_JWT_ALGORITHMS": ("HS256",), "BLOCKS_RT_JWT_PUBLIC_KEY_FILE": None,
    "BLOCKS_RT_JWT_JWKS_FILE": None, "BLOCKS_RT_JWT_ISSUER": None, "BLOCKS_RT_JWT_AUDIENCE": None,
    "BLOCKS_RT_JWT_LEEWAY_S": 5, "BLOCKS_RT_API_KEY": None,
    "BLOCKS_RT_USERS_FILE": DATA_DIR / "users.json", "BLOCKS_RT_DATA_DIR": DATA_DIR,
    "BLOCKS_RT_CORS_ORIGINS": (), "BLOCKS_RT_REDIS_URL": None, "BLOCKS_RT_REDIS_PREFIX": "blocks-rt",
    "BLOCKS_RT_HOST": "127.0.0.1", "BLOCKS_RT_PORT": 3000, "BLOCKS_RT_EVENT_RATE": 10,
    "BLOCKS_RT_LOG_MAX_EVENTS": 1000, "BLOCKS_RT_LOG_MAX_AGE_S": 86400, "BLOCKS_RT_MAX_SOCKETS_PER_USER": 10,
    "BLOCKS_RT_MAX_SUBSCRIPTIONS_PER_SOCKET": 100, "BLOCKS_RT_CLIENT_BUDGET_PER_S": 20,
    "BLOCKS_RT_CLIENT_BUDGET_BURST": 40, "BLOCKS_RT_CLIENT_ABUSE_STRIKES": 50,
    "BLOCKS_RT_TOKEN_REFRESH_GRACE_S": 30, "BLOCKS_RT_CONNECT_TIMEOUT_S": 45,
    "BLOCKS_RT_MAX_CONNECT_ATTEMPTS": 5, "BLOCKS_RT_PING_INTERVAL_S": 25, "BLOCKS_RT_PING_TIMEOUT_S": 20,
    "BLOCKS_RT_MAX_MESSAGE_BYTES": 65536, "BLOCKS_RT_MAX_PUBLISH_BYTES": 1048576,
    "BLOCKS_RT_MAX_PUBLISH_BATCH": 1000, "BLOCKS_RT_MAX_TOKEN_BYTES": 8192, "BLOCKS_RT_COMPRESSION": False,
    "BLOCKS_RT_ACCESS_LOG": False, "BLOCKS_RT_UVLOOP": True, "BLOCKS_RT_FANOUT": "rooms",
    "BLOCKS_RT_REDIS_CLUSTER": False, "BLOCKS_RT_MAX_SOCKET_BUFFER_BYTES": 1048576,
    "BLOCKS_RT_IDEMPOTENCY_TTL_S": 86400, "BLOCKS_RT_IDEMPOTENCY_LEASE_S": 10, "BLOCKS_RT_OUTBOX_DSN": None,
    "BLOCKS_RT_OUTBOX_POLL_S": 1, "BLOCKS_RT_OUTBOX_BATCH": 500, "BLOCKS_RT_OUTBOX_RETENTION_S": 604800,
    "BLOCKS_RT_ADMIN": False, "BLOCKS_RT_ADMIN_USER": "admin", "BLOCKS_RT_ADMIN_PASSWORD": None,
    "BLOCKS_RT_ADMIN_READ_ONLY": True, "BLOCKS_RT_LOG_LEVEL": "info", "BLOCKS_RT_LOG_FORMAT": "text",
    "BLOCKS_RT_AUTH_FAILURE_DELAY_S": 1, "BLOCKS_RT_AUTH_LOCKOUT_AFTER": 5, "BLOCKS_RT_AUTH_LOCKOUT_S": 300,
}


def readme_variables() -> set[str]:
    """Every variable named in the README's configuration table (`_BURST`-style shorthands expanded)."""
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in (line for line in table.splitlines() if line.startswith("| `")):
        cell = row.split("|")[1]
        full = re.findall(r"`(BLOCKS_RT_\w+)`", cell)
        names |= set(full)
        names |= {full[0].rsplit("_", 2)[0] + short for short in re.findall(r"`(_[A-Z_]+)`", cell)}
    return names


def test_every_setting_has_its_variable_in_the_readme_and_no_other_is_documented() -> None:
    assert readme_variables() == {env_var(f.name) for f in fields(Settings)}


def test_with_nothing_set_every_variable_has_its_documented_default() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    read = {env_var(f.name): getattr(settings, f.name) for f in fields(Settings)}
    assert read == DEFAULTS  # a new setting needs its documented default here too


def test_each_kind_of_value_is_read_from_its_variable() -> None:
    env = {"BLOCKS_RT_PORT": "8080", "BLOCKS_RT_EVENT_RATE": "2.5", "BLOCKS_RT_CORS_ORIGINS": " https://a.example, ,"
           "https://b.example ", "BLOCKS_RT_JWT_ALGORITHMS": "RS256,ES256", "BLOCKS_RT_COMPRESSION": "TRUE",
           "BLOCKS_RT_UVLOOP": "off", "BLOCKS_RT_FANOUT": "broadcast", "BLOCKS_RT_REDIS_URL": "redis://127.0.0.1:1",
           "BLOCKS_RT_JWT_PUBLIC_KEY_FILE": "/keys/rs.pem", "UNRELATED": "x", "BLOCKS_RT_UNKNOWN": "ignored"}
    settings = Settings.from_env(env)
    assert (settings.port, settings.event_rate) == (8080, 2.5)
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.jwt_algorithms == ("RS256", "ES256")
    assert (settings.compression, settings.uvloop, settings.fanout) == (True, False, "broadcast")
    assert settings.redis_url == "redis://127.0.0.1:1" and settings.jwt_public_key_file == Path("/keys/rs.pem")


def test_an_empty_variable_keeps_the_default() -> None:
    assert Settings.from_env({"BLOCKS_RT_PORT": "", "BLOCKS_RT_HOST": "", "BLOCKS_RT_CORS_ORIGINS": ""}) == Settings()


def test_the_data_dir_brings_its_users_file_unless_that_is_set_too() -> None:
    assert Settings.from_env({"BLOCKS_RT_DATA_DIR": "/srv/demo"}).users_file == Path("/srv/demo/users.json")
    both = Settings.from_env({"BLOCKS_RT_DATA_DIR": "/srv/demo", "BLOCKS_RT_USERS_FILE": "/etc/users.json"})
    assert (both.data_dir, both.users_file) == (Path("/srv/demo"), Path("/etc/users.json"))


@pytest.mark.parametrize(("variable", "value", "why"), [
    ("PORT", "http", "valid integer"),
    ("PORT", "3000.5", "valid integer"),
    ("PORT", "70000", "less than or equal to 65535"),
    ("PORT", "-1", "greater than or equal to 0"),
    ("EVENT_RATE", "fast", "valid number"),
    ("EVENT_RATE", "-10", "greater than or equal to 0"),
    ("LOG_MAX_AGE_S", "inf", "finite number"),
    ("PING_INTERVAL_S", "0", "greater than 0"),
    ("LOG_MAX_EVENTS", "0", "greater than or equal to 1"),
    ("MAX_PUBLISH_BATCH", "1e3", "valid integer"),
    ("COMPRESSION", "maybe", "valid boolean"),
    ("FANOUT", "cluster", "'rooms' or 'broadcast'"),
    ("CORS_ORIGINS", "https://a.example,*", "'*' is not allowed"),
])
def test_a_bad_value_is_refused_naming_the_variable_the_value_and_why(variable: str, value: str, why: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({f"BLOCKS_RT_{variable}": value})
    assert str(refused.value).startswith(f"BLOCKS_RT_{variable}={value!r}: ")
    assert why in str(refused.value)


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"BLOCKS_RT_PORT": "x", "BLOCKS_RT_EVENT_RATE": "-1", "BLOCKS_RT_HOST": "0.0.0.0"})
    assert [part.split("=")[0] for part in str(refused.value).split("; ")] == \
        ["BLOCKS_RT_PORT", "BLOCKS_RT_EVENT_RATE"]


def test_a_refused_secret_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"BLOCKS_RT_JWT_SECRET": "s3cr3t-value", "BLOCKS_RT_PORT": "x"})
    assert "s3cr3t" not in str(refused.value)


def test_command_line_flags_override_their_variable_and_are_checked_the_same_way() -> None:
    env = {"BLOCKS_RT_PORT": "3001", "BLOCKS_RT_HOST": "127.0.0.2"}
    settings = Settings.from_env(env, flags={"port": "4000"})
    assert (settings.host, settings.port) == ("127.0.0.2", 4000)
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env, flags={"port": "99999"})
    assert str(refused.value) == "--port 99999: Input should be less than or equal to 65535"


def test_an_unknown_variable_gets_a_warning_with_the_closest_setting() -> None:
    env = {"BLOCKS_RT_PROT": "1", "BLOCKS_RT_LOGLEVEL": "debug", "BLOCKS_RT_XYZZY_QUUX": "1", "BLOCKS_RT_PORT": "1",
           "OTHER_PROT": "1"}
    assert unknown_variables(env) == [
        "BLOCKS_RT_LOGLEVEL is not a blocks-rt setting and is ignored: did you mean BLOCKS_RT_LOG_LEVEL?",
        "BLOCKS_RT_PROT is not a blocks-rt setting and is ignored: did you mean BLOCKS_RT_PORT?",
        "BLOCKS_RT_XYZZY_QUUX is not a blocks-rt setting and is ignored: see the configuration table in the README"]


def test_serve_refuses_to_start_with_a_bad_variable_and_names_it(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BLOCKS_RT_MAX_MESSAGE_BYTES", "64k")
    with pytest.raises(SystemExit) as exited:
        main(["serve"])
    assert exited.value.code == 2
    assert "BLOCKS_RT_MAX_MESSAGE_BYTES='64k': Input should be a valid integer" in capsys.readouterr().err


@pytest.mark.parametrize(("changes", "complaint"), [
    ({"jwt_secret": "too-short"}, "BLOCKS_RT_JWT_SECRET must be at least 32 bytes"),
    ({"api_key": LAB_SECRET}, "BLOCKS_RT_JWT_SECRET and BLOCKS_RT_API_KEY must differ"),
    ({"jwt_algorithms": ("none",)}, "BLOCKS_RT_JWT_ALGORITHMS"),
    ({"jwt_algorithms": ("RS256",)}, "BLOCKS_RT_JWT_PUBLIC_KEY_FILE"),
])
def test_the_app_refuses_settings_it_cannot_run_safely_with(changes: dict[str, object], complaint: str) -> None:
    settings = Settings(jwt_secret=LAB_SECRET, api_key=LAB_API_KEY).with_(**changes)
    with pytest.raises(ValueError, match=complaint):
        create_app(settings)
