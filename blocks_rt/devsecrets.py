"""Development secrets kept in the working folder, so that `serve`, `token` and `demo` agree on them.

With no `BLOCKS_RT_JWT_SECRET` or `BLOCKS_RT_API_KEY` set, `serve` and `demo` fill the missing ones from
`.blocks-rt-dev.env` (made on first use, readable by its owner only) and say so; `token` reads the same file,
so the token it mints is one the running gateway accepts. A variable that is set always wins.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .settings import Settings, env_var

DEV_FILE = ".blocks-rt-dev.env"
_NAMES = ("jwt_secret", "api_key")


def _read(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def _create(path: Path) -> dict[str, str]:
    """Make the file, or read the one another process (a second node started at once) made first."""
    values = {env_var("jwt_secret"): secrets.token_urlsafe(48), env_var("api_key"): secrets.token_urlsafe(32)}
    text = "# blocks-rt development secrets (blocks-rt serve made them); never use them in production\n"
    text += "".join(f"{name}={value}\n" for name, value in values.items())
    # Written whole to a file readable by its owner only, then linked in place in one step: no moment when
    # another user could read it, nor another node read it half-written; the first link wins.
    draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.link(draft, path)
    except FileExistsError:
        return _read(path)
    finally:
        draft.unlink()
    return values


def with_dev_secrets(settings: Settings, folder: Path, *, create: bool = True) -> tuple[Settings, str | None]:
    """`settings` with a missing JWT secret or API key taken from the folder's dev file (made if `create`), and
    the one line to tell the user (None when both were configured, or there is no file and `create` is off)."""
    missing = [name for name in _NAMES if not getattr(settings, name)]
    if not missing:
        return settings, None
    path = folder / DEV_FILE
    if path.exists():
        values, verb = _read(path), "using the"
    elif create:
        values, verb = _create(path), "created"
    else:
        return settings, None
    changes = {name: values[env_var(name)] for name in missing if values.get(env_var(name))}
    names = ", ".join(env_var(name) for name in changes)
    note = f"WARNING: {names} not set: {verb} development values in {path} (never in production)"
    return settings.with_(**changes), note if changes else None
