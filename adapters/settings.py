"""Each platform adapter's settings (filled by ``bots.config`` from TOML and env).

Kept apart from the adapters so that reading the configuration never imports a
platform library. Environment names: ``HEEDFUL_<PLATFORM>_<FIELD>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

__all__ = [
    "ConsoleSettings",
    "DiscordSettings",
    "PlatformSettings",
    "SlackSettings",
    "TeachSettings",
    "TelegramSettings",
    "check_shards",
    "parse_shard_ids",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not silently ignored


class TeachSettings(_Strict):
    """Who may correct the bot: everyone, platform admins, admins plus listed ids, or everyone with
    review (``review``: managers' corrections apply at once, everyone else's wait for a manager)."""

    teach: Literal["everyone", "admins", "listed", "review"] = "everyone"
    teachers: list[str] = Field(default_factory=list, description="user (or group/role) ids allowed to teach")


class PlatformSettings(TeachSettings):
    """What every platform adapter's runtime reads (``adapters.base``)."""

    manage: Literal["admins", "teachers"] = Field(
        "admins", description="who may make the bot forget and change its persona: the place's managers "
        "(admins: Manage Server, chat admins, workspace admins), or everyone who may teach there (teachers)")
    concurrency: int = Field(32, ge=1, description="answers written at once, across channels; later ones wait "
                             "their turn in their channel's queue (HEEDFUL_<PLATFORM>_CONCURRENCY)")
    channel_concurrency: int = Field(2, ge=1, description="answers written at once in one channel; the channel's "
                                     "other questions wait in its queue, in order")
    channel_backlog: int = Field(8, ge=0, description="questions of one channel that may wait for an answer; "
                                 "beyond, a question gets a short 'busy' reply instead")
    rate_limit_cap: float = Field(30.0, ge=0.0, description="seconds one reply may wait in all on the platform's "
                                  "rate limits (each wait is cut to what is left); past it the reply ends with a "
                                  "short notice that it could not be finished")


class ConsoleSettings(_Strict):
    channel: str = Field("default", description="channel name used by `heedful chat` and `heedful run`")
    user: str = Field("you", description="author id of console messages")


class TelegramSettings(PlatformSettings):
    """The Telegram adapter (``adapters.telegram``); long polling unless ``webhook_url`` is set."""

    token: SecretStr | None = None
    api_url: str = Field("https://api.telegram.org/bot", description="Bot API base URL (a self-hosted server's too)")
    file_url: str = Field("", description="Bot API file base URL; empty: derived from api_url")
    webhook_url: str = Field("", description="public HTTPS URL Telegram posts updates to; empty: long polling")
    webhook_listen: str = Field("0.0.0.0", description="address the webhook server binds")
    webhook_port: int = Field(8443, ge=1, le=65535, description="port the webhook server binds")
    webhook_path: str = Field("", description="path served locally; empty: the path of webhook_url")
    webhook_secret: SecretStr | None = Field(
        None, description="X-Telegram-Bot-Api-Secret-Token (1-256 of A-Z a-z 0-9 _ -); empty: random per start"
    )
    admins: list[str] = Field(default_factory=list, description="user ids with admin rights in every chat")
    chats: dict[str, TeachSettings] = Field(
        default_factory=dict, description="who may teach in particular chats, by chat id (overrides teach/teachers)"
    )
    drafts: bool = Field(True, description="stream private-chat answers with sendMessageDraft when the server can")
    buttons: bool = Field(True, description="show the 👍 👎 ✏️ keyboard under answers")
    ask_after_thumbs_down: bool = Field(True, description="a 👎 reaction asks its author for the better answer")
    edit_interval_private: float = Field(1.0, ge=0.0, description="seconds between streaming edits in private chats")
    edit_interval_group: float = Field(3.0, ge=0.0, description="seconds between streaming edits in groups")
    poll_timeout: int = Field(30, ge=0, le=50, description="long-polling timeout in seconds")
    state_file: Path | None = Field(None, description="where handled update ids survive restarts; "
                                    "default: <data_dir>/telegram/<bot id>.json")

    @field_validator("webhook_secret")
    @classmethod
    def _secret_charset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("chats")
    @classmethod
    def _chat_ids(cls, value: dict[str, TeachSettings]) -> dict[str, TeachSettings]:
        for chat_id in value:
            if not re.fullmatch(r"-?[0-9]+", chat_id):
                raise ValueError(f"{chat_id!r} is not a numeric chat id")
        return value


