"""heedful_vllm without vLLM: served names, the standard-library PEFT writer, and the resolver's
store reading, against a real store holding a real LoRA version."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine import ChannelKey
from engine.generation.model_loader import load_model
from engine.nn.lora import LoraConfig, inject_lora, random_weights, weights_to_bytes
from engine.nn.peft_format import save_peft
from engine.settings import ModelSettings
from engine.store import Store
from heedful_vllm.exports import LoraExports, default_cache_dir
from heedful_vllm.names import directory_name, lora_name, parse_lora_name
from heedful_vllm.peft import write_peft
from heedful_vllm.store import store_location

SCOPES = [
    ("console", "", "general"),
    ("discord", "1234567", "89"),
    ("slack", "T1", "C1"),
    ("console", "a:b", "c/../d@v3 e"),  # what a console channel may be called
    ("telegram", "", "-100123"),
    ("console", "", "ünïcödé 频道"),
]


@pytest.mark.parametrize("scope", SCOPES)
def test_a_served_name_parses_back_to_its_scope_and_version(scope: tuple[str, str, str]) -> None:
    name = lora_name(*scope, 12)
    assert parse_lora_name(name) == (*scope, 12)
    assert name.endswith("@v12") and name.count("@") == 1 and "/" not in name and " " not in name
    assert name.isascii() and directory_name(name) == name


def test_the_served_name_of_a_plain_scope_reads_like_the_scope() -> None:
    assert lora_name("slack", "T1", "C1", 3) == "slack:T1:C1@v3"
    assert lora_name("console", "", "general", 1) == "console::general@v1"


@pytest.mark.parametrize("name", [
    "embedded:smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "slack:T1:C1", "slack:T1:C1@v0",
    "slack:T1:C1@v01", "slack:T1:C1@v-1", "slack:T1:C1@v1x", "slack:T1@v1", "a:b:c:d@v1", "slack:T1:C%3a1@v1",
    "slack:T1:C 1@v1", "slack:T1:C%FF@v1", "slack:T1:C1@v١", "",
])
def test_other_names_are_not_heedfuls(name: str) -> None:
    assert parse_lora_name(name) is None


def test_very_long_names_get_a_short_directory() -> None:
    name = lora_name("console", "", "x" * 300, 1)
    assert len(directory_name(name)) < 100 and directory_name(name) == directory_name(name)
    with pytest.raises(ValueError):
        lora_name("slack", "T1", "C1", 0)


@pytest.fixture(scope="module")
def version(models_dir: Path) -> tuple[dict[str, torch.Tensor], LoraConfig, bytes]:
    """A LoRA version of the tiny model, as the consolidator stores one."""
    config = LoraConfig(rank=4, alpha=8.0, top_layers=2)
    model = load_model(ModelSettings(id="tiny:0"), models_dir).model
    inject_lora(model, config)
    weights = {k: v * 3 + 0.01 for k, v in random_weights(model, torch.Generator().manual_seed(7)).items()}
    return weights, config, weights_to_bytes(weights, config, {"model": "tiny:0"})


def test_the_standard_library_writer_writes_what_save_peft_writes(
    version: tuple[dict[str, torch.Tensor], LoraConfig, bytes], tmp_path: Path
) -> None:
    weights, config, blob = version
    ours = write_peft(blob, tmp_path / "stdlib", base_model="base")
    reference = save_peft(weights, config, tmp_path / "torch", base_model="base")
    assert json.loads((ours / "adapter_config.json").read_text()) == json.loads(
        (reference / "adapter_config.json").read_text())
    got, expected = load_file(ours / "adapter_model.safetensors"), load_file(reference / "adapter_model.safetensors")
    assert got.keys() == expected.keys() and len(got) == 2 * 2 * 2  # 2 layers x q, v x A, B
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stdlib", "torch"]  # no staging left behind


def test_a_version_that_is_not_heedfuls_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save

    with pytest.raises(ValueError, match="lora_config"):
        write_peft(save({"x": torch.zeros(2)}), tmp_path / "x", base_model="base")
    with pytest.raises(ValueError):
        write_peft(b"\x01", tmp_path / "y", base_model="base")


async def test_the_resolver_exports_a_stored_version_by_its_name(
    version: tuple[dict[str, torch.Tensor], LoraConfig, bytes], store_location: Path | str, tmp_path: Path
) -> None:
    weights, _, blob = version
    key = ChannelKey("slack", "C1", space="T1")
    store = Store(store_location)
    await store.open()
    try:
        assert await store.add_lora_version(key, blob, {}, "rejected") == 1
        assert await store.add_lora_version(key, blob, {}, "active") == 2
        await store.add_lora_version(ChannelKey("slack", "C2", space="T1"), None, {}, "rejected")
    finally:
        await store.close()

    exports = LoraExports(str(store_location), tmp_path / "cache")
    found = await exports.path_for("slack:T1:C1@v2", base_model="/models/base")
    assert found == tmp_path / "cache" / "slack:T1:C1@v2"
    assert json.loads((found / "adapter_config.json").read_text())["base_model_name_or_path"] == "/models/base"
    tensors = load_file(found / "adapter_model.safetensors")
    module = next(iter(weights)).rpartition(".")[0]
    assert torch.equal(tensors[f"base_model.model.{module}.lora_A.weight"], weights[f"{module}.lora_A"])
    assert await exports.path_for("slack:T1:C1@v1", base_model="b") is not None  # any stored version, by name
    for missing in ("slack:T1:C1@v3", "slack:T1:C2@v1", "slack:T9:C1@v1", "base-model"):
        assert await exports.path_for(missing, base_model="b") is None, missing

    # Written once: the store is not read again for a name already exported.
    exports.location = str(tmp_path / "gone.sqlite3")
    assert await exports.path_for("slack:T1:C1@v2", base_model="b") == found


async def test_two_requests_for_one_name_write_it_once(
    version: tuple[dict[str, torch.Tensor], LoraConfig, bytes], tmp_path: Path
) -> None:
    store = Store(tmp_path / "heedful.sqlite3")
    await store.open()
    await store.add_lora_version(ChannelKey("console", "general"), version[2], {}, "active")
    await store.close()
    exports = LoraExports(str(tmp_path / "heedful.sqlite3"), tmp_path / "cache")
    paths = await asyncio.gather(*(exports.path_for("console::general@v1", base_model="b") for _ in range(4)))
    assert len(set(paths)) == 1 and sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["console::general@v1"]


async def test_a_missing_sqlite_store_is_an_error_not_a_new_empty_file(tmp_path: Path) -> None:
    exports = LoraExports(str(tmp_path / "nowhere.sqlite3"), tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="HEEDFUL_STORE_URL"):
        await exports.path_for("console::general@v1", base_model="b")
    assert not (tmp_path / "nowhere.sqlite3").exists()


def test_the_store_and_cache_come_from_heedfuls_environment(tmp_path: Path) -> None:
    url = "postgresql://heedful:secret@db:5432/heedful"
    assert store_location({"HEEDFUL_STORE_URL": url, "HEEDFUL_DATA_DIR": "/x"}) == url
    assert store_location({"HEEDFUL_DATA_DIR": "/srv/heedful"}) == "/srv/heedful/heedful.sqlite3"
    assert store_location({"XDG_DATA_HOME": "/home/u/.data"}) == "/home/u/.data/heedful/heedful.sqlite3"
    assert default_cache_dir({"HEEDFUL_VLLM_LORA_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert default_cache_dir({}).name == "heedful-vllm-loras"


def test_the_plugin_is_registered_for_vllm() -> None:
    from importlib.metadata import entry_points

    found = [e for e in entry_points(group="vllm.general_plugins") if e.name == "heedful_lora_resolver"]
    assert [e.value for e in found] == ["heedful_vllm.resolver:register"]
