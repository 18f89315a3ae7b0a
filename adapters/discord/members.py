"""Who acts in Discord, as the rules see them, and whom the bot's messages may ping: no one.

Shared by the adapter (``adapter.py``) and its commands (``commands.py``), which
otherwise know nothing of each other's modules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import discord

from ..base import Actor

__all__ = ["NO_PINGS", "Member", "member_of"]

NO_PINGS = discord.AllowedMentions.none()
"""Sent with every message: no @everyone, @here, role, user or reply ping, whatever the text says."""


@dataclass(frozen=True)
class Member(Actor):
    """A Discord user where they acted: the guild (None in a DM), whether they manage it, their role ids."""

    guild_id: int | None = None
    manager: bool = False
    roles: tuple[str, ...] = ()


def member_of(user: discord.abc.User, permissions: discord.Permissions | None, guild_id: int | None,
              manager_roles: Iterable[str] = ()) -> Member:
    """``user`` as the rules see them: a manager has Manage Server, Administrator or one of ``manager_roles``.

    In a direct message the user manages their own conversation.
    """
    if guild_id is None:
        return Member(str(user.id), None, manager=True)
    roles = tuple(str(r.id) for r in getattr(user, "roles", ()) if not r.is_default())
    perms = permissions or discord.Permissions.none()
    managers = set(manager_roles)
    manager = perms.manage_guild or perms.administrator or any(r in managers for r in roles)
    return Member(str(user.id), guild_id, manager=manager, roles=roles)
