"""Copy bias: help a small model copy a person's facts into its reply exactly.

The asker's related facts are in the prompt (docs/LEARNING.md, "The personal scope"), and the reply
is meant to repeat their values ("Your account number is IQ-2545."). Greedy decoding of a 135M model
often starts such a reply well and then writes a value of its own ("... is 12345678.") or drops part
of the told one ("... is 2545."): at the value's first token, a generic continuation (a digit, a
space) scores a little higher than the told one. Copy mechanisms (pointer-generator networks,
prompt-lookup decoding) take that evidence from the source text itself; this is their simplest,
training-free form, applied to one row's logits before sampling:

- **continuing a fact**: when the reply's last tokens equal tokens of a fact as the prompt shows it,
  the token that follows them in the fact gets a bonus of ``bonus`` logits; of all the places that
  match, those of the longest match (over all the facts) count, so "Your account number is"
  continues the account-number fact, not another fact's "is". Once the reply has said "Your account
  number is" it is completing the fact, and the told value is the continuation; once it has written
  "IQ-25" the next digit is the told one;
- **a fact said is done**: once the reply holds all of a fact's distinctive words (a code, a number,
  a name: words with a digit or a capital inside a sentence; else its last word), the fact biases
  nothing more, so that the bias never makes the reply repeat it.

A bonus in logits multiplies a token's odds by ``exp(bonus)``: it decides between close candidates
(a told code against an invented one) and does not override what the model is sure of. Rows without
sources are untouched, so their decoding is the model's alone. Pure functions on token ids; the model
worker calls ``apply`` (engine/generation/worker.py), the engine builds the sources
(``copy_source``) from the asker's facts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["CopySource", "apply", "bonuses", "continuations", "copy_source", "distinctive_words"]

Tokens = tuple[int, ...]

_LONGEST = 16  # tokens of the reply's end compared with a fact: a longer match changes no continuation
_EDGE = "\"'`.,;:!?()[]{}<>«»“”‘’"  # punctuation trimmed off a word's ends
_SELF = {"i", "i'm", "i've", "i'll", "i'd", "i’m", "i’ve", "i’ll", "i’d"}  # the capital of "I" is no name


@dataclass(frozen=True, slots=True)
class CopySource:
    """One fact the reply may copy, as token ids.

    ``spans``: the fact each way the prompt may show it (the person's words, the bot's restatement,
    with and without a leading space: they tokenise differently). ``keys``: its distinctive words,
    each a group of tokenisations (with and without a leading space); a key is in the reply when any
    of its group is, and the fact is done when all its keys are.
    """

    spans: tuple[Tokens, ...]
    keys: tuple[tuple[Tokens, ...], ...]


def distinctive_words(text: str) -> list[str]:
    """The words of ``text`` a reply must copy exactly to convey it: those with a digit ("KD-4821",
    "42"), a capital after their first letter ("IQ", "iPhone"), or a capital at all when not the
    text's first word ("Bramblewick", "Pro"; the pronoun "I" aside). When none, the last word (what
    a reply that carries the fact reaches last), so that every fact has a key. Scripts without case
    have only that."""
    words = [w.strip(_EDGE) for w in text.split()]
    words = [w for w in words if w]
    found = [w for i, w in enumerate(words)
             if any(c.isdigit() for c in w) or any(c.isupper() for c in w[1:])
             or (i > 0 and w[0].isupper() and w.casefold() not in _SELF)]
    return list(dict.fromkeys(found)) or words[-1:]


def copy_source(texts: Sequence[str], encode: Callable[[str], list[int]]) -> CopySource:
    """The copy source of one fact: ``texts`` are the ways the prompt shows it (the first one as the
    person told it), ``encode`` a text's token ids (no special tokens)."""

    def variants(text: str) -> Iterable[Tokens]:
        return (tuple(encode(t)) for t in (text, " " + text))

    spans = tuple(dict.fromkeys(s for text in texts if text for s in variants(text) if s))
    words = distinctive_words(texts[0]) if texts else []
    keys = tuple(group for group in (tuple(dict.fromkeys(k for k in variants(w) if k)) for w in words) if group)
    return CopySource(spans, keys)


def _contains(tokens: Sequence[int], part: Tokens) -> bool:
    n = len(part)
    return any(tuple(tokens[i : i + n]) == part for i in range(len(tokens) - n + 1))


def continuations(generated: Sequence[int], spans: Iterable[Tokens]) -> set[int]:
    """The tokens that continue the longest match between the end of ``generated`` and a place in
    ``spans`` (a place followed by another token of its span). Empty when no token matches."""
    tail = list(generated[-_LONGEST:])
    best, found = 0, set[int]()
    for span in spans:
        for end in range(len(span) - 1):  # span[end] matched the last generated token; span[end + 1] follows
            n = 0
            while n < len(tail) and n <= end and span[end - n] == tail[-1 - n]:
                n += 1
            if n and n >= best:
                if n > best:
                    best, found = n, set()
                found.add(span[end + 1])
    return found


def bonuses(generated: Sequence[int], sources: Sequence[CopySource], bonus: float) -> dict[int, float]:
    """Token id -> logit bonus for the next token of a reply that has ``generated`` so far: the
    continuation of the longest match over the facts still to say (those whose distinctive words
    are not all in the reply yet) gets ``bonus``."""
    if not bonus:
        return {}
    spans = [span for source in sources
             if not all(any(_contains(generated, k) for k in group) for group in source.keys)
             for span in source.spans]
    return dict.fromkeys(continuations(generated, spans), bonus)


def apply(logits: torch.Tensor, generated: Sequence[int], sources: Sequence[CopySource], bonus: float) -> None:
    """Add the copy bias to ``logits``, one row's scores over the vocabulary, in place. No sources or
    no bonus: unchanged."""
    if not sources or not bonus:
        return
    add = bonuses(generated, sources, bonus)
    if add:
        logits[torch.tensor(list(add), device=logits.device)] += bonus
