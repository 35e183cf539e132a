"""The user directory behind a small interface; the default reads a JSON file of demo users."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from pydantic import TypeAdapter

from .rooms import User


class UserDirectory(Protocol):
    async def get(self, user_id: str) -> User | None: ...


_USERS = TypeAdapter(list[User])


class JsonUserDirectory:
    """Users from a JSON list of `{"id", "email", "isActive", "roles", "orgIds"}`, loaded once."""

    def __init__(self, users: list[User]) -> None:
        self._users = {u.id: u for u in users}

    @classmethod
    def from_file(cls, path: Path) -> JsonUserDirectory:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read users file {path}: {exc}") from exc
        return cls(_USERS.validate_python(raw))

    async def get(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    def all(self) -> list[User]:
        return list(self._users.values())
