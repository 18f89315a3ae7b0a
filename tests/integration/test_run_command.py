"""`heedful run`: the console when no platform token is set; a clear error otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.env import heedful_env


def env_for(tmp_path: Path, models_dir: Path, **extra: str) -> dict[str, str]:
    env = heedful_env()
    env.update(HEEDFUL_DATA_DIR=str(tmp_path), HEEDFUL_MODELS_DIR=str(models_dir), HEEDFUL_MODEL_ID="tiny:0",
               HEEDFUL_MODEL_MAX_NEW_TOKENS="8", **extra)
    return env


def test_run_without_tokens_is_a_console_chat(tmp_path: Path, models_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bots.cli", "run"], input="Where is the exit?\n/fix Door B.\n"
                          "where's the exit?\n/learned\n", env=env_for(tmp_path, models_dir), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Learned:" in done.stdout and "Door B." in done.stdout.split("Learned:", 1)[1]
    assert "'Where is the exit?' -> 'Door B.'" in done.stdout


def test_empty_token_counts_as_unset_and_secrets_stay_out_of_output(tmp_path: Path, models_dir: Path) -> None:
    env = env_for(tmp_path, models_dir, HEEDFUL_TELEGRAM_TOKEN="", HEEDFUL_LOG_LEVEL="DEBUG",
                  HEEDFUL_SLACK_SIGNING_SECRET="sekrit-signing-value")
    done = subprocess.run([sys.executable, "-m", "bots.cli", "run"], input="hello\n", env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # an answer, never a blank message
    assert "DEBUG" in done.stderr and "sekrit-signing-value" not in done.stderr + done.stdout

