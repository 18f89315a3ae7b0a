"""A channel's own encoder: the meta-learned metric's LoRA, trained further on its corrections.

The inner loop of the MAML-style scheme (docs/LEARNING.md). Every channel starts from the
meta-learned parameters — MiniLM's top layers with the metric's LoRA weights — and, once
it has enough corrections, takes a few Adam steps of the prototypical loss the metric was
meta-trained with, on episodes drawn from *its own* corrections::

    θ_channel = θ_meta − steps × Adam(∇ prototypical_loss(channel's support episodes))

Only the LoRA weights move (``top_layers`` × every linear map, rank ``r``: 221,184 numbers,
432 KB in fp16), so the per-channel state stays under 1 MB and thousands of channels fit
in one process. The frozen layers below are run once per text (``hidden_states``), so a
step costs only the top layers.

Threads: hidden states and serving embeddings run in the encoder's own thread (the one
that embeds every message); training runs in a worker thread on its own copy of the top
layers, so a channel's inner loop never delays other channels' messages.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..nn.encoder_top import EncoderTop, collate, hidden_states, linears
from ..nn.encoder_top import embed as embed_through
from ..nn.packed_linear import packed
from ..nn.protonet import prototypical_loss
from .metric import MetricEncoder

__all__ = ["EncoderAdaptConfig", "ChannelEncoder", "Tensors", "nbytes"]

Tensors = dict[str, torch.Tensor]
"""A channel's LoRA tensors, named like ``EncoderTop.lora_tensors``."""

_CHUNK = 16  # texts per background encoder call: a message waits behind at most one such call (a few ms)


@dataclass(frozen=True, slots=True)
class EncoderAdaptConfig:
    steps: int = 100            # inner-loop steps (chosen on the metric's validation domains)
    lr: float = 1e-4            # Adam; larger rates overfit a 5-shot channel within 100 steps
    max_way: int = 30           # answers per episode (a step's cost grows with it)
    max_shots: int = 4          # support corrections per answer and episode
    scale: float = 20.0         # the meta-training softmax temperature
    seed: int = 0


class ChannelEncoder:
    """Train and serve per-channel LoRA on top of a loaded ``MetricEncoder``."""

    def __init__(self, encoder: MetricEncoder) -> None:
        self.encoder = encoder
        self._serving: EncoderTop | None = None   # used only in the encoder thread
        self._template: EncoderTop | None = None  # copied by each training job

    # -- blocking pieces ----------------------------------------------------------------

    def _meta_stack(self) -> EncoderTop:
        """The top layers at the meta-learned point: unmerged weights + the metric's LoRA."""
        artifact = self.encoder.artifact
        bert = self.encoder.sentence_transformer[0].auto_model
        top = EncoderTop(bert, artifact.config)  # a copy of the top layers, whose weights have the LoRA weights merged
        with torch.no_grad():
            for i, layer in enumerate(top.layers):
                for j, (parent, name) in enumerate(linears(layer)):
                    base = getattr(parent, name).base
                    delta = artifact.tensors[f"{i}.{j}.B"].float() @ artifact.tensors[f"{i}.{j}.A"].float()
                    base.weight.sub_(delta.to(base.weight.dtype))
        top.load_lora_tensors(artifact.tensors)
        return top.eval()

    def hidden_states_blocking(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """The frozen states entering the first adapted layer (encoder thread, or a script: the same
        states from both, through the encoder's packed bfloat16 layers where it loaded them so)."""
        layers = len(self.encoder.sentence_transformer[0].auto_model.encoder.layer)
        first = layers - self.encoder.artifact.config.top_layers
        with packed():
            return hidden_states(self.encoder.sentence_transformer, list(texts), first)

    def meta_tensors(self) -> Tensors:
        """The shared starting point (what an un-adapted channel uses)."""
        return {k: v.float().clone() for k, v in self.encoder.artifact.tensors.items()}

    def train_blocking(self, states: Sequence[torch.Tensor], rows: np.ndarray,
                       config: EncoderAdaptConfig = EncoderAdaptConfig(),
                       should_stop: Callable[[], bool] = lambda: False) -> Tensors:
        """The inner loop on one channel's corrections (``rows``: answer slot of each state).

        ``should_stop`` is polled between steps (an engine stopping does not wait for the loop);
        raises ``InterruptedError`` when it says so. It may block a while first: the engine's holds
        each step while a message is being understood (``understanding/foreground.py``).
        """
        if self._template is None:
            self._template = self._meta_stack()
        top = copy.deepcopy(self._template)
        top.train()
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        answers = [np.flatnonzero(rows == a) for a in np.unique(rows)]
        answers = [ix for ix in answers if len(ix) >= 2]  # one of them is the episode's query
        if len(answers) < 2:
            raise ValueError("the inner loop needs two answers with two corrections each")
        params = [p for p in top.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=config.lr)
        for _ in range(config.steps):
            if should_stop():
                raise InterruptedError("channel adaptation stopped")
            way = rng.permutation(len(answers))[: config.max_way]
            support_ix: list[int] = []
            query_ix: list[int] = []
            shots = min(config.max_shots, min(len(answers[a]) for a in way) - 1)
            for a in way:
                pick = rng.permutation(answers[a])
                query_ix.append(pick[0])
                support_ix.extend(pick[1: 1 + shots])
            z = top(*collate([states[i] for i in [*support_ix, *query_ix]]))          # (N·K + N, D)
            n = len(way)
            support = z[: n * shots].reshape(n, shots, -1)
            loss, _ = prototypical_loss(support, z[n * shots:], torch.arange(n), config.scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return {k: v.to(torch.float16) for k, v in top.lora_tensors().items()}

    def embed_states_blocking(self, states: Sequence[torch.Tensor], tensors: Tensors) -> np.ndarray:
        """(n, D) unit vectors, in a channel's adapted space, of texts' hidden states (encoder thread)."""
        if self._serving is None:
            self._serving = self._meta_stack()
        self._serving.load_lora_tensors(tensors)
        return embed_through(self._serving, states)

    def embed_blocking(self, texts: Sequence[str], tensors: Tensors) -> np.ndarray:
        """(n, D) unit vectors of ``texts`` in a channel's adapted space (encoder thread)."""
        return self.embed_states_blocking(self.hidden_states_blocking(texts), tensors)

    # -- async: in the encoder thread, shared with every message's embedding -------------------

    async def embed(self, texts: Sequence[str], tensors: Tensors) -> np.ndarray:
        """A message's embedding in a channel's adapted space (foreground: a reply waits for it)."""
        return await self.encoder.run(self.embed_blocking, texts, tensors)

    async def embed_states(self, states: Sequence[torch.Tensor], tensors: Tensors) -> np.ndarray:
        """Training's embeddings of a channel's corrections: background work, in small calls, so that
        messages arriving meanwhile are embedded between them instead of after all of them."""
        parts = [await self.encoder.run(self.embed_states_blocking, states[i:i + _CHUNK], tensors, background=True)
                 for i in range(0, len(states), _CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    async def hidden_states(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Training's frozen states of a channel's corrections (background, in small calls)."""
        states: list[torch.Tensor] = []
        for i in range(0, len(texts), _CHUNK):
            states += await self.encoder.run(self.hidden_states_blocking, texts[i:i + _CHUNK], background=True)
        return states


def nbytes(tensors: Tensors) -> int:
    """Bytes of a channel's LoRA weights as held in memory."""
    return sum(t.numel() * t.element_size() for t in tensors.values())
