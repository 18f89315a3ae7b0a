"""The fast GGUF conversion writes the very checkpoint transformers' own conversion writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.generation.gguf_convert import Unsupported, convert_llama_gguf
from engine.generation.model_loader import convert_with_transformers, embedded_gguf_path

pytestmark = pytest.mark.slow  # transformers' conversion, the reference, takes ~17 s


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    convert_with_transformers(embedded_gguf_path(), out)
    return out


def test_the_fast_conversion_matches_transformers_tensor_for_tensor(reference: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    convert_llama_gguf(embedded_gguf_path(), tmp_path)
    ours, theirs = load_file(tmp_path / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name  # q/k rows un-permuted exactly as transformers does
    config, expected = (json.loads((d / "config.json").read_text()) for d in (tmp_path, reference))
    expected.pop("_model_name_or_path", None)  # the file's display name: cosmetic
    assert config == expected
    assert json.loads((tmp_path / "generation_config.json").read_text()) == \
        json.loads((reference / "generation_config.json").read_text())
    mine, real = AutoTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(reference)
    for text in ("Hello world! Où est la gare? 😀 12345", "  two spaces\n\ttab <|im_start|>user\n", "", "ÿ\x7f"):
        assert mine.encode(text) == real.encode(text)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert mine.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        real.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert (mine.bos_token, mine.eos_token, mine.pad_token) == (real.bos_token, real.eos_token, real.pad_token)


def test_a_file_that_is_not_a_llama_gguf_is_left_to_transformers(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(Unsupported):
        convert_llama_gguf(junk, tmp_path / "out")


def test_a_fresh_install_serves_from_memory_and_writes_the_cache_behind(tmp_path: Path) -> None:
    """A fresh install reads the GGUF into memory and serves from it; the cache written afterwards
    (while the model is being changed for serving) holds the weights as read, and a later start loads
    the same model from it."""
    from engine.generation.direct_forward import DirectForward
    from engine.generation.model_loader import load_model, prepare_model
    from engine.settings import ModelSettings

    settings = ModelSettings()
    prepared = prepare_model(settings, tmp_path)
    assert prepared is not None and not (tmp_path / "smollm2-135m-instruct").exists()  # nothing written yet
    served = load_model(settings, tmp_path, prepared)
    assert served.model is prepared.model and served.caching is not None
    DirectForward.build(served.model, bf16=served.matmul_dtype == "bfloat16")  # fuses and unpacks layers meanwhile
    served.caching.join(120)
    assert not served.caching.is_alive()
    written = load_file(tmp_path / "smollm2-135m-instruct" / "model.safetensors")
    assert written.keys() <= prepared.state.keys()
    for name, tensor in written.items():
        assert torch.equal(tensor, prepared.state[name]), name
    assert prepare_model(settings, tmp_path) is None  # cached now: the next start loads it
    again = load_model(settings, tmp_path)
    assert again.caching is None
    loaded = again.model.state_dict()
    for name, tensor in prepared.state.items():
        assert torch.equal(loaded[name], tensor), name
    text = "Hello world! Où est la gare? <|im_start|>user\n"
    assert again.tokenizer.encode(text) == served.tokenizer.encode(text)
