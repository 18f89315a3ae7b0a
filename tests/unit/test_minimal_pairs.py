"""Minimal pairs: near misses change one word or phrase, keep case, are seeded; light edits change no content word."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.learning.minimal_pairs import (
    FILLER_WORDS,
    KINDS,
    Perturbation,
    light_edit,
    perturb,
    perturbable,
    sibling_swaps,
    word_swaps,
)

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


# -- word_swaps: minimal pairs from a table of siblings or synonyms (the verifier's WordNet pairs) ------

SIBLINGS = {"car": ("truck", "Bus"), "coffee": ("tea",), "monday": ("Tuesday",), "open": ("closed",),
            "time": ("hours",), "apple": ("orange",)}


def test_word_swaps_replace_one_listed_word_keeping_case_plurals_and_articles() -> None:
    rng = random.Random(0)
    swaps = word_swaps("Can I rent a car on Monday?", SIBLINGS, rng, "sense", limit=5)
    texts = {p.text for p in swaps}
    assert texts <= {"Can I rent a truck on Monday?", "Can I rent a bus on Monday?", "Can I rent a car on Tuesday?"}
    assert any("Tuesday" in t for t in texts) and any("car" not in t for t in texts)
    assert all(p.kind == "sense" and p.original == "Can I rent a car on Monday?" for p in swaps)
    assert {p.text for p in word_swaps("do you rent cars", SIBLINGS, random.Random(1), "sense")} <= {
        "do you rent trucks", "do you rent buses"}
    assert word_swaps("is an apple a fruit", SIBLINGS, random.Random(0), "sense")[0].text == "is an orange a fruit"
    assert word_swaps("an apple for a day", {"apple": ("pear",)}, random.Random(0), "s")[0].text == "a pear for a day"


def test_word_swaps_leave_filler_idioms_and_unlisted_words_alone() -> None:
    assert word_swaps("how do i take time off", SIBLINGS, random.Random(0), "sense") == []
    assert word_swaps("please help me", {"please": ("thanks",)}, random.Random(0), "sense") == []
    assert word_swaps("", SIBLINGS, random.Random(0), "sense") == []
    assert word_swaps("carpool coffeehouse", SIBLINGS, random.Random(0), "sense") == []  # whole words only


@given(st.text(max_size=80), st.integers(0, 9))
@settings(max_examples=200, deadline=None)
def test_word_swaps_on_any_text_change_exactly_one_word(text: str, seed: int) -> None:
    for p in word_swaps(text, SIBLINGS, random.Random(seed), "sense", limit=3):
        start, end = p.span
        assert p.text == text[:start] + p.changed[1] + text[end:] and p.text != text


def test_the_shipped_word_senses_know_siblings_from_synonyms() -> None:
    from engine.training.word_senses import word_senses

    senses = word_senses()
    assert "tuesday" in {w.lower() for w in senses.siblings["monday"]}
    assert "tea" in senses.siblings["coffee"] and "expensive" in senses.siblings["cheap"]
    assert "automobile" in senses.synonyms["car"] and "car" not in senses.siblings.get("automobile", ())
    assert "store" not in senses.siblings.get("shop", ()) and "store" in senses.synonyms["shop"]
    assert not {"can", "will", "may", "who"} & (set(senses.siblings) | set(senses.synonyms))


def test_a_name_that_is_also_a_word_counts_where_it_is_written_as_a_name() -> None:
    # "Discover" the card, "Signal" the messenger; "discover" the verb is not a card.
    assert sibling_swaps("Can I pay with Discover?", ["Can I pay with Amex?"]) == ("product",)
    assert sibling_swaps("Can I message you on Signal?", ["Can I message you on WhatsApp?"]) == ("product",)
    assert sibling_swaps("can I discover new music with amex?", ["Can I pay with Visa?"]) == ("product",)  # amex
    assert sibling_swaps("can i discover new music", ["Can I pay with Amex?"]) == ()
    assert sibling_swaps("Discover new music here", ["Can I pay with Amex?"]) == ()  # sentence start
