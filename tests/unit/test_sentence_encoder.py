"""The embedded encoder without sentence-transformers: the same vectors, the same tokens, the same
hidden states as ``SentenceTransformer`` gives, and an engine start that never imports it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.nn.encoder_top import hidden_states, load_encoder
from engine.nn.pair_encoder import load_bert
from engine.nn.sentence_encoder import SentenceEncoder, layout, load_sentence_encoder
from engine.understanding.encoder import embedded_encoder_path

REPO = Path(__file__).resolve().parents[2]

TEXTS = [
    "",
    "hello",
    "What time do you open on Saturdays?",
    "héllo wörld 🤖🎉 — naïve café, 日本語のテキスト, Ελληνικά, עברית",
    "where is the glass recycling bin " * 60,  # ~400 tokens: cut at max_seq_length
    "a",
    "same",
    "size",  # equal lengths: the order within a length must not matter either
    "   spaced   out   ",
    "UPPER case Mixed",
    "x" * 3000,
    "line one\nline two\ttabbed",
]


@pytest.fixture(scope="module")
def reference() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedded_encoder_path()), device="cpu")


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(embedded_encoder_path())


@pytest.mark.parametrize("batch_size", [1, 3, 5, 64])
@pytest.mark.parametrize("count", [1, 2, len(TEXTS), 3 * len(TEXTS)])
def test_the_vectors_are_sentence_transformers_own(reference: Any, encoder: SentenceEncoder,
                                                   batch_size: int, count: int) -> None:
    texts = (TEXTS * 3)[:count]
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=batch_size)
    got = encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=batch_size)
    assert got.dtype == np.float32 and got.shape == expected.shape == (count, 384)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_other_encode_forms_match(reference: Any, encoder: SentenceEncoder) -> None:
    one = encoder.encode("one string")
    assert one.shape == (384,)
    np.testing.assert_allclose(one, reference.encode("one string"), rtol=0, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(TEXTS), reference.encode(TEXTS), rtol=0, atol=1e-6)  # the defaults
    tensor = encoder.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor)
    torch.testing.assert_close(tensor, reference.encode(TEXTS, convert_to_tensor=True), rtol=0, atol=1e-6)
    assert encoder.encode([], normalize_embeddings=True).shape == reference.encode([]).shape == (0,)
    with pytest.raises(ValueError):
        encoder.encode(TEXTS, batch_size=0)


def test_the_model_and_its_tokens_match(reference: Any, encoder: SentenceEncoder) -> None:
    assert encoder.get_sentence_embedding_dimension() == reference.get_embedding_dimension() == 384
    assert encoder.max_seq_length == reference.max_seq_length == 256
    assert type(encoder.tokenizer) is type(reference.tokenizer)
    assert type(encoder[0].auto_model) is type(reference[0].auto_model)
    assert not encoder[0].auto_model.training
    long = TEXTS[4]
    ours = encoder.tokenizer([long], truncation=True, max_length=encoder.max_seq_length)["input_ids"][0]
    theirs = reference.tokenizer([long], truncation=True, max_length=reference.max_seq_length)["input_ids"][0]
    assert ours == theirs and len(ours) == 256
    for name, tensor in reference[0].auto_model.state_dict().items():
        assert torch.equal(encoder[0].auto_model.state_dict()[name], tensor), name


def test_hidden_states_are_the_same_with_either_loader(reference: Any, encoder: SentenceEncoder) -> None:
    ours = hidden_states(encoder, TEXTS, 4)
    theirs = hidden_states(reference, TEXTS, 4)
    assert len(ours) == len(theirs) == len(TEXTS)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert max(s.shape[0] for s in ours) == 256  # the long texts, truncated


def test_the_engine_loaders_use_it() -> None:
    assert isinstance(load_encoder(), SentenceEncoder)
    bert, tokenizer = load_bert()
    assert type(bert).__name__ == "BertModel" and tokenizer.model_max_length == 256


def _copy_config(tmp_path: Path) -> Path:
    """The embedded encoder's configuration files (no weights: ``layout`` reads JSON only)."""
    source = embedded_encoder_path()
    target = tmp_path / "model"
    (target / "1_Pooling").mkdir(parents=True)
    for name in ("modules.json", "sentence_bert_config.json", "config.json", "config_sentence_transformers.json",
                 "1_Pooling/config.json"):
        (target / name).write_text((source / name).read_text())
    return target


def _edit(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_only_the_known_layout_is_loaded_without_sentence_transformers(tmp_path: Path) -> None:
    assert layout(embedded_encoder_path()) is not None
    assert layout(_copy_config(tmp_path / "same")) is not None
    assert layout("sentence-transformers/all-MiniLM-L6-v2") is None  # a hub id
    assert layout(tmp_path / "missing") is None

    pooling = _copy_config(tmp_path / "max")
    _edit(pooling / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    prompts = _copy_config(tmp_path / "prompts")
    _edit(prompts / "config_sentence_transformers.json", prompts={"query": "query: "}, default_prompt_name="query")
    lower = _copy_config(tmp_path / "lower")
    _edit(lower / "sentence_bert_config.json", do_lower_case=True)
    mpnet = _copy_config(tmp_path / "mpnet")
    _edit(mpnet / "config.json", model_type="mpnet")
    dense = _copy_config(tmp_path / "dense")
    modules = json.loads((dense / "modules.json").read_text())
    (dense / "modules.json").write_text(json.dumps([*modules, {"idx": 3, "name": "3", "path": "3_Dense",
                                                               "type": "sentence_transformers.models.Dense"}]))
    for other in (pooling, prompts, lower, mpnet, dense):
        assert layout(other) is None, other.name


def _with_pooling(tmp_path: Path, pooling: dict[str, Any]) -> Path:
    """The embedded encoder (linked) with another Pooling config."""
    folder = tmp_path / "model"
    folder.mkdir()
    for item in embedded_encoder_path().iterdir():
        if item.name != "1_Pooling":
            (folder / item.name).symlink_to(item)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384, **pooling}))
    return folder


def test_another_layout_falls_back_to_sentence_transformers(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    folder = _with_pooling(tmp_path, {"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True})
    model = load_sentence_encoder(str(folder))
    assert isinstance(model, SentenceTransformer)
    assert model.encode(["hello"]).shape == (1, 384)
    assert isinstance(load_sentence_encoder(str(embedded_encoder_path())), SentenceEncoder)


def test_cls_pooling_matches_too(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    folder = _with_pooling(tmp_path, {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    ours = load_sentence_encoder(str(folder))
    assert isinstance(ours, SentenceEncoder)
    theirs = SentenceTransformer(str(folder), device="cpu")
    np.testing.assert_allclose(ours.encode(TEXTS, batch_size=5), theirs.encode(TEXTS, batch_size=5), rtol=0, atol=1e-6)


def test_starting_the_encoder_imports_no_sentence_transformers() -> None:
    script = (
        "import sys\n"
        "from engine.offline import offline_environment\n"
        "offline_environment()\n"
        "from engine.engine import _import_model_libraries\n"
        "from engine.settings import EncoderSettings\n"
        "from engine.understanding.encoder import Encoder\n"
        "_import_model_libraries()\n"
        "encoder = Encoder(EncoderSettings())\n"
        "encoder.load()\n"
        "assert encoder.encode_blocking(['hello']).shape == (1, encoder.dimension)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sentence_transformers', 'sklearn')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
