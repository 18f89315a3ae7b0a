"""Chat exchanges as token batches: the prompt exactly as the engine renders it, the answer to learn.

A ``Batch`` holds right-padded token ids and the flat positions whose next token is an
answer token (``pos``, ``tgt``): the loss is taken only there. ``greedy_replies``
decodes several rows at once, each under its own LoRA weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..chat_template import plain_ids, render_chat
from .lora import gather_rows, stack_weights, use_rows

__all__ = ["Example", "Batch", "chat_prompt_ids", "encode", "encode_ids", "greedy_replies"]


@dataclass(frozen=True)
class Example:
    """One exchange: a question under a system prompt, and the answer to learn (or keep)."""

    system: str | None
    question: str
    answer: str
    label: str
    code: str = ""  # the invented code inside ``answer`` ("" for unrelated examples)


def _messages(system: str | None, question: str) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": question}]


def chat_prompt_ids(tokenizer: Any, system: str | None, question: str) -> list[int]:
    """Token ids of the prompt exactly as the engine renders a one-message conversation (text as plain text)."""
    return render_chat(tokenizer, _messages(system, question), add_generation_prompt=True)


def _answer_ids(tokenizer: Any, system: str | None, question: str, answer: str, prompt: list[int]) -> list[int]:
    """The answer's tokens as the template writes them, up to and including the end-of-turn token."""
    exchange = [*_messages(system, question), {"role": "assistant", "content": answer}]
    full = render_chat(tokenizer, exchange, add_generation_prompt=False)
    if full[: len(prompt)] != prompt:  # templates that re-render the prompt: fall back to plain tokens
        return [*plain_ids(tokenizer, answer), tokenizer.eos_token_id]
    tail = full[len(prompt) :]
    while tail and not tokenizer.decode(tail[-1:]).strip():  # trailing newline after <|im_end|>
        tail = tail[:-1]
    return tail


@dataclass
class Batch:
    """Right-padded token sequences and where their loss is taken.

    ``pos`` indexes the flattened (batch * time) logits that predict ``tgt``: the loss
    covers the answer tokens only, never the prompt.
    """

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long, 1 = real token
    pos: torch.Tensor  # (N,) long, flat index b * T + t of the logit predicting tgt
    tgt: torch.Tensor  # (N,) long
    row: torch.Tensor  # (N,) long, which sequence each target belongs to

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])


def encode(tokenizer: Any, examples: Sequence[Example], max_answer_tokens: int = 48) -> Batch:
    """Tokenise exchanges into one right-padded batch (loss on answer tokens only)."""
    assert examples, "cannot encode an empty set of examples"
    pairs = []
    for ex in examples:
        prompt = chat_prompt_ids(tokenizer, ex.system, ex.question)
        pairs.append((prompt, _answer_ids(tokenizer, ex.system, ex.question, ex.answer, prompt)[:max_answer_tokens]))
    return encode_ids(tokenizer, pairs)


def encode_ids(tokenizer: Any, pairs: Sequence[tuple[list[int], list[int]]]) -> Batch:
    """(prompt ids, answer ids) pairs into one right-padded batch (loss on answer ids only)."""
    assert pairs and all(answer for _, answer in pairs), "every sequence needs at least one answer token"
    seqs = [prompt + answer for prompt, answer in pairs]
    spans = [(len(prompt), len(prompt) + len(answer)) for prompt, answer in pairs]
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    pos, tgt, row = [], [], []
    for b, (s, (start, end)) in enumerate(zip(seqs, spans, strict=True)):
        ids[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = 1
        for t in range(start, end):
            pos.append(b * width + t - 1)  # the logit at t-1 predicts token t
            tgt.append(s[t])
            row.append(b)
    return Batch(ids, mask, torch.tensor(pos, dtype=torch.long), torch.tensor(tgt, dtype=torch.long),
                 torch.tensor(row, dtype=torch.long))


@torch.no_grad()
def greedy_replies(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[tuple[str | None, str]],
    loras: Sequence[dict[str, torch.Tensor] | None] | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 16,
    return_ids: bool = False,
) -> list[Any]:
    """Greedy replies to (system, question) prompts; row i uses ``loras[i]`` (None: base model).

    Texts, or with ``return_ids`` the generated token ids (up to and including an end token).

    LoRA weights are applied through the per-row gather of ``lora.use_rows`` (no weights are
    modified). The model must already carry LoRA layers when LoRA weights are given.
    """

    out: list[str] = []
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for lo in range(0, len(prompts), batch_size):
        chunk = prompts[lo : lo + batch_size]
        seqs = [chat_prompt_ids(tokenizer, system, q) for system, q in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, s in enumerate(seqs):  # left padding: every row's next token is at the end
            ids[b, width - len(s) :] = torch.tensor(s)
            mask[b, width - len(s) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        kwargs = dict(attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        rows = loras[lo : lo + batch_size] if loras is not None else None
        if rows is not None and any(a is not None for a in rows):
            distinct: list[dict[str, torch.Tensor]] = []
            index = []
            for a in rows:
                if a is None:
                    index.append(0)
                else:
                    match = next((i for i, d in enumerate(distinct) if d is a), None)
                    if match is None:
                        distinct.append(a)
                        match = len(distinct) - 1
                    index.append(match + 1)
            with use_rows(model, gather_rows(stack_weights(model, distinct), torch.tensor(index, device=device))):
                gen = model.generate(ids, **kwargs)
        else:
            gen = model.generate(ids, **kwargs)
        if return_ids:
            ends = {tokenizer.eos_token_id, pad}
            for g in gen:
                ids_ = g[width:].tolist()
                cut = next((i + 1 for i, t in enumerate(ids_) if t in ends), len(ids_))
                out.append(ids_[:cut])
        else:
            out += [tokenizer.decode(g[width:], skip_special_tokens=True).strip() for g in gen]
    return out

