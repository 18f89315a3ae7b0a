"""Closed-class slot values and when two questions name different ones (engine/learning/slots.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.contract import CorrectionUse
from engine.learning.minimal_pairs import sibling_swaps
from engine.learning.slots import asks_about_other, conflicts, differs_from_all, slot_values


def differ(a: str, b: str) -> list[str]:
    return conflicts(slot_values(a), slot_values(b))


@pytest.mark.parametrize(("taught", "asked", "classes"), [
    ("What time does the Berlin office open on Saturdays?", "Is the Berlin office open on Sunday?", ["weekday"]),
    ("When are office hours for Algebra 2?", "When are office hours for Algebra 1?", ["number"]),
    ("Do expenses over $500 need approval?", "Do expenses over $5,000 need approval?", ["number"]),
    ("any rooms free between 9:00 am and 11:00 am", "any rooms free between 9:00 am and 11:00 pm", ["number"]),
    ("is the desk staffed at 9am", "is the desk staffed at 9:00 a.m.?", []),  # one time, two spellings
    ("a penalty for homework one day late?", "a penalty for homework three days late?", ["number"]),
    ("which printer on the second floor prints in color", "which printer on the fourth floor prints in color",
     ["number"]),
    ("how much have i earned this week", "how much have i earned last week", ["relative"]),
    ("how much have i earned this week", "what is my salary for this year", ["time_unit"]),
    ("how much do i earn a month", "how much do i earn per year", ["time_unit"]),
    ("is support open on saturday mornings", "is support open on saturday evenings", ["daypart"]),
    ("where is my march invoice", "where is my April invoice", ["month"]),
    ("what is the weather today", "what is the weather tomorrow", ["relative_day"]),
    ("Can members over 18 join the server?", "Can members under 18 join the server?", ["bound"]),
    ("do orders of more than $50 ship free", "do orders of less than $50 ship free", ["bound"]),
    ("can kids 12 and under fly alone", "can kids 12 or older fly alone", ["bound"]),
    ("can I carry no more than 2 bags", "can I carry at least 2 bags", ["bound"]),
    ("can i get a refund before shipping", "can i get a refund after shipping", ["order"]),
    ("is there a shuttle the day before my flight", "is there a shuttle the day after my flight", ["order"]),
])
def test_questions_about_another_value_conflict(taught: str, asked: str, classes: list[str]) -> None:
    assert sorted(differ(asked, taught)) == classes


@pytest.mark.parametrize(("taught", "asked"), [
    ("What time does the Berlin office open on Saturdays?", "when does the berlin office open on a saturday"),
    ("What time does the Berlin office open on Saturdays?", "berlin office opening hours?"),  # slot left out
    ("is the shop open on saturday", "is the shop open saturdays?"),
    ("which one should I pick", "which one is best"),           # "one" as a pronoun is no number
    ("wait a second, what is my balance", "what is my balance"),
    ("May I get a refund?", "can i get a refund"),               # "May" opening a question is the verb
    ("how many days until my next holiday", "how many days until my next holiday please"),
    ("how many vacation days do i have left", "how many weeks of vacation do i have left"),  # a unit of count
    ("can members over 18 join", "can members aged 18 or older join"),  # one side, two spellings
    ("can members over 18 join", "can members over the age of 18 join"),
    ("is it 18+ only", "do you have to be at least 18"),
    ("how do i roll over my 401k", "how do i move my 401k"),    # a phrasal verb, no bound
    ("who will look after my dog", "who will look before my dog"),  # "look after": no order
    ("can I get a refund after all", "can I get a refund before"),
])
def test_paraphrases_and_slot_free_phrasings_do_not(taught: str, asked: str) -> None:
    assert differ(asked, taught) == []


def test_values_are_normalised() -> None:
    assert slot_values("on Mondays at 9 PM, five of us") == {
        "weekday": frozenset({"monday"}), "number": frozenset({"21:00", "5"})}
    assert slot_values("due in May") == {"month": frozenset({"may"})}
    assert slot_values("the 2nd and third floor") == {"number": frozenset({"2", "3"})}
    assert slot_values("") == {}


@given(st.text(max_size=80), st.text(max_size=80))
def test_conflicts_are_symmetric_and_never_with_oneself(a: str, b: str) -> None:
    assert sorted(differ(a, b)) == sorted(differ(b, a))
    assert differ(a, a) == []


_PLAIN_WORDS = st.lists(st.sampled_from(["members", "can", "join", "orders", "ship", "free", "the", "bags", "kids",
                                          "fly", "alone", "discount", "for", "people", "aged"]), max_size=5)


@given(_PLAIN_WORDS, _PLAIN_WORDS, st.integers(1, 10_000), st.sampled_from(["over", "more than", "at least", "above"]),
       st.sampled_from(["under", "less than", "at most", "below", "fewer than"]))
def test_the_two_sides_of_a_number_always_conflict(head: list[str], tail: list[str], n: int, over: str,
                                                    under: str) -> None:
    def asked(side: str) -> str:
        return " ".join([*head, side, str(n), *tail])

    assert differ(asked(over), asked(under)) == ["bound"]
    assert differ(asked(over), " ".join([*head, str(n), "or", "more", *tail])) == []


def test_an_answer_differs_in_values_none_of_its_phrasings_names() -> None:
    taught = ["is the desk open on saturdays?", "is the desk open on sundays?"]
    assert differs_from_all("is the desk open on sunday", taught) == ()       # taught for Sundays too
    assert differs_from_all("is the desk open on monday", taught) == ("weekday",)
    # A phrasing naming no weekday says nothing about weekdays ...
    assert differs_from_all("is the desk open on monday", [*taught, "desk opening hours"]) == ("weekday",)
    # ... but an answer that names the day does.
    assert differs_from_all("is the desk open on monday", taught, "Open 9-5 Monday to Friday") == ()
    # A class only the answer names is not what the question was about.
    assert differs_from_all("how much is pro for 2 users?", ["how much is the pro plan?"], "$49 a month") == ()
    assert differs_from_all("open at 9 on monday?", ["open at 10 on saturdays?", "open at 9 on sundays?"]
                            ) == ("weekday",)
    assert differs_from_all("meetings between 2 and 6", ["how many meetings between 2 and 5"]) == ("number",)
    assert differs_from_all("what are the opening hours", taught) == ()       # names no slot


def test_one_as_a_pronoun_is_no_number() -> None:
    assert slot_values("how would one make a vacation request") == {}
    assert slot_values("how does one go about it") == {}
    assert slot_values("i need one ticket") == {"number": frozenset({"1"})}


# -- open classes: siblings in the near-miss lexicons (minimal_pairs.sibling_swaps) --------------------------


@pytest.mark.parametrize(("asked", "taught", "kinds"), [
    ("Does the Android app work offline?", "Does the iOS app work offline?", ("product",)),
    ("Do teachers get a discount on the annual plan?", "Do students get a discount on the annual plan?", ("role",)),
    ("how long does shipping to mexico take", "How long does shipping to Canada take?", ("place",)),
    ("Can I bring my cat to the office?", "Can I bring my dog to work?", ("thing",)),
    # worded differently: what counts is a sibling where the phrasing names one
    ("is the enterprise plan billed monthly?", "How much does the Pro plan cost per month?", ("product",)),
])
def test_a_sibling_of_what_the_phrasing_names_is_another_question(asked: str, taught: str,
                                                                  kinds: tuple[str, ...]) -> None:
    assert sibling_swaps(asked, [taught]) == kinds
    assert set(kinds) <= set(asks_about_other(asked, [taught]))
    assert asks_about_other(asked, [taught], swaps=False) == ()


@pytest.mark.parametrize(("asked", "taught", "answer"), [
    ("What time does the shop open?", "What time does the store open?", ""),          # synonyms in one group
    ("where's parking for guests", "Where should visitors park?", ""),
    ("Does the Android app work offline?", "Does the iOS app work offline?", "Both the iOS and Android apps do."),
    ("Does the Android app work offline?", "Do the iOS and Android apps work offline?", ""),
    ("Does the Android app work offline, like on iOS?", "Does the iOS app work offline?", ""),  # names both
    ("can I use the iphone app without an internet connection", "Does the iOS app work offline?", ""),
    ("How do I downgrade my plan?", "How do I upgrade my plan?", ""),  # opposites: the verifier's to judge
    ("could i get refunded for this purchase", "can i return this and be refunded", ""),
    ("How far is it in kilometers?", "How far is it in miles?", ""),   # units: another way of asking
    ("Does the Frobnicator support exports?", "Does the Widgetizer support exports?", ""),  # not in the lexicons
])
def test_no_swap_where_the_taught_side_names_it_or_it_is_the_same_thing(asked: str, taught: str,
                                                                          answer: str) -> None:
    assert sibling_swaps(asked, [taught], answer) == ()


def test_one_phrasing_naming_it_is_enough_among_several() -> None:
    taught = ["Does the iOS app work offline?", "Can I use the Android app without wifi?"]
    assert sibling_swaps("Does the Android app work offline?", taught) == ()
    assert sibling_swaps("Does the Windows app work offline?", taught) == ("product",)


def test_why_names_what_the_message_asks_about_instead() -> None:
    def use(*differs: str) -> str:
        return CorrectionUse(1, "q?", "a.", 0.9, "related", 0.8, differs=differs).line()

    assert "(asks about another weekday)" in use("weekday")
    assert "(asks about another place / product)" in use("place", "product")
    assert "(asks about another side of a number)" in use("bound")
    assert "asks" not in use()
