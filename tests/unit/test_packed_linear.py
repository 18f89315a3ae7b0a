"""Linear layers multiplied by oneDNN (engine/nn/packed_linear.py): packed bfloat16 in the encoder and the
verifier within a stated tolerance of float32, the same in the encoder's thread and in scripts, float32 on
request; oneDNN's float32 product (the model worker's, without bfloat16) within float rounding of torch's
on the very same weights; copies that are made to change compute with torch's product."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engine.learning.channel_encoder import ChannelEncoder
from engine.learning.metric import DEFAULT_ARTIFACT, MetricArtifact, MetricEncoder
from engine.learning.verifier import DEFAULT_VERIFIER, Verifier, VerifierArtifact
from engine.nn.packed_linear import cpu_has_bf16, onednn_available, pack_linears, packed, packed_weight
from engine.settings import EncoderSettings
from engine.understanding.encoder import Encoder

TEXTS = ["What time does the Berlin office open on Saturdays?", "is the berlin office open on sunday",
         "how do I reset my password", "book a room for thursday at 4", "¿Dónde está la estación?", "ok"]
QUESTIONS = ["When does the Berlin office open on Saturday?", "what are the opening hours in Berlin",
             "I forgot my password", "reserve a meeting room tomorrow", "where is the train station", "thanks"]

needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16 (AMX / AVX-512 BF16)")


needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


def _encoder(dtype: str) -> Encoder:
    encoder = Encoder(EncoderSettings(matmul_dtype=dtype))  # type: ignore[arg-type]
    encoder.load()
    return encoder


def test_float32_on_request_is_the_plain_encoder() -> None:
    encoder = _encoder("float32")
    assert encoder.matmul_dtype == "float32"
    assert not any(packed_weight(m) is not None for m in encoder.sentence_transformer[0].auto_model.modules())


@needs_onednn
def test_onednn_float32_uses_the_weights_themselves_within_float_rounding() -> None:
    """What the model worker decodes with by default where the CPU has no bfloat16."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Linear(96, 32, bias=False))
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        ref = model(x)
    assert pack_linears(model, torch.float32) == 2
    assert all(packed_weight(m).data_ptr() == m.weight.data_ptr() for m in model)  # type: ignore[union-attr]
    with torch.no_grad(), packed():
        ours = model(x)
    # Tolerance: the same float32 arithmetic summed in another order.
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0) and ours.dtype == torch.float32


@needs_onednn
def test_onednn_float32_layers_train_with_torchs_product() -> None:
    layer = torch.nn.Linear(16, 8)
    pack_linears(torch.nn.Sequential(layer), torch.float32)
    x = torch.randn(3, 16, requires_grad=True)
    with packed():
        layer(x).sum().backward()  # with gradients: torch's own product, which has a backward
    assert x.grad is not None and torch.allclose(x.grad, layer.weight.sum(0).expand(3, 16))


@needs_bf16
def test_bfloat16_vectors_and_probabilities_stay_within_tolerance() -> None:
    exact, fast = _encoder("float32"), _encoder("auto")
    assert fast.matmul_dtype == "bfloat16"
    ref, low = exact.encode_blocking(TEXTS), fast.encode_blocking(TEXTS)
    # Tolerance: cosine >= 0.9999 to the float32 vector (measured: >= 0.99998 on 100 CLINC150 texts), so
    # metric scores move by ~1e-4, far inside any threshold's calibration noise.
    assert float((ref * low).sum(axis=1).min()) >= 0.9999
    artifact = VerifierArtifact.load(DEFAULT_VERIFIER)
    p_ref = Verifier(artifact, exact).probabilities_blocking(TEXTS, QUESTIONS)
    fast_verifier = Verifier(artifact, fast)
    fast_verifier.load()
    assert fast_verifier.matmul_dtype == "bfloat16"
    p_low = fast_verifier.probabilities_blocking(TEXTS, QUESTIONS)
    # Tolerance: probabilities within 0.02 (measured: max 0.012, mean 0.0007 on 200 CLINC150 pairs).
    assert float(np.abs(p_low - p_ref).max()) < 0.02


@needs_bf16
async def test_the_encoder_thread_and_scripts_get_the_same_vectors() -> None:
    encoder = _encoder("auto")
    try:
        threaded = await encoder.run(encoder.encode_blocking, TEXTS)
        assert np.array_equal(threaded, encoder.encode_blocking(TEXTS))
    finally:
        await encoder.stop()


@needs_bf16
async def test_a_channels_training_states_are_the_same_in_the_encoder_thread_and_in_scripts() -> None:
    metric = MetricEncoder(EncoderSettings(), MetricArtifact.load(DEFAULT_ARTIFACT))
    metric.load()
    channel = ChannelEncoder(metric)
    try:
        threaded = await channel.hidden_states(TEXTS)
        direct = channel.hidden_states_blocking(TEXTS)
        assert all(torch.equal(a, b) for a, b in zip(threaded, direct, strict=True))
    finally:
        await metric.stop()


def test_a_copy_of_a_packed_layer_is_a_plain_float32_layer() -> None:
    layer = torch.nn.Linear(16, 8)
    try:
        pack_linears(torch.nn.Sequential(layer))
    except RuntimeError:
        pytest.skip("this torch build lacks the oneDNN bfloat16 ops")
    assert packed_weight(layer) is not None
    clone = copy.deepcopy(layer)
    assert type(clone) is torch.nn.Linear and packed_weight(clone) is None
    assert torch.equal(clone.weight, layer.weight) and clone.weight is not layer.weight
    with torch.no_grad():
        clone.weight.mul_(2.0)  # a copy changes (a LoRA merge): it computes with its own new weights
        x = torch.randn(3, 16)
        with packed():
            assert torch.allclose(clone(x), torch.nn.functional.linear(x, clone.weight, clone.bias))


def test_packing_adds_no_parameter_or_state() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 4, bias=False))
    before = {name: t.clone() for name, t in model.state_dict().items()}
    try:
        pack_linears(model)
    except RuntimeError:
        pytest.skip("this torch build lacks the oneDNN bfloat16 ops")
    after = model.state_dict()
    assert list(after) == list(before)  # the model's own names only: no second entry for the packed source
    assert all(torch.equal(after[name], t) for name, t in before.items())
    assert len(list(model.parameters())) == 3 and len(list(model.named_parameters(remove_duplicate=False))) == 3
