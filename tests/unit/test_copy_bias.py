"""Copy bias (engine/generation/copy_bias.py): a reply repeating a fact is nudged to complete it; rows
and requests without facts are untouched."""

from __future__ import annotations

import torch

from engine.generation.copy_bias import CopySource, apply, bonuses, continuations, copy_source, distinctive_words

# A toy tokenizer: one token per word, a leading space making a different token (as BPE does).
VOCAB: dict[str, int] = {}


def encode(text: str) -> list[int]:
    out = []
    for i, word in enumerate(text.split(" ")):
        if word:
            piece = word if i == 0 else " " + word
            out.append(VOCAB.setdefault(piece, len(VOCAB)))
    return out


def tok(piece: str) -> int:
    return VOCAB.setdefault(piece, len(VOCAB))


FACT = copy_source(("My account number is IQ-2545 .", "Your account number is IQ-2545 ."), encode)


def test_distinctive_words_are_codes_numbers_and_names() -> None:
    assert distinctive_words("My account number is IQ-2545.") == ["IQ-2545"]
    assert distinctive_words("My team is called Bramblewick.") == ["Bramblewick"]
    assert distinctive_words("I'm in level 3 and I use an iPhone") == ["3", "iPhone"]
    assert distinctive_words("I like jazz.") == ["jazz"]  # none: the last word
    assert distinctive_words("") == []


def test_copy_source_keeps_each_tokenisation() -> None:
    assert tuple(encode("Your account number is IQ-2545 .")) in FACT.spans
    assert tuple(encode(" Your account number is IQ-2545 .")) in FACT.spans
    assert FACT.keys == ((tuple(encode("IQ-2545")), tuple(encode(" IQ-2545"))),)


def test_a_started_fact_is_continued_by_the_longest_match() -> None:
    said = encode("Your account number is")
    assert continuations(said, FACT.spans) == {tok(" IQ-2545")}
    assert continuations(encode("Sure! Your account"), FACT.spans) == {tok(" number")}
    assert continuations(encode("Hello there"), FACT.spans) == set()
    assert continuations([], FACT.spans) == set()


def test_bonus_goes_to_the_continuation_only() -> None:
    said = encode("Your account number is")
    logits = torch.zeros(len(VOCAB) + 8)
    before = logits.clone()
    apply(logits, said, [FACT], 3.0)
    changed = (logits != before).nonzero().flatten().tolist()
    assert changed == [tok(" IQ-2545")]
    assert logits[tok(" IQ-2545")] == 3.0


def test_a_fact_already_said_biases_nothing() -> None:
    said = encode("Your account number is IQ-2545 . Your account")
    assert bonuses(said, [FACT], 3.0) == {}


def test_no_sources_or_no_bonus_leaves_logits_identical() -> None:
    logits = torch.randn(64)
    before = logits.clone()
    apply(logits, encode("Your account number is"), [], 3.0)
    apply(logits, encode("Your account number is"), [FACT], 0.0)
    assert torch.equal(logits, before)


def test_only_the_row_given_sources_changes() -> None:
    logits = torch.zeros(2, len(VOCAB) + 8)
    said = encode("Your account number is")
    for row, sources in enumerate(([FACT], [])):
        apply(logits[row], said, sources, 3.0)
    assert logits[0].abs().sum() > 0
    assert logits[1].abs().sum() == 0


def test_the_fact_the_reply_is_repeating_wins_over_another() -> None:
    other = copy_source(("My locker code is KD-4821 .",), encode)
    said = encode("Your account number is")
    assert bonuses(said, [other, FACT], 3.0) == {tok(" IQ-2545"): 3.0}  # 4 tokens matched, not just " is"
    assert bonuses(said, [other], 3.0) == {tok(" KD-4821"): 3.0}  # alone, its " is" is the longest match
    assert bonuses(encode("Hello there"), [other, FACT], 3.0) == {}


def test_empty_source() -> None:
    empty = CopySource((), ())
    assert bonuses(encode("Your account"), [empty], 3.0) == {}