class SlackSettings(PlatformSettings):
    """Slack: Socket Mode when an app-level token is set (``mode = "auto"``), else the HTTP Events API."""

    bot_token: SecretStr | None = None
    app_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    api_url: str = "https://slack.com/api/"
    mode: Literal["auto", "socket", "http"] = Field(
        "auto", description="auto: Socket Mode when app_token is set, else HTTP (needs signing_secret)"
    )
    host: str = Field("0.0.0.0", description="HTTP mode: address to listen on")
    port: int = Field(3000, ge=0, le=65535, description="HTTP mode: port to listen on (0: any free port)")
    path: str = Field("/slack/events", description="HTTP mode: the Request URL path for events, commands, shortcuts")
    edit_interval: float = Field(1.0, ge=0, description="seconds between chat.update calls while a reply streams")
    native_streaming: bool = Field(True, description="stream replies in threads with Slack's chat.startStream / "
                                   "appendStream / stopStream (falls back to chat.update when the workspace refuses)")

    @field_validator("bot_token")
    @classmethod
    def _bot_token_kind(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token (starts with xoxb-)")
        return value

    @field_validator("app_token")
    @classmethod
    def _app_token_kind(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token (starts with xapp-)")
        return value

    @model_validator(mode="after")
    def _delivery_is_possible(self) -> SlackSettings:
        if self.bot_token is None:
            return self  # Slack is not configured; nothing to check
        if self.resolved_mode == "socket" and self.app_token is None:
            raise ValueError("app_token (xapp-...) is required for Socket Mode")
        if self.resolved_mode == "http" and self.signing_secret is None:
            raise ValueError("signing_secret is required for HTTP mode (or set app_token to use Socket Mode)")
        return self

    @property
    def resolved_mode(self) -> Literal["socket", "http"]:
        if self.mode == "auto":
            return "socket" if self.app_token is not None else "http"
        return self.mode


def parse_shard_ids(text: str) -> list[int]:
    """``"0,1"`` (or ``"[0, 1]"``) -> ``[0, 1]``; raises ``ValueError`` naming what is wrong."""
    parts = [p.strip() for p in text.strip().removeprefix("[").removesuffix("]").split(",")]
    bad = [p for p in parts if not (p.isascii() and p.isdigit())]
    if bad:
        raise ValueError(f"shard ids must be numbers separated by commas, not {', '.join(map(repr, bad))}")
    return [int(p) for p in parts]


def check_shards(ids: list[int] | None, count: int | None) -> None:
    """Raises ``ValueError`` unless ``ids`` (None: all) is a slice of ``count`` shards."""
    if count is None:
        if ids is not None:
            raise ValueError("shard ids need a shard count (HEEDFUL_DISCORD_SHARD_COUNT)")
        return
    if count < 1:
        raise ValueError(f"the shard count must be at least 1, not {count}")
    if ids is None:
        return
    if not ids:
        raise ValueError("name at least one shard id")
    outside = [i for i in ids if not 0 <= i < count]
    if outside:
        raise ValueError(f"shard ids must be within 0..{count - 1} for {count} shard(s), not "
                         f"{', '.join(map(str, outside))}")
    if len(set(ids)) != len(ids):
        raise ValueError("a shard id is named twice")


class DiscordSettings(PlatformSettings):
    """The Discord adapter (``adapters.discord``); set-up in ``docs/discord.md``.

    ``teach`` here: ``admins`` means members with Manage Server (or a ``manager_roles``
    role); ``listed`` adds the user *or role* ids in ``teachers``; ``guild_teach``
    overrides ``teach`` per guild.
    """

    token: SecretStr | None = None
    api_url: str = Field("https://discord.com/api/v10", description="REST base URL (a proxy's, or a test server's)")
    gateway_url: str = Field("wss://gateway.discord.gg", description="gateway websocket URL")
    guild_teach: dict[str, Literal["everyone", "admins", "listed", "review"]] = Field(
        default_factory=dict, description="guild id -> who may teach there (overrides teach)"
    )
    manager_roles: list[str] = Field(
        default_factory=list, description="role ids that may use /forget and set /persona (besides Manage Server)"
    )
    auto_thread: bool = Field(False, description="answer a mention in a channel in a new thread (one per conversation)")
    auto_thread_archive_minutes: Literal[60, 1440, 4320, 10080] = Field(
        1440, description="inactivity after which Discord archives such a thread"
    )
    dms: bool = Field(True, description="answer direct messages")
    command_sync: Literal["global", "guilds", "off"] = Field(
        "global", description="register the slash and context-menu commands on start: globally, "
        "in command_guilds only (instant, for testing), or not at all"
    )
    command_guilds: list[str] = Field(default_factory=list, description="guild ids for command_sync = guilds")
    edit_interval: float = Field(1.0, ge=0.0, description="seconds between edits while a reply streams")
    guild_ready_timeout: float = Field(2.0, ge=0.0, description="seconds to wait for guild data when connecting")
    start_timeout: float = Field(60.0, gt=0.0, description="seconds start() waits for the gateway to be ready")
    shard_count: int | None = Field(
        None, description="Discord shards the bot has in all (every process the same); unset: one connection, "
        "no sharding. Set: this process runs shard_ids (all when unset) with discord.py's AutoShardedClient")
    shard_ids: Annotated[list[int] | None, NoDecode] = Field(
        None, description='the shards this process connects, e.g. "0,1" (each within 0..shard_count-1)')

    @field_validator("manager_roles", "command_guilds", "teachers", mode="before")
    @classmethod
    def _snowflakes(cls, values: object) -> object:
        if not isinstance(values, list):
            return values  # pydantic names the type error
        bad = [v for v in values if not str(v).strip().isdigit()]
        if bad:
            raise ValueError(f"must be Discord ids (digits only), not {', '.join(map(repr, bad))}")
        return [str(v).strip() for v in values]

    @field_validator("guild_teach", mode="before")
    @classmethod
    def _guild_ids(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        bad = [k for k in value if not str(k).strip().isdigit()]
        if bad:
            raise ValueError(f"keys must be guild ids (digits only), not {', '.join(map(repr, bad))}")
        return {str(k).strip(): v for k, v in value.items()}

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _shard_id_list(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_shard_ids(value)  # the environment's "0,1"
        if isinstance(value, int):
            return [value]
        return value

    @model_validator(mode="after")
    def _sync_has_guilds(self) -> DiscordSettings:
        if self.command_sync == "guilds" and not self.command_guilds:
            raise ValueError("command_sync = guilds needs command_guilds (the guild ids to register commands in)")
        return self

    @model_validator(mode="after")
    def _shards_fit(self) -> DiscordSettings:
        check_shards(self.shard_ids, self.shard_count)
        return self
