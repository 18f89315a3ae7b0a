"""LoRA versions exported in PEFT's format load in ``peft`` and compute what the engine computes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.generation.model_loader import load_model
from engine.nn.lora import LoraConfig, inject_lora, random_weights
from engine.nn.peft_format import save_peft
from engine.settings import ModelSettings

peft = pytest.importorskip("peft")


def test_an_exported_lora_version_gives_peft_the_same_logits(models_dir: Path, tmp_path: Path) -> None:
    config = LoraConfig(rank=4, alpha=8.0, top_layers=1)
    ours = load_model(ModelSettings(id="tiny:0"), models_dir).model.float().eval()
    inject_lora(ours, config)
    weights = {k: v * 3 + 0.01 for k, v in random_weights(ours, torch.Generator().manual_seed(3)).items()}
    directory = save_peft(weights, config, tmp_path / "v7", base_model="tiny:0")
    written = json.loads((directory / "adapter_config.json").read_text())
    assert written["r"] == 4 and written["peft_type"] == "LORA" and written["layers_to_transform"]

    base = load_model(ModelSettings(id="tiny:0"), models_dir).model.float().eval()
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        theirs = peft.PeftModel.from_pretrained(base, str(directory)).eval()
        expected = torch.func.functional_call(ours, weights, (ids,)).logits
        got = theirs(input_ids=ids).logits
    assert not torch.allclose(expected, plain, atol=1e-3)  # the LoRA version changes the model
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_heedful_lora_versions_export_writes_the_active_version(models_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from typer.testing import CliRunner

    from bots.cli import app
    from engine import ChannelKey
    from engine.nn.lora import weights_to_bytes
    from engine.store import Store

    config = LoraConfig(rank=4, alpha=8.0, top_layers=1)
    model = load_model(ModelSettings(id="tiny:0"), models_dir).model
    inject_lora(model, config)
    weights = random_weights(model, torch.Generator().manual_seed(5))
    key = ChannelKey("slack", "C1", space="T1")

    async def store_version() -> None:
        store = Store(tmp_path / "heedful.sqlite3")
        await store.open()
        await store.add_lora_version(key, weights_to_bytes(weights, config), {}, "active")
        await store.close()

    asyncio.run(store_version())
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    out = CliRunner().invoke(app, ["lora-versions", "slack:T1:C1", "--export", str(tmp_path / "x"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1])["version"] == 1
    assert (tmp_path / "x" / "adapter_model.safetensors").is_file()
    missing = CliRunner().invoke(app, ["lora-versions", "slack:T1:C1", "--export", str(tmp_path / "y"),
                                       "--version", "9"])
    assert missing.exit_code == 2
