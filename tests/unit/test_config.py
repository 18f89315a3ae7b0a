import logging
from pathlib import Path

import pytest

from bots.config import ConfigError, load_settings
from bots.logs import RedactingFilter


def test_env_overrides_toml_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "heedful.toml"
    toml.write_text('data_dir = "/srv/heedful"\n[model]\nid = "tiny:3"\nmax_new_tokens = 50\n'
                    '[learning]\nanswer_threshold = 0.8\n')
    monkeypatch.setenv("HEEDFUL_MODEL_MAX_NEW_TOKENS", "12")
    monkeypatch.setenv("HEEDFUL_TELEGRAM_API_URL", "http://127.0.0.1:9/bot")
    monkeypatch.setenv("HEEDFUL_SLACK_BOT_TOKEN", "")  # empty counts as unset
    settings = load_settings(toml)
    assert settings.data_dir == Path("/srv/heedful")
    assert (settings.model.id, settings.model.max_new_tokens) == ("tiny:3", 12)
    assert settings.learning.answer_threshold == 0.8
    assert settings.telegram.api_url == "http://127.0.0.1:9/bot"
    assert settings.slack.bot_token is None
    assert "support" in settings.engine_settings().dialog.personas


def test_errors_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_MODEL_TEMPERATURE", "hot")
    with pytest.raises(ConfigError, match=r"model\.temperature"):
        load_settings()
    monkeypatch.delenv("HEEDFUL_MODEL_TEMPERATURE")
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nnonsense = 1\n")
    with pytest.raises(ConfigError, match=r"model\.nonsense"):
        load_settings(bad)


def test_secrets_are_redacted_from_dumps_and_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_TELEGRAM_TOKEN", "123456:SECRET-token")
    settings = load_settings()
    assert "SECRET" not in str(settings.redacted()) and "SECRET" not in repr(settings)
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "POST %s", ("https://x/bot123456:SECRET-token/send",),
                               None)
    RedactingFilter(settings.secrets()).filter(record)
    assert "SECRET" not in record.getMessage() and "**********" in record.getMessage()


def test_the_example_config_loads_and_keeps_the_calibrated_radius() -> None:
    """Copying heedful.example.toml must not switch the meta-learned metric's radius off:
    an explicit threshold overrides the calibrated one, so the example leaves them unset."""
    example = Path(__file__).resolve().parents[2] / "heedful.example.toml"
    settings = load_settings(example).engine_settings()
    assert settings.learning.metric == "default"
    assert not {"answer_threshold", "example_threshold"} & settings.learning.model_fields_set
    assert settings.lora.enabled and settings.lora.scope == "related"


def test_renamed_settings_keep_their_old_names_for_a_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_MODEL_MAX_RESIDENT_ADAPTERS", "9")
    monkeypatch.setenv("HEEDFUL_LORA_CACHED_ADAPTERS", "11")
    with pytest.warns(DeprecationWarning) as warned:
        settings = load_settings()
    said = " ".join(str(w.message) for w in warned)
    assert "now 'max_resident_loras'" in said and "now 'cached_loras'" in said
    assert settings.model.max_resident_loras == 9 and settings.lora.cached_loras == 11
