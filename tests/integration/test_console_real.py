"""The embedded default end to end, as a user scripts it: `heedful chat` with piped stdin."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.env import heedful_env

pytestmark = pytest.mark.real_model

HEEDFUL = [sys.executable, "-m", "bots.cli"]


def env_for(data_dir: Path, models_dir: Path) -> dict[str, str]:
    env = heedful_env()
    env.update(HEEDFUL_DATA_DIR=str(data_dir), HEEDFUL_MODELS_DIR=str(models_dir), HEEDFUL_MODEL_MAX_NEW_TOKENS="40")
    return env


def chat(env: dict[str, str], channel: str, *lines: str) -> str:
    done = subprocess.run(
        [*HEEDFUL, "chat", "--channel", channel], input="\n".join(lines) + "\n", env=env,
        capture_output=True, text=True, timeout=600, check=True,
    )
    return done.stdout


def test_piped_correction_applies_to_a_paraphrase_only_in_its_channel(tmp_path: Path, models_dir: Path) -> None:
    env = env_for(tmp_path / "data", models_dir)
    out = chat(env, "office", "What is the wifi password at the office?",
               "/fix The office wifi password is pelican-4417.", "whats the password for the office wifi?")
    before, learned, after = out.partition("Learned:")
    assert learned, out
    assert "pelican-4417" not in before
    assert "pelican-4417" in after.split("\n", 1)[1]  # the paraphrase's answer, after the acknowledgement

    # A restart of the same channel: an unrelated question gets no learned answer...
    unrelated = chat(env, "office", "What is the capital of France?", "/why")
    assert "pelican" not in unrelated and "route base" in unrelated
    # ...and another channel never heard of it.
    other = chat(env, "kitchen", "whats the password for the office wifi?")
    assert "pelican-4417" not in other


def test_acknowledged_correction_survives_kill_9(tmp_path: Path, models_dir: Path) -> None:
    env = env_for(tmp_path / "data", models_dir)
    with subprocess.Popen([*HEEDFUL, "chat", "--channel", "crash"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          env=env, text=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("Who signs the expense reports?\n/fix Expense reports are signed by Okonkwo.\n"
                         "tell me a very long story about ships\n")
        proc.stdin.flush()
        for line in proc.stdout:  # wait for the acknowledgement, then kill mid-way through the next turn
            if line.startswith("Learned:"):
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)

    listed = subprocess.run([*HEEDFUL, "learned", "crash", "--json"], env=env, capture_output=True, text=True,
                            check=True, timeout=120)
    data = json.loads(listed.stdout.strip().splitlines()[-1])
    assert [c["answer"] for c in data["corrections"]] == ["Expense reports are signed by Okonkwo."]
    again = chat(env, "crash", "who signs expense reports?")
    assert "Okonkwo" in again


def test_hostile_and_broken_input_through_the_console(tmp_path: Path, models_dir: Path) -> None:
    env = env_for(tmp_path / "data", models_dir)
    lines = ["", "   ", "x" * 100_000, "\x1b[2J\x00", "/fix", "/nonsense", "/persona tutor", "/learned"]
    out = chat(env, "hostile", *lines)
    assert "empty" in out and "too long" in out and "Usage: /fix" in out and "Unknown command" in out
    assert "Persona set to 'tutor'" in out and "Nothing learned" in out
    binary = subprocess.run([*HEEDFUL, "chat", "--channel", "bin"], input=b"\xff\xfe\x80 hi there\n", env=env,
                            capture_output=True, timeout=600)
    assert binary.returncode == 0, binary.stderr.decode()
    assert binary.stdout.strip()
