"""The `heedful` command's scriptable surface: --json prints one object on the last line."""

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bots.cli import app
from engine import ChannelKey
from engine.store import Store

runner = CliRunner()


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_config_json_redacts_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEEDFUL_DISCORD_TOKEN", "very-secret-token")
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 0
    data = last_json(result.output)
    assert data["data_dir"] == str(tmp_path) and data["discord"]["token"] == "**********"
    assert "very-secret-token" not in result.output


def test_config_reports_the_precisions_auto_chose(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.generation.compiled_decode import compiler_available
    from engine.nn.packed_linear import cpu_has_bf16, onednn_available

    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    auto = last_json(runner.invoke(app, ["config", "--json"]).output)["effective"]
    expected = "bfloat16" if cpu_has_bf16() else "float32"
    assert auto["encoder_matmul_dtype"] == expected and auto["matmul_dtype"] == expected
    assert auto["matmul_kernel"] == ("onednn" if onednn_available() else "blas")
    monkeypatch.setenv("HEEDFUL_ENCODER_MATMUL_DTYPE", "float32")
    monkeypatch.setenv("HEEDFUL_MODEL_MATMUL_DTYPE", "float32")
    monkeypatch.setenv("HEEDFUL_MODEL_MATMUL_KERNEL", "blas")
    effective = last_json(runner.invoke(app, ["config", "--json"]).output)["effective"]
    assert effective["encoder_matmul_dtype"] == "float32" and effective["matmul_kernel"] == "blas"
    for flag, step in (("true", "compiled" if compiler_available() else "eager"), ("false", "eager")):
        monkeypatch.setenv("HEEDFUL_MODEL_COMPILE_DECODE", flag)
        effective = last_json(runner.invoke(app, ["config", "--json"]).output)["effective"]
        assert effective["decode_step"] == step
        assert effective["decode_step_why"]  # why it stays eager, or when it compiles
    assert "compile_decode is off" in effective["decode_step_why"]


def test_bad_config_exits_2_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_MODEL_MAX_BATCH", "-3")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 2 and "model.max_batch" in result.output


async def seed(path: Path) -> None:
    store = Store(path)
    await store.open()
    await store.add_correction(ChannelKey("console", "ops", space="local"), question="q?", answer="a!", author_id="u",
                               embedding=np.zeros(3, dtype=np.float32), encoder="e", message_id=None)
    await store.close()


def test_learned_and_forget_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    asyncio.run(seed(tmp_path / "heedful.sqlite3"))  # the CLI runs its own event loop, so this test has none
    listed = last_json(runner.invoke(app, ["learned", "ops", "--json"]).output)
    assert listed["channel"] == "console:local:ops" and listed["corrections"][0]["answer"] == "a!"
    assert last_json(runner.invoke(app, ["forget", "console:local:ops", "--json"]).output)["forgotten"] == 1
    assert last_json(runner.invoke(app, ["learned", "ops", "--json"]).output)["corrections"] == []


def test_version_and_help() -> None:
    assert "version" in last_json(runner.invoke(app, ["version", "--json"]).output)
    assert "chat" in runner.invoke(app, ["--help"]).output


async def seed_lora_versions(path: Path) -> None:
    store = Store(path)
    await store.open()
    for _ in range(2):  # v1 is retired when v2 becomes active
        await store.add_lora_version(ChannelKey("console", "ops", space="local"), b"w", {"query_loss": 1.0}, "active")
    await store.close()


def test_lora_versions_json_and_the_deprecated_adapters_alias(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    asyncio.run(seed_lora_versions(tmp_path / "heedful.sqlite3"))
    listed = last_json(runner.invoke(app, ["lora-versions", "ops", "--json"]).output)
    assert [(r["version"], r["status"]) for r in listed["lora_versions"]] == [(2, "active"), (1, "retired")]
    assert listed["adapters"] == listed["lora_versions"]  # the old key, kept for one release
    old = runner.invoke(app, ["adapters", "ops", "--rollback", "--json"])  # the old command, kept for one release
    assert old.exit_code == 0 and "deprecated" in old.stderr and "lora-versions" in old.stderr
    rolled = last_json(old.stdout)
    assert rolled["active"] == 1 and rolled["lora_versions"][0]["status"] == "rolled_back"
    assert rolled["adapters"] == rolled["lora_versions"]
    assert runner.invoke(app, ["lora-versions", "elsewhere"]).output.strip() == "no LoRA versions"
    main_help = runner.invoke(app, ["--help"]).output
    assert "lora-versions" in main_help and "adapters" not in main_help  # the alias is hidden


def test_audit_review_and_per_user_export_and_delete(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The operator's commands against poisoning and for privacy, as a script would call them."""
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    key = ChannelKey("telegram", "-100", space="g")

    async def prepare() -> None:
        store = Store(tmp_path / "heedful.sqlite3")
        await store.open()
        await store.add_correction(key, question="wifi?", answer="quokka-5521", author_id="42", embedding=np.ones(4),
                                   encoder="e", message_id=None)
        await store.add_correction(key, question="door?", answer="7731", author_id="43", embedding=np.ones(4),
                                   encoder="e", message_id=None, pending=True)
        await store.close()

    asyncio.run(prepare())
    waiting = last_json(runner.invoke(app, ["review", "telegram:g:-100", "--json"]).output)
    assert [p["answer"] for p in waiting["pending"]] == ["7731"]
    decided = runner.invoke(app, ["review", "telegram:g:-100", "--approve", str(waiting["pending"][0]["correction_id"]),
                                  "--json"])
    assert decided.exit_code == 0 and last_json(decided.output)["pending"] == []
    assert runner.invoke(app, ["review", "telegram:g:-100", "--approve", "999"]).exit_code == 2
    exported = last_json(runner.invoke(app, ["user", "export", "telegram:42", "--json"]).output)
    assert [c["answer"] for c in exported["corrections"]] == ["quokka-5521"]
    deleted = last_json(runner.invoke(app, ["user", "delete", "telegram:42", "--json"]).output)
    assert deleted["deleted"]["corrections"] == 1
    assert runner.invoke(app, ["user", "delete", "no-platform"]).exit_code == 2
    undone = last_json(runner.invoke(app, ["forget", "telegram:g:-100", "--author", "43", "--json"]).output)
    assert undone["forgotten"] == 1
    entries = last_json(runner.invoke(app, ["audit", "telegram:g:-100", "--json"]).output)["entries"]
    assert [e["action"] for e in entries] == ["forget", "approve", "correction_pending"]
    assert last_json(runner.invoke(app, ["audit", "--author", "cli", "--json"]).output)["entries"][0]["action"] \
        == "forget"
    assert b"quokka" not in b"".join(p.read_bytes() for p in tmp_path.glob("heedful.sqlite3*"))
