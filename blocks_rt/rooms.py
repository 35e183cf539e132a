"""Room names and who may join them (design section 6), as pure functions over data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

ANNOUNCEMENTS = "announcements"
RoomKind = Literal["user", "property", "organization", "announcements"]


class User(BaseModel):
    """A user of the directory, as the gateway sees it."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=to_camel)

    id: str
    email: str
    is_active: bool
    roles: tuple[str, ...] = ()
    org_ids: tuple[str, ...] = ()

    def is_org_admin(self, org_id: str) -> bool:
        return "org_admin" in self.roles and org_id in self.org_ids


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def property_room(property_id: str) -> str:
    return f"property:{property_id}"


def organization_room(org_id: str) -> str:
    return f"organization:{org_id}"


def room_kind(room: str) -> RoomKind | None:
    """The kind of a stream/room name, or None for anything that is not one of ours."""
    if room == ANNOUNCEMENTS:
        return "announcements"
    kind, sep, ident = room.partition(":")
    if not sep or not ident or ":" in ident:
        return None
    if kind in ("user", "property", "organization"):
        return kind  # type: ignore[return-value]
    return None


def automatic_rooms(user: User) -> list[str]:
    """Rooms a socket joins on connect: its own user room and the announcements."""
    return [user_room(user.id), ANNOUNCEMENTS]


def may_read(user: User, room: str) -> bool:
    """Whether `user` may receive the events of `room` (join it, or resume its stream).

    | room                   | who                          |
    | user:{id}              | that user only               |
    | property:{id}          | any authenticated user       |
    | organization:{orgId}   | admins of that organization  |
    | announcements          | every authenticated user     |
    """
    kind = room_kind(room)
    ident = room.partition(":")[2]
    if kind == "user":
        return ident == user.id
    if kind == "organization":
        return user.is_org_admin(ident)
    return kind in ("property", "announcements")
