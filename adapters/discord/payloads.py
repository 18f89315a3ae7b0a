"""A gate in front of discord.py's gateway parsers: payloads not shaped as Discord's are dropped.

discord.py trusts the gateway: it reads ids with ``int(...)`` (so ``True`` becomes 1),
skips a field it cannot parse (a message without its author), or raises out of its
parser, which ends the gateway connection (and reconnects). For the events heedful
handles, ``guard`` checks the fields heedful and discord.py read first (ids are
snowflakes, texts strings, objects objects) and drops, with a log line, what fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["GUARDED", "guard", "well_formed"]

log = logging.getLogger(__name__)


def _snowflake(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value < 1 << 64
    return isinstance(value, str) and value.isdigit() and len(value) <= 20


def _optional(data: dict[str, Any], key: str, check: Callable[[Any], bool]) -> bool:
    return data.get(key) is None or check(data[key])


def _user(value: object) -> bool:
    return isinstance(value, dict) and _snowflake(value.get("id")) and isinstance(value.get("username", ""), str)


def _message(data: object, depth: int = 0) -> bool:
    if not isinstance(data, dict):
        return False
    if depth > 2:
        return True  # deeper replies-to-replies are not read
    reference = data.get("message_reference")
    return (_snowflake(data.get("id")) and _snowflake(data.get("channel_id")) and _user(data.get("author"))
            and isinstance(data.get("content", ""), str)
            and isinstance(data.get("type", 0), int) and not isinstance(data.get("type", 0), bool)
            and _optional(data, "guild_id", _snowflake) and _optional(data, "webhook_id", _snowflake)
            and _optional(data, "member", lambda m: isinstance(m, dict))
            and isinstance(data.get("mentions", []), list) and all(_user(u) for u in data.get("mentions", []))
            and isinstance(data.get("mention_roles", []), list)
            and (reference is None or (isinstance(reference, dict)
                                       and _optional(reference, "message_id", _snowflake)
                                       and _optional(reference, "channel_id", _snowflake)))
            and _optional(data, "referenced_message", lambda m: _message(m, depth + 1)))


def _reaction(data: object) -> bool:
    return (isinstance(data, dict) and all(_snowflake(data.get(k)) for k in ("user_id", "channel_id", "message_id"))
            and isinstance(data.get("emoji"), dict) and _optional(data["emoji"], "id", _snowflake)
            and _optional(data["emoji"], "name", lambda n: isinstance(n, str))
            and _optional(data, "guild_id", _snowflake) and _optional(data, "message_author_id", _snowflake)
            and _optional(data, "member", lambda m: isinstance(m, dict) and _user(m.get("user"))))


def _deletion(data: object) -> bool:
    return (isinstance(data, dict) and _snowflake(data.get("id")) and _snowflake(data.get("channel_id"))
            and _optional(data, "guild_id", _snowflake))


def _interaction(data: object) -> bool:
    if not isinstance(data, dict) or not _snowflake(data.get("id")) or not isinstance(data.get("token"), str):
        return False
    kind, inner = data.get("type"), data.get("data")
    if not isinstance(kind, int) or isinstance(kind, bool) or kind not in (1, 2, 3, 4, 5):
        return False
    if kind != 1 and not isinstance(inner, dict):
        return False
    if kind in (3, 5) and not isinstance(inner.get("custom_id"), str):  # type: ignore[union-attr]
        return False
    member, user = data.get("member"), data.get("user")
    return (_optional(data, "channel_id", _snowflake) and _optional(data, "guild_id", _snowflake)
            and (_user(user) or (isinstance(member, dict) and _user(member.get("user")))))


GUARDED: dict[str, Callable[[Any], bool]] = {
    "MESSAGE_CREATE": _message,
    "MESSAGE_REACTION_ADD": _reaction,
    "MESSAGE_DELETE": _deletion,
    "INTERACTION_CREATE": _interaction,
}


def well_formed(event: str, data: object) -> bool:
    """Whether a gateway dispatch of ``event`` has the shape Discord sends (True for events not guarded)."""
    check = GUARDED.get(event)
    return check is None or check(data)


def guard(parsers: dict[str, Callable[[Any], None]]) -> None:
    """Put the check in front of the parsers of the ``GUARDED`` events (discord.py's
    ``ConnectionState.parsers``, which the gateway dispatches through)."""
    for event in GUARDED:
        parse = parsers.get(event)
        if parse is None or getattr(parse, "__heedful_guard__", False):
            continue

        def guarded(data: Any, event: str = event, parse: Callable[[Any], None] = parse) -> None:
            if not well_formed(event, data):
                log.warning("dropped a malformed %s from the Discord gateway", event)
                return
            parse(data)

        guarded.__heedful_guard__ = True  # type: ignore[attr-defined]
        parsers[event] = guarded
