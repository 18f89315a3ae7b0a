"""Fuzzing every platform event and interaction handler: hypothesis strategies and a rig to run them.

``cases()`` draws one ``Case``: a platform, an event kind, its payload, and whether it is
*malformed*. A well-formed case has the shape the platform sends, with random content
(texts, commands, ids, replies, reactions, buttons, forms); a malformed one is a
well-formed one with one to three of the fields heedful relies on removed or given the
wrong type (or random junk altogether). ``FuzzRig`` runs the three real adapters
(slack-bolt, python-telegram-bot, discord.py) against the fake platforms in
``tests/fakes`` and the engine stand-in, and hands each case to the platform library the
way its transport would:

- Slack: the body to ``AsyncApp.async_dispatch`` (as Socket Mode does): events, slash
  commands, message shortcuts, modal submissions (a body bolt itself cannot read raises
  there; ``adapters/slack/transport.py`` logs and acknowledges it: ``rejected``);
- Telegram: the update through ``sanitize_updates`` (as ``getUpdates`` answers pass) and
  ``Update.de_json`` into the application's update queue: messages, commands, edits,
  button presses, reactions, unknown kinds;
- Discord: the gateway payload to discord.py's parser for its event: MESSAGE_CREATE,
  MESSAGE_REACTION_ADD, MESSAGE_DELETE, INTERACTION_CREATE (slash commands, context
  menus, components, modal submissions).

``deliver`` returns what went wrong: ``Outcome.errors`` (an exception that reached a
platform library, the event loop, or an ERROR log line: must stay empty),
``Outcome.writes`` (what the engine stand-in was asked to store: must stay empty for a
malformed case) and ``Outcome.rejected`` (the library itself refused to parse the
payload, so no handler of heedful's ever saw it).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

__all__ = ["Case", "FuzzRig", "Outcome", "cases"]

SLACK_TEAM = "T0HEEDFUL"
SLACK_BOT = "U0HEEDFUL"
TG_BOT = 123456789

# -- values ----------------------------------------------------------------------------------

_words = st.sampled_from(["wifi", "password", "office", "the", "is", "<@U0HEEDFUL>", "@heedful_test_bot", "#12",
                          "```", "**", "&amp;", "<!channel>", "\n", "😀", "\x00", "correction:", "/fix", "  "])
TEXT = st.one_of(st.text(max_size=40), st.lists(_words, max_size=12).map(" ".join))
JUNK_NOT_STR = st.sampled_from([None, 0, 7, -1.5, True, [], ["x"], {}, {"a": 1}])
JUNK_NOT_INT = st.sampled_from([None, "12", "", 1.5, True, [], {}, {"id": 1}])
JUNK_NOT_DICT = st.sampled_from([None, "x", 0, 1.5, [], ["a"], True])
JUNK_NOT_LIST = st.sampled_from([None, "x", 0, {}, {"type": "emoji"}, True])
JUNK_NOT_SNOWFLAKE = st.sampled_from([None, "", "abc", "12x", -1, 1.5, True, [], {}, {"id": "1"}])
_DELETE = object()


@dataclass
class Case:
    """One event for one platform; ``malformed``: a field heedful relies on is missing or mistyped."""

    platform: str
    kind: str
    payload: Any
    malformed: bool
    broken: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Case({self.platform}, {self.kind}, malformed={self.malformed}, broken={self.broken}, " \
               f"payload={json.dumps(self.payload, default=str)[:600]})"


def _set(data: Any, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(data, dict) or not isinstance(data.get(key), dict):
            return
        data = data[key]
    if isinstance(data, dict):
        if value is _DELETE:
            data.pop(path[-1], None)
        else:
            data[path[-1]] = value


_JUNK = {"str": JUNK_NOT_STR, "id": st.one_of(JUNK_NOT_STR, st.just("")), "int": JUNK_NOT_INT,
         "dict": JUNK_NOT_DICT, "list": JUNK_NOT_LIST, "snowflake": JUNK_NOT_SNOWFLAKE}


def _breakage(fields: dict[str, tuple[str, ...]]) -> st.SearchStrategy[list[tuple[tuple[str, ...], Any, str]]]:
    """One to three of ``fields`` (name -> (type, *path)), each deleted or given junk of the wrong type
    (only the junk when the type ends in ``?``: the platform may leave that field out)."""
    def one(name: str) -> st.SearchStrategy[tuple[tuple[str, ...], Any, str]]:
        kind, *path = fields[name]
        junk = _JUNK[kind.rstrip("?")]
        if kind.endswith("?"):
            junk = junk.filter(lambda value: value is not None)  # null is as good as left out
        return st.tuples(st.just(tuple(path)), junk if kind.endswith("?") else st.one_of(st.just(_DELETE), junk),
                         st.just(name))

    return st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=3, unique=True).flatmap(
        lambda names: st.tuples(*(one(n) for n in names)).map(list))


def _variant(platform: str, kind: str, valid: st.SearchStrategy[Any], fields: dict[str, tuple[str, ...]]
             ) -> st.SearchStrategy[Case]:
    def broken(payload: Any, breaks: list[tuple[tuple[str, ...], Any, str]]) -> Case:
        payload = copy.deepcopy(payload)
        for path, value, _ in breaks:
            _set(payload, path, value)
        return Case(platform, kind, payload, True, tuple(name for _, _, name in breaks))

    return st.one_of(
        valid.map(lambda payload: Case(platform, kind, payload, False)),
        st.tuples(valid, _breakage(fields)).map(lambda pair: broken(*pair)),
    )


# -- Slack -----------------------------------------------------------------------------------

_slack_channel = st.sampled_from(["C0FUZZ0001", "C0FUZZ0002", "D0FUZZ0003", "G0FUZZ0004"])
_slack_user = st.sampled_from(["U0ALICE", "U0BOB", SLACK_BOT, "W0GRID"])
_slack_ts = st.tuples(st.integers(1_700_000_000, 1_800_000_000), st.integers(0, 999_999)).map(
    lambda t: f"{t[0]}.{t[1]:06d}") | st.sampled_from(["1700000000.000001", "1700000000.000002"])


def _slack_message(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "type": st.just(kind), "user": _slack_user, "channel": _slack_channel, "ts": _slack_ts,
        "text": TEXT.map(lambda t: f"<@{SLACK_BOT}> {t}") if kind == "app_mention" else TEXT,
        "team": st.just(SLACK_TEAM),
    }, optional={
        "thread_ts": _slack_ts, "subtype": st.sampled_from(["thread_broadcast", "file_share", "message_changed",
                                                            "bot_message", "channel_join", "message_deleted"]),
        "channel_type": st.sampled_from(["channel", "im", "group", "mpim"]), "bot_id": st.just("B0OTHER"),
        "parent_user_id": _slack_user, "deleted_ts": _slack_ts,
    })


def _event_body(event: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "type": st.just("event_callback"), "team_id": st.just(SLACK_TEAM), "api_app_id": st.just("A0HEEDFUL"),
        "event": event, "event_id": st.text("abcdefghij0123456789", min_size=8, max_size=12).map("Ev".__add__),
        "event_time": st.just(1_700_000_000),
    })


_slack_reaction = st.fixed_dictionaries({
    "type": st.just("reaction_added"), "user": _slack_user,
    "reaction": st.sampled_from(["+1", "-1", "thumbsdown", "+1::skin-tone-3", "tada"]) | st.text(max_size=8),
    "item_user": _slack_user,
    "item": st.fixed_dictionaries({"type": st.just("message"), "channel": _slack_channel, "ts": _slack_ts}),
})
_slack_command_text = st.one_of(
    st.sampled_from(["why", "learned", "forget", "forget #1 #2", "persona", "persona tutor", "help", "",
                     "personal", "personal my plan is Pro", "fixme", "fixme it is 4", "forget me",
                     "why https://x.slack.com/archives/C0FUZZ0002/p1700000000000001",
                     "forget https://x.slack.com/archives/C0FUZZ0001/p1700000000000001"]), TEXT)


def slack_cases() -> st.SearchStrategy[Case]:
    message_fields = {"user": ("id", "event", "user"), "channel": ("id", "event", "channel"),
                      "ts": ("id", "event", "ts"), "text": ("str", "event", "text"), "event": ("dict", "event")}
    command = st.fixed_dictionaries({
        "command": st.just("/heedful"), "text": _slack_command_text, "channel_id": _slack_channel,
        "user_id": _slack_user, "team_id": st.just(SLACK_TEAM), "trigger_id": st.just("1.trigger"),
        "response_url": st.just("RESPOND"), "api_app_id": st.just("A0HEEDFUL"),
    })
    shortcut = st.fixed_dictionaries({
        "type": st.just("message_action"), "callback_id": st.sampled_from(["heedful_correct", "heedful_why"]),
        "team": st.just({"id": SLACK_TEAM}), "user": _slack_user.map(lambda u: {"id": u}),
        "channel": _slack_channel.map(lambda c: {"id": c}), "trigger_id": st.just("TRIGGER"),
        "response_url": st.just("RESPOND"), "action_ts": st.just("1700000000.1"),
        "message": st.fixed_dictionaries({"type": st.just("message"), "user": _slack_user, "text": TEXT,
                                          "ts": _slack_ts}, optional={"bot_id": st.just("B0HEEDFUL")}),
    })
    view = st.fixed_dictionaries({
        "type": st.just("view_submission"), "team": st.just({"id": SLACK_TEAM}),
        "user": _slack_user.map(lambda u: {"id": u}), "trigger_id": st.just("TRIGGER"),
        "view": st.fixed_dictionaries({
            "id": st.text("ABCDEFGH0123", min_size=6, max_size=8).map("V".__add__), "type": st.just("modal"),
            "callback_id": st.just("heedful_correction"), "hash": st.just("1.abc"),
            "private_metadata": st.one_of(st.just("SIGNED"), TEXT, st.just('{"channel": "C0FUZZ0001", "ts": "1"}')),
            "state": TEXT.map(lambda t: {"values": {"better_answer": {"text": {"type": "plain_text_input",
                                                                              "value": t}}}}),
        }),
    })
    return st.one_of(
        _variant("slack", "message", _event_body(_slack_message("message")), message_fields),
        _variant("slack", "app_mention", _event_body(_slack_message("app_mention")), message_fields),
        _variant("slack", "reaction_added", _event_body(_slack_reaction), {
            "user": ("id", "event", "user"), "reaction": ("str", "event", "reaction"),
            "item": ("dict", "event", "item"),
            "channel": ("id", "event", "item", "channel"), "ts": ("id", "event", "item", "ts")}),
        _variant("slack", "command", command, {"channel": ("id", "channel_id"), "user": ("id", "user_id")}),
        _variant("slack", "shortcut", shortcut, {
            "channel": ("dict", "channel"), "user": ("dict", "user"), "message": ("dict", "message"),
            "ts": ("id", "message", "ts"), "user_id": ("id", "user", "id")}),
        _variant("slack", "view_submission", view, {
            "user": ("dict", "user"), "user_id": ("id", "user", "id"), "view": ("dict", "view"),
            "metadata": ("str", "view", "private_metadata")}),
        st.dictionaries(st.text(max_size=8), st.one_of(JUNK_NOT_STR, TEXT), max_size=5).map(
            lambda junk: Case("slack", "junk", {"type": "event_callback", "team_id": SLACK_TEAM, "event": junk}, True)),
    )


# -- Telegram --------------------------------------------------------------------------------

_tg_user = st.sampled_from([
    {"id": 900_001, "is_bot": False, "first_name": "Ann"}, {"id": 900_002, "is_bot": False, "first_name": "Bob"},
    {"id": TG_BOT, "is_bot": True, "first_name": "heedful", "username": "heedful_test_bot"},
    {"id": 1087968824, "is_bot": True, "first_name": "Group", "username": "GroupAnonymousBot"},
])
_tg_chat = st.sampled_from([
    {"id": 900_001, "type": "private", "first_name": "Ann"}, {"id": -1_000_000_900_003, "type": "supergroup",
                                                             "title": "team", "is_forum": True},
    {"id": -900_004, "type": "group", "title": "old"},
])
_tg_command = st.sampled_from(["/fix", "/why", "/learned", "/forget", "/persona", "/ask", "/cancel", "/help",
                               "/start", "/frobnicate", "/fix@heedful_test_bot", "/ask@other_bot", "/fixme",
                               "/personal", "/forget me"])


def _tg_text() -> st.SearchStrategy[tuple[str, list[dict[str, Any]]]]:
    def command(pair: tuple[str, str]) -> tuple[str, list[dict[str, Any]]]:
        name, rest = pair
        return f"{name} {rest}".strip(), [{"type": "bot_command", "offset": 0, "length": len(name)}]

    plain = TEXT.map(lambda t: (t, []))
    mention = TEXT.map(lambda t: ("@heedful_test_bot " + t, [{"type": "mention", "offset": 0, "length": 17}]))
    return st.one_of(plain, mention, st.tuples(_tg_command, TEXT).map(command),
                     TEXT.map(lambda t: ("correction: " + t, [])))


def _tg_message() -> st.SearchStrategy[dict[str, Any]]:
    def build(parts: tuple[Any, ...]) -> dict[str, Any]:
        message_id, chat, sender, (text, entities), extra = parts
        message = {"message_id": message_id, "date": 1_700_000_000, "chat": chat, "from": sender, "text": text}
        if entities:
            message["entities"] = entities
        message.update(extra)
        return message

    replied = st.fixed_dictionaries({"message_id": st.integers(1, 50), "date": st.just(1_700_000_000),
                                     "chat": _tg_chat, "from": _tg_user, "text": TEXT})
    extra = st.fixed_dictionaries({}, optional={
        "reply_to_message": replied, "message_thread_id": st.integers(1, 9), "is_topic_message": st.booleans(),
        "external_reply": st.just({"origin": {"type": "hidden_user", "sender_user_name": "x", "date": 0}}),
        "sender_chat": _tg_chat, "sticker": st.just({"file_id": "s", "file_unique_id": "u", "type": "regular",
                                                     "width": 1, "height": 1, "is_animated": False,
                                                     "is_video": False}),
    })
    return st.tuples(st.integers(1, 10**9), _tg_chat, _tg_user, _tg_text(), extra).map(build)


def telegram_cases() -> st.SearchStrategy[Case]:
    message_fields = {"message": ("dict", "message"), "message_id": ("int", "message", "message_id"),
                      "date": ("int", "message", "date"), "chat": ("dict", "message", "chat"),
                      "chat_id": ("int", "message", "chat", "id"), "chat_type": ("str", "message", "chat", "type"),
                      "from": ("dict?", "message", "from"), "from_id": ("int", "message", "from", "id"),
                      "text": ("str?", "message", "text")}
    message = _tg_message().map(lambda m: {"message": m})
    edited = _tg_message().map(lambda m: {"edited_message": m | {"edit_date": 1_700_000_001}})
    button = st.tuples(_tg_message(), _tg_user, st.sampled_from(["hf:up", "hf:down", "hf:fix", "hf:zz", ""])).map(
        lambda t: {"callback_query": {"id": "q1", "from": t[1], "chat_instance": "ci", "data": t[2],
                                      "message": t[0] | {"from": {"id": TG_BOT, "is_bot": True,
                                                                  "first_name": "heedful"}}}})
    reaction = st.tuples(_tg_chat, _tg_user, st.integers(1, 50),
                         st.lists(st.sampled_from(["👍", "👎", "🔥"]), max_size=2, unique=True),
                         st.lists(st.sampled_from(["👍", "👎"]), max_size=1)).map(
        lambda t: {"message_reaction": {"chat": t[0], "user": t[1], "message_id": t[2], "date": 1_700_000_000,
                                        "new_reaction": [{"type": "emoji", "emoji": e} for e in t[3]],
                                        "old_reaction": [{"type": "emoji", "emoji": e} for e in t[4]]}})
    return st.one_of(
        _variant("telegram", "message", message, message_fields),
        _variant("telegram", "edited_message", edited, {"message": ("dict", "edited_message"),
                                                        "chat": ("dict", "edited_message", "chat")}),
        _variant("telegram", "callback_query", button, {
            "query": ("dict", "callback_query"), "id": ("id", "callback_query", "id"),
            "from": ("dict", "callback_query", "from"), "from_id": ("int", "callback_query", "from", "id"),
            "data": ("str", "callback_query", "data"), "message_id": ("int", "callback_query", "message", "message_id"),
            "chat_id": ("int", "callback_query", "message", "chat", "id")}),
        _variant("telegram", "message_reaction", reaction, {
            "chat": ("dict", "message_reaction", "chat"), "chat_id": ("int", "message_reaction", "chat", "id"),
            "message_id": ("int", "message_reaction", "message_id"),
            "new": ("list", "message_reaction", "new_reaction"),
            "user_id": ("int", "message_reaction", "user", "id")}),
        st.dictionaries(st.sampled_from(["message", "callback_query", "message_reaction", "poll", "x"]),
                        st.one_of(JUNK_NOT_STR, st.dictionaries(st.text(max_size=5), JUNK_NOT_STR, max_size=3)),
                        min_size=1, max_size=2).map(lambda junk: Case("telegram", "junk", junk, True)),
    )


# -- Discord ---------------------------------------------------------------------------------


def discord_cases(bot_id: str, guild_id: str, channel_id: str) -> st.SearchStrategy[Case]:
    person = {"discriminator": "0", "avatar": None, "global_name": None}
    users = st.sampled_from([
        person | {"id": "900000000000000001", "username": "ann", "global_name": "Ann"},
        person | {"id": "900000000000000002", "username": "bob"},
        person | {"id": bot_id, "username": "heedful", "bot": True},
        person | {"id": "900000000000000003", "username": "robo", "bot": True},
    ])
    channels = st.sampled_from([channel_id, "900000000000000010"])
    snowflakes = st.integers(900_000_000_000_000_100, 999_999_999_999_999_999).map(str)
    content = st.one_of(TEXT, TEXT.map(lambda t: f"<@{bot_id}> {t}"), TEXT.map(lambda t: f"correction: {t}"))

    def message(parts: tuple[Any, ...]) -> dict[str, Any]:
        message_id, channel, author, text, kind, guild, reply = parts
        data: dict[str, Any] = {
            "id": message_id, "channel_id": channel, "author": author, "content": text,
            "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [person | {"id": bot_id, "username": "heedful", "bot": True}]
            if bot_id in text else [],
            "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": kind, "flags": 0,
            "components": [],
        }
        if guild:
            data["guild_id"] = guild_id
            data["member"] = {"roles": [], "joined_at": "2026-01-01T00:00:00+00:00", "deaf": False, "mute": False,
                              "flags": 0}
        if reply is not None:
            data["message_reference"] = {"type": 0, "message_id": reply, "channel_id": channel,
                                         "guild_id": guild_id if guild else None}
        return data

    messages = st.tuples(snowflakes, channels, users, content, st.sampled_from([0, 19, 7, 6]), st.booleans(),
                         st.one_of(st.none(), snowflakes)).map(message)
    reactions = st.tuples(users, channels, snowflakes, st.sampled_from(["👍", "👎", "🎉", "👍🏽"]), st.booleans(),
                          st.booleans()).map(lambda t: {
                              "user_id": t[0]["id"], "channel_id": t[1], "message_id": t[2],
                              "emoji": {"id": None, "name": t[3]}, "burst": False, "type": 0,
                              **({"guild_id": guild_id} if t[4] else {}),
                              **({"message_author_id": bot_id} if t[5] else {})})
    options = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["message", "corrections", "persona",
                                                                       "about_you"]),
                                              "type": st.just(3), "value": st.one_of(TEXT, st.just("#1"))}),
                       max_size=2, unique_by=lambda o: o["name"])
    slash = st.tuples(st.sampled_from(["why", "learned", "forget", "persona", "help", "personal", "nope"]),
                      options).map(
        lambda t: (2, {"id": "900000000000000500", "name": t[0], "type": 1, "options": t[1]}))
    menu = st.tuples(st.sampled_from(["Correct this answer", "Correct just for me", "Why this answer?"]),
                     messages).map(
        lambda t: (2, {"id": "900000000000000501", "name": t[0], "type": 3, "target_id": t[1]["id"],
                       "resolved": {"messages": {t[1]["id"]: t[1]}}}))
    component = st.text(max_size=30).map(lambda c: (3, {"custom_id": c, "component_type": 2}))
    modal = st.tuples(st.one_of(st.just(f"heedful:correct:{channel_id}:"), st.just("heedful:correct:"),
                                st.just(f"heedful:correctme:{channel_id}:"),
                                st.text(max_size=20)), st.one_of(snowflakes, st.text(max_size=5)), TEXT).map(
        lambda t: (5, {"custom_id": t[0] + t[1], "components": [
            {"type": 18, "component": {"type": 4, "custom_id": "answer", "value": t[2]}}]}))
    def interaction(kinds: st.SearchStrategy[tuple[int, dict[str, Any]]]) -> st.SearchStrategy[dict[str, Any]]:
        return st.tuples(kinds, users, st.booleans()).map(
            lambda t: {"type": t[0][0], "data": t[0][1], "user": t[1], "guild": t[2]})

    deletes = st.tuples(snowflakes, channels).map(lambda t: {"id": t[0], "channel_id": t[1]})
    return st.one_of(
        _variant("discord", "MESSAGE_CREATE", messages, {
            "id": ("snowflake", "id"), "channel_id": ("snowflake", "channel_id"), "author": ("dict", "author"),
            "author_id": ("snowflake", "author", "id"), "content": ("str", "content"), "type": ("int", "type")}),
        _variant("discord", "MESSAGE_REACTION_ADD", reactions, {
            "user_id": ("snowflake", "user_id"), "channel_id": ("snowflake", "channel_id"),
            "message_id": ("snowflake", "message_id"), "emoji": ("dict", "emoji")}),
        _variant("discord", "MESSAGE_DELETE", deletes, {"id": ("snowflake", "id")}),
        _variant("discord", "INTERACTION_CREATE", interaction(st.one_of(slash, menu)), {
            "data": ("dict", "data"), "type": ("int", "type"), "name": ("str", "data", "name")}),
        _variant("discord", "INTERACTION_CREATE", interaction(st.one_of(component, modal)), {
            "data": ("dict", "data"), "type": ("int", "type"), "custom_id": ("str", "data", "custom_id")}),
    )


def cases(bot_id: str, guild_id: str, channel_id: str) -> st.SearchStrategy[Case]:
    """A case for any of the three platforms (the Discord ids: the rig's bot, guild and channel)."""
    platforms = {"slack": slack_cases(), "telegram": telegram_cases(),
                 "discord": discord_cases(bot_id, guild_id, channel_id)}
    return st.sampled_from(sorted(platforms)).flatmap(platforms.__getitem__)  # a third each


# -- the rig ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    errors: list[str] = field(default_factory=list)
    writes: list[Any] = field(default_factory=list)
    rejected: str = ""


class _Errors(logging.Handler):
    """ERROR records from the adapters and the platform libraries: an exception nobody handled."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(f"{record.name}: {record.getMessage()[:300]}"
                         + (f" [{record.exc_info[0].__name__}: {record.exc_info[1]}]" if record.exc_info else ""))


class FuzzRig:
    """The three adapters, started against the fakes with the engine stand-in; ``deliver`` one case at a time."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.errors = _Errors()
        self.loop_errors: list[str] = []

    async def __aenter__(self) -> FuzzRig:
        from adapters.discord import create as create_discord
        from adapters.settings import DiscordSettings, SlackSettings, TelegramSettings
        from adapters.slack import create as create_slack
        from adapters.telegram import create as create_telegram
        from tests.fakes.discord import FakeDiscord
        from tests.fakes.engine import StandInEngine
        from tests.fakes.slack import FakeSlack
        from tests.fakes.telegram import FakeTelegram

        logging.getLogger().addHandler(self.errors)
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: self.loop_errors.append(str(context.get("exception") or context.get("message"))))
        self.engine = StandInEngine(turn_seconds=0.0, chunks=2)
        self.slack = await FakeSlack(echo=False).start()
        self.tg = FakeTelegram(f"{TG_BOT}:FUZZ-token")
        await self.tg.start()
        discord_token = "MTAwMDAwMDAwMDAwMDAwMDAw.fake.discord-fuzz-token"
        self.discord = FakeDiscord(discord_token)
        await self.discord.start()
        self.guild = self.discord.guild("fuzz")
        self.channel = self.discord.text_channel(self.guild, "fuzz")
        self.dm = self.discord.dm(self.discord.user("Dee"))
        self.slack_adapter = create_slack(self.engine, SlackSettings(
            bot_token=self.slack.bot_token, app_token=self.slack.app_token, api_url=self.slack.api_url, mode="socket",
            rate_limit_cap=1.0))
        self.tg_adapter = create_telegram(self.engine, TelegramSettings(
            token=self.tg.token, api_url=self.tg.api_url, drafts=False, state_file=self.state_dir / "tg.json",
            rate_limit_cap=1.0, poll_timeout=1))
        self.discord_adapter = create_discord(self.engine, DiscordSettings(
            token=discord_token, api_url=self.discord.api_url, gateway_url=self.discord.gateway_url,
            guild_ready_timeout=0.05, rate_limit_cap=1.0))
        for adapter in (self.slack_adapter, self.tg_adapter, self.discord_adapter):
            await adapter.start()
            failed = adapter.handler_failed

            def record(err: Exception, failed: Callable[[Exception], None] = failed, adapter: Any = adapter) -> None:
                if adapter.expected_failure(err) is None:
                    self.loop_errors.append(f"{adapter.platform} handler: {type(err).__name__}: {err}")
                failed(err)

            adapter.tasks.on_error = record
        await self.discord_adapter.commands_synced.wait()
        self.bot_id = str(self.discord_adapter.own_id)
        self._baseline = set(asyncio.all_tasks())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for adapter in (self.slack_adapter, self.tg_adapter, self.discord_adapter):
            await adapter.stop()
        for fake in (self.slack, self.tg, self.discord):
            await fake.stop()
        logging.getLogger().removeHandler(self.errors)

    async def _quiet(self) -> None:
        """Wait until every task started since the rig was up has ended (handlers, bolt listeners, ...)."""
        deadline = time.monotonic() + 30
        while True:
            current = asyncio.current_task()
            pending = {t for t in asyncio.all_tasks() - self._baseline if t is not current and not t.done()
                       and _is_handler(t)}
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} handler task(s) still running: {pending}")
            await asyncio.wait(pending, timeout=1)
            await asyncio.sleep(0)

    async def deliver(self, case: Case) -> Outcome:
        outcome = Outcome()
        writes, errors, loop_errors = len(self.engine.writes), len(self.errors.seen), len(self.loop_errors)
        try:
            if case.platform == "slack":
                await self._slack(case, outcome)
            elif case.platform == "telegram":
                await self._telegram(case, outcome)
            else:
                await self._discord(case, outcome)
            await self.slack_adapter.idle()
            await self.discord_adapter.idle()
            await self.tg_adapter.idle()
            await self._quiet()
        except Exception as err:  # whatever escapes is what the fuzz looks for
            outcome.errors.append(f"raised {type(err).__name__}: {err}")
        outcome.errors += self.errors.seen[errors:] + self.loop_errors[loop_errors:]
        outcome.writes = self.engine.writes[writes:]
        return outcome

    async def _slack(self, case: Case, outcome: Outcome) -> None:
        from slack_bolt.request.async_request import AsyncBoltRequest

        payload = copy.deepcopy(case.payload)
        if isinstance(payload, dict):
            if payload.get("response_url") == "RESPOND":
                payload["response_url"] = self.slack._response_url()
            if payload.get("trigger_id") in ("TRIGGER", "1.trigger"):
                payload["trigger_id"] = self.slack._trigger()
            view = payload.get("view")
            if isinstance(view, dict) and view.get("private_metadata") == "SIGNED":
                from adapters.slack.views import Target
                user = payload.get("user")
                view["private_metadata"] = Target(SLACK_TEAM, "C0FUZZ0001", "1700000000.000001",
                                                  user=str(user.get("id")) if isinstance(user, dict) else ""
                                                  ).dump(self.slack_adapter._view_key)
        app = self.slack_adapter.app
        assert app is not None
        try:
            await app.async_dispatch(AsyncBoltRequest(body=payload, mode="socket_mode"))
        except Exception as err:  # as the transports do (adapters/slack/transport.py): bolt
            outcome.rejected = f"{type(err).__name__}: {err}"  # could not read it; it is logged and acked

    async def _telegram(self, case: Case, outcome: Outcome) -> None:
        from telegram import Update

        from adapters.telegram._updates import sanitize_updates

        update = {"update_id": 10_000_000 + len(self.tg.pushed) + secrets.randbelow(1 << 30), **case.payload}
        raw = sanitize_updates(json.dumps({"ok": True, "result": [update]}, default=str).encode())
        (data,) = json.loads(raw)["result"]
        app = self.tg_adapter.app
        assert app is not None
        await app.update_queue.put(Update.de_json(data, app.bot))
        await app.update_queue.join()

    async def _discord(self, case: Case, outcome: Outcome) -> None:
        from adapters.discord.payloads import well_formed
        from tests.fakes.discord import Interaction

        client = self.discord_adapter.client
        assert client is not None
        payload = copy.deepcopy(case.payload)
        if case.kind == "INTERACTION_CREATE":
            payload = self._interaction(payload)
        if not well_formed(case.kind, payload):
            outcome.rejected = "dropped by adapters/discord/payloads.py"
        try:
            client._connection.parsers[case.kind](payload)  # the gateway's path: the guard, then discord.py
        except Exception as err:  # discord.py could not parse it: no handler of ours saw it
            outcome.rejected = f"{type(err).__name__}: {err}"
            return
        if case.kind == "INTERACTION_CREATE" and isinstance(payload, dict):
            self.discord.interactions.setdefault(str(payload.get("id")), Interaction(
                str(payload.get("id")), str(payload.get("token")), payload.get("type"), payload))

    def _interaction(self, spec: Any) -> Any:
        if not isinstance(spec, dict):
            return spec
        from tests.fakes.discord import Interaction

        iid, token = self.discord.snowflake(), "itok-" + secrets.token_urlsafe(12)
        payload: dict[str, Any] = {
            "id": iid, "application_id": self.discord.app_id, "type": spec.get("type"), "token": token,
            "version": 1, "channel_id": self.channel["id"], "channel": dict(self.channel), "locale": "en-US",
            "app_permissions": "0", "attachment_size_limit": 10_485_760, "entitlements": [],
            "authorizing_integration_owners": {},
        }
        if "data" in spec:
            payload["data"] = spec["data"]
        user = spec.get("user")
        if spec.get("guild") and isinstance(user, dict):
            member = self.discord.member_payload(user, ())
            member["permissions"] = "0"
            payload |= {"guild_id": self.guild.id, "member": member, "guild_locale": "en-US", "context": 0,
                        "guild": {"id": self.guild.id, "locale": "en-US", "features": []}}
        else:
            payload |= {"user": user, "context": 1, "channel_id": self.dm["id"], "channel": dict(self.dm)}
        self.discord.interactions[iid] = Interaction(iid, token, payload["type"], payload)
        return payload


def _is_handler(task: asyncio.Task[Any]) -> bool:
    """Tasks that handle one event: ours, bolt's listeners, discord.py's command runs, PTB's updates."""
    if task.get_name() == "CommandTree-invoker":
        return True
    name = getattr(task.get_coro(), "__qualname__", "") or ""
    return any(part in name for part in ("_guarded", "run_ack_function", "process_update", "_run_event"))
