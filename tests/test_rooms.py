"""Room names and who may join them (rooms.py, design section 6): pure functions, no server."""

from __future__ import annotations

import pytest

from blocks_rt.rooms import ANNOUNCEMENTS, User, automatic_rooms, may_read, room_kind

AMIRA = User(id="usr_amira", email="amira@example.com", is_active=True, roles=("investor",))
OLIVIA = User(id="usr_olivia", email="olivia@example.com", is_active=True, roles=("investor", "org_admin"),
              org_ids=("org_marina",))
# Listed in an organization without being its admin: membership alone grants nothing.
STAFF = User(id="usr_staff", email="staff@example.com", is_active=True, roles=("investor",),
             org_ids=("org_marina",))


@pytest.mark.parametrize(("room", "kind"), [
    ("user:usr_amira", "user"), ("property:prop_palm", "property"),
    ("organization:org_marina", "organization"),
    ("announcements", "announcements"),
    ("user:", None), ("user", None), ("user:usr_amira:x", None), ("property:user:usr_ben", None),
    ("users:usr_amira", None), ("announcements:x", None), ("Announcements", None), ("", None), (":", None),
    ("room:x", None), ("USER:usr_amira", None),
])
def test_room_kind(room: str, kind: str | None) -> None:
    assert room_kind(room) == kind


@pytest.mark.parametrize(("user", "room", "allowed"), [
    (AMIRA, "user:usr_amira", True),
    (AMIRA, "user:usr_ben", False),
    (AMIRA, "user:usr_amira:x", False),
    (AMIRA, "property:prop_palm", True),
    (AMIRA, "property:anything-at-all", True),
    (AMIRA, "property:", False),
    (AMIRA, "property:user:usr_ben", False),
    (AMIRA, ANNOUNCEMENTS, True),
    (AMIRA, "organization:org_marina", False),
    (STAFF, "organization:org_marina", False),
    (OLIVIA, "organization:org_marina", True),
    (OLIVIA, "organization:org_desert", False),
    (OLIVIA, "user:usr_amira", False),
    (OLIVIA, "user:usr_olivia", True),
    (AMIRA, "admin:all", False),
    (AMIRA, "", False),
])
def test_may_read_follows_the_permission_table(user: User, room: str, allowed: bool) -> None:
    assert may_read(user, room) is allowed


def test_a_socket_joins_its_own_room_and_the_announcements() -> None:
    assert automatic_rooms(AMIRA) == ["user:usr_amira", ANNOUNCEMENTS]
    assert all(may_read(AMIRA, room) for room in automatic_rooms(AMIRA))


def test_users_read_the_directorys_camel_case() -> None:
    user = User.model_validate({"id": "usr_o", "email": "o@example.com", "isActive": False,
                                "roles": ["org_admin"], "orgIds": ["org_x"]})
    assert (user.is_active, user.is_org_admin("org_x"), user.is_org_admin("org_y")) == (False, True, False)
