"""All configuration in one typed tree: ``heedful.toml`` plus ``HEEDFUL_*`` variables.

Precedence (highest first): environment, TOML file, defaults. Nested keys map to
environment names with one underscore after the section: ``[model] id`` is
``HEEDFUL_MODEL_ID``, ``[telegram] token`` is ``HEEDFUL_TELEGRAM_TOKEN``,
``[learning] answer_threshold`` is ``HEEDFUL_LEARNING_ANSWER_THRESHOLD``.
The file is ``$HEEDFUL_CONFIG``, else ``./heedful.toml`` when it exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from adapters.settings import ConsoleSettings, DiscordSettings, SlackSettings, TelegramSettings
from engine import EngineSettings
from engine.settings import (
    DialogSettings,
    EncoderSettings,
    LearningSettings,
    LoraSettings,
    ModelSettings,
    StoreSettings,
    TeachLimitSettings,
)
from engine.store import redact_url

from .logs import setup_logging
from .presets import PRESETS

__all__ = ["Settings", "HttpSettings", "ConfigError", "load_settings", "settings_or_exit", "default_data_dir"]


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "heedful"


class HttpSettings(BaseModel):
    """Health, readiness and metrics endpoints of ``heedful run`` (env prefix ``HEEDFUL_HTTP_``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="serve /healthz, /readyz and /metrics while platforms run")
    host: str = Field("127.0.0.1", description="bind address (0.0.0.0 to let a scraper or orchestrator reach it)")
    port: int = Field(8321, ge=0, le=65535, description="0: any free port")
    secure_cookies: bool | None = Field(None, description="mark the admin console's cookies Secure; unset: when "
                                        "the request came over https (set true behind a TLS-terminating proxy)")


class Settings(BaseSettings):
    """The whole configuration of a heedful process."""

    model_config = SettingsConfigDict(
        env_prefix="HEEDFUL_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_ignore_empty=True,  # compose passes unset tokens as empty strings
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    models_dir: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    log_format: Literal["text", "json"] = Field("text", description="json: one object a line, for log shippers")
    offline: bool = Field(True, description="forbid Hugging Face hub downloads at run time")
    model: ModelSettings = ModelSettings()
    encoder: EncoderSettings = EncoderSettings()
    learning: LearningSettings = LearningSettings()
    lora: LoraSettings = LoraSettings()
    dialog: DialogSettings = DialogSettings()
    teach: TeachLimitSettings = TeachLimitSettings()
    http: HttpSettings = HttpSettings()
    store: StoreSettings = StoreSettings()
    console: ConsoleSettings = ConsoleSettings()
    telegram: TelegramSettings = TelegramSettings()
    slack: SlackSettings = SlackSettings()
    discord: DiscordSettings = DiscordSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls), file_secret_settings)

    def engine_settings(self) -> EngineSettings:
        """The engine's part of the tree, with the built-in persona presets filled in."""
        dialog = self.dialog.model_copy(update={"personas": {**PRESETS, **self.dialog.personas}})
        return EngineSettings(
            data_dir=self.data_dir, models_dir=self.models_dir, model=self.model,
            encoder=self.encoder, learning=self.learning, lora=self.lora, dialog=dialog,
            teach=self.teach, store=self.store,
        )

    def secrets(self) -> list[str]:
        """Every configured secret value, for log redaction."""
        values = [self.telegram.token, self.telegram.webhook_secret, self.slack.bot_token, self.slack.app_token,
                  self.slack.signing_secret, self.discord.token, self.model.api_key, self.store.url]
        found = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
        if self.store.url is not None:  # the URL's password on its own, wherever a library quotes it
            found += [p for p in [urlsplit(self.store.url.get_secret_value()).password] if p]
        return found

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-ready data, secrets shown as ``**********`` (the store's URL with
        only its password hidden, so that one can see which database it is)."""
        data = self.model_dump(mode="json")
        if self.store.url is not None:
            data["store"]["url"] = redact_url(self.store.url.get_secret_value())
        return data


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings; raises ``ConfigError`` naming the bad key."""
    path = config or Path(os.environ.get("HEEDFUL_CONFIG", "heedful.toml"))
    if config is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path if path.is_file() else None)

    try:
        return _FromFile(**overrides)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '?'}: {e['msg']}" for e in err.errors(include_input=False)
        )
        raise ConfigError(f"invalid configuration ({path if path.is_file() else 'environment'}): {problems}") from None


def settings_or_exit(config: Path | None = None, **overrides: Any) -> Settings:
    """The settings for a command, with logging set up from them; an invalid configuration
    ends the command with its message on stderr and exit status 2."""
    try:
        settings = load_settings(config, **overrides)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level, settings.secrets(), json_lines=settings.log_format == "json")
    return settings
