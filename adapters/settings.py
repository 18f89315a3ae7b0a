"""Each platform adapter's settings (filled by ``bots.config`` from TOML and env).

Kept apart from the adapters so that reading the configuration never imports a
platform library. Environment names: ``HEEDFUL_<PLATFORM>_<FIELD>``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["TeachSettings", "ConsoleSettings", "TelegramSettings", "SlackSettings", "DiscordSettings"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not silently ignored


class TeachSettings(_Strict):
    """Who may correct the bot: everyone, platform admins, or admins plus listed ids."""

    teach: Literal["everyone", "admins", "listed"] = "everyone"
    teachers: list[str] = Field(default_factory=list, description="user (or group/role) ids allowed to teach")


class ConsoleSettings(_Strict):
    channel: str = Field("default", description="channel name used by `heedful chat` and `heedful run`")
    user: str = Field("you", description="author id of console messages")


class TelegramSettings(TeachSettings):
    token: SecretStr | None = None
    api_url: str = "https://api.telegram.org/bot"


class SlackSettings(TeachSettings):
    bot_token: SecretStr | None = None
    app_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    api_url: str = "https://slack.com/api/"


class DiscordSettings(TeachSettings):
    token: SecretStr | None = None
    api_url: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg"
