"""Minimal pairs: near misses change one word or phrase, keep case, are seeded; light edits change no content word."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.learning.minimal_pairs import FILLER_WORDS, KINDS, Perturbation, light_edit, perturb, perturbable

WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*")

# Sentences built from ordinary words and words the lexicons know, in any order and case.
FUNCTION = ["what", "time", "does", "the", "is", "open", "on", "can", "i", "my", "a", "to", "for", "how", "do",
            "we", "in", "at", "please", "get", "not", "you", "it", "cost", "there", "office", "plan"]
CONTENT = ["saturdays", "monday", "morning", "march", "2", "3rd", "first", "five", "ios", "iphone", "visa",
           "windows", "berlin", "germany", "spanish", "warehouse", "students", "manager", "wife's", "upgrade",
           "close", "add", "buy", "cancel", "increase", "send", "before", "can't", "isn't", "don't", "premium",
           "refund", "euros", "dog", "coffee", "9:30", "7pm", "next week", "log in", "full-time", "credit card"]
sentences = st.lists(st.sampled_from(FUNCTION + CONTENT), min_size=1, max_size=12).map(" ".join)
cased = st.tuples(sentences, st.sampled_from(["lower", "upper", "capitalize", "title", "keep"])).map(
    lambda tc: tc[0] if tc[1] == "keep" else getattr(tc[0], tc[1])())


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def check_one_edit(p: Perturbation) -> None:
    start, end = p.span
    old, new = p.changed
    assert p.original[start:end] == old
    assert p.text == p.original[:start] + new + p.original[end:]
    assert norm(p.text) != norm(p.original)
    before = p.original[start - 1] if start else " "
    after = p.original[end] if end < len(p.original) else " "
    if old.isdecimal():  # a whole number ("7pm" -> "2pm", "9:30" -> "9:45")
        assert not before.isdecimal() and not after.isdecimal()
    elif old.lower() in ("am", "pm", "a.m.", "p.m."):
        assert before.isdigit() or before == " "
    elif p.kind != "negation":  # a swap replaces whole words
        assert not before.isalnum() and not after.isalnum()


@settings(max_examples=200, deadline=None)
@given(text=cased, seed=st.integers(0, 2**16), limit=st.integers(0, 6))
def test_every_near_miss_is_one_edit_distinct_and_different(text: str, seed: int, limit: int) -> None:
    out = perturb(text, random.Random(seed), limit)
    assert limit <= 0 or len(out) <= limit
    assert len({norm(p.text) for p in out}) == len(out)
    for p in out:
        assert p.kind in KINDS and p.original == text
        check_one_edit(p)
    assert bool(perturb(text, random.Random(seed), 1)) == perturbable(text)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=80), seed=st.integers(0, 1000))
def test_any_text_is_safe(text: str, seed: int) -> None:
    for p in perturb(text, random.Random(seed), 0):
        check_one_edit(p)
    assert isinstance(light_edit(text, random.Random(seed)), str)


@settings(max_examples=100, deadline=None)
@given(text=cased, seed=st.integers(0, 2**16))
def test_same_seed_same_near_misses(text: str, seed: int) -> None:
    assert perturb(text, random.Random(seed), 4) == perturb(text, random.Random(seed), 4)
    assert light_edit(text, random.Random(seed)) == light_edit(text, random.Random(seed))


@settings(max_examples=100, deadline=None)
@given(text=sentences, seed=st.integers(0, 2**16))
def test_case_is_preserved(text: str, seed: int) -> None:
    for form in (text.lower(), text.upper()):
        for p in perturb(form, random.Random(seed), 0):
            letters = [c for c in p.changed[1] if c.isalpha()]
            if form.islower():
                assert all(c.islower() for c in letters), p
            elif p.kind != "negation" and len(letters) > 1:
                assert all(c.isupper() for c in letters), p


@settings(max_examples=200, deadline=None)
@given(text=cased, seed=st.integers(0, 2**16))
def test_light_edit_keeps_every_content_word(text: str, seed: int) -> None:
    edited = light_edit(text, random.Random(seed))
    assert edited != text
    before = [w.lower() for w in WORD.findall(text)]
    after = [w.lower() for w in WORD.findall(edited)]
    starts = [i for i in range(len(after) - len(before) + 1) if after[i:i + len(before)] == before]
    assert starts, (text, edited)  # the original words, in order, side by side
    i = starts[0]
    assert set(after[:i] + after[i + len(before):]) <= FILLER_WORDS, (text, edited)


def changes(text: str, kind: str | None = None) -> dict[str, str]:
    """Every near miss found (of ``kind``), as {near miss: the text it replaced}."""
    return {p.text: p.changed[0] for p in perturb(text, random.Random(0), 0) if kind is None or p.kind == kind}


@pytest.mark.parametrize(("text", "kind", "old", "must_contain"), [
    ("Is the library open on Saturdays?", "time", "Saturdays", r"(Mon|Tues|Wednes|Thurs|Fri|Sun)days"),
    ("what time does the store open in the morning", "time", "morning", r"(afternoon|evening|night)"),
    ("does level 2 include the labs", "number", "2", r"level \d+ include"),
    ("who won the first prize", "number", "first", r"(second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth)"),
    ("is there a three day trial", "number", "three", r"(two|four|five|six|seven|eight|nine|ten)"),
    ("Does the iOS app support widgets?", "product", "iOS", r"(Android|Windows|macOS|Linux|ChromeOS) app"),
    ("can i pay with visa", "product", "visa", r"pay with (mastercard|amex|american express|paypal|venmo|zelle)"),
    ("do i need a visa for japan", "thing", "visa", r"need an? (passport|driver's license|id card|birth certificate)"),
    ("Is the Lisbon office open?", "place", "office", r"Lisbon \w+"),
    ("Can students bring a laptop?", "role", "students", r"Can \w+"),
    ("what's my wife's shoe size", "role", "wife", r"my \w+'s shoe"),
    ("How do I upgrade my plan?", "opposite", "upgrade", r"downgrade"),
    ("when does the office open", "opposite", "open", r"office close$"),
    ("is the office open", "opposite", "open", r"office closed$"),
    ("Can I get a refund before the course starts?", "opposite", "before", r"after the course"),
    ("why can't I log in", "negation", "can't", r"why can I log in"),
    ("I need a new password", "negation", "need", r"I don't need"),
    ("what's the price in euros", "unit", "euros", r"price in \w+s$"),
])
def test_the_kinds(text: str, kind: str, old: str, must_contain: str) -> None:
    found = {t: o for t, o in changes(text, kind).items() if o == old or o.endswith(" " + old)}
    assert found, changes(text)
    assert any(re.search(must_contain, t) for t in found), found


def test_articles_follow_the_swapped_word() -> None:
    texts = changes("Can I get a refund?", "product")
    assert "Can I get an exchange?" in texts and texts["Can I get an exchange?"] == "a refund"


def test_yes_no_questions_are_not_negated_at_their_head() -> None:
    assert not changes("Is the office open?", "negation")
    assert not changes("Can't I pay by card?", "negation")
    assert changes("What can I bring on the plane?", "negation") == {"What can't I bring on the plane?": "can"}


def test_word_boundaries_and_names_are_respected() -> None:
    assert not perturbable("tell me a joke")
    assert not changes("where is my w2 and my 401k", "number")
    assert "mondayish" not in " ".join(changes("mondayish plans"))
    assert not changes("Mayor of the town", "time")  # "May" is a month only as a whole word
