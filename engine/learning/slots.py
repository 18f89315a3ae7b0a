"""Closed-class slot values in a question, and when a taught answer is about other ones.

A taught answer is often about one value of a slot: "open on Saturdays", "level 2",
"before 9 am", "in March". A question that names a *different* value of the same slot asks
something else, however close a sentence embedding (or a pair model trained on intent
paraphrases, where "weather in Boston" and "weather in Paris" are one intent) puts it. For
the closed classes of English this needs no learning: the values can be listed or parsed.

Classes (``slot_values``): ``number`` (digits, clock times such as ``10:30`` or ``9am``,
spelled numbers, ordinals; "one" and "second" only where they are numbers, not a pronoun or a
unit), ``weekday``, ``month``, ``daypart`` (morning ... midnight), ``relative_day`` (today,
tonight, tomorrow, yesterday), ``time_unit`` (a period: "this week", "a year", "per month", not
a unit of count such as "how many days"), ``relative`` (this / next / last before a time
unit or weekday), ``bound`` (which side of a number: "over 18", "more than $50", "18 or older" are
``over``; "under 18", "fewer than 5", "at most 3" are ``under``) and ``order`` (before / after
something: "cancel before the trip" / "after the trip").

``conflicts``: two questions that name values of one class and not the same ones ("Saturday" /
"Sunday", "between 2 and 5" / "between 2 and 6", "this week" / "last week"); a question that
names no weekday never conflicts on weekdays, since a paraphrase may leave a slot out.
``differs_from_all``: the same for an answer taught with several phrasings (the engine's test).

``asks_about_other``: the engine's whole test, these closed classes and the open ones that
``minimal_pairs.sibling_swaps`` finds with its lexicons (another product, place, role or thing than
a taught phrasing names). What neither lists is the verifier's pair model's to
judge (``verifier.py``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping

from .minimal_pairs import sibling_swaps

__all__ = ["slot_values", "conflicts", "differs_from_all", "asks_about_other"]

_SPELLED = {"zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
            "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
            "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
            "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
            "million": 1_000_000, "billion": 1_000_000_000, "dozen": 12}  # "one": see slot_values
_ORDINALS = {"first": 1, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9,
             "tenth": 10, "eleventh": 11, "twelfth": 12}  # "second": see slot_values
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = ("january", "february", "march", "april", "june", "july", "august", "september", "october",
           "november", "december")  # "may" only capitalised mid-sentence: it is mostly the verb
_MONTH_SHORT = {"jan": "january", "feb": "february", "aug": "august", "sept": "september", "oct": "october",
                "nov": "november", "dec": "december"}
_DAYPARTS = {"morning": "morning", "mornings": "morning", "afternoon": "afternoon", "afternoons": "afternoon",
             "evening": "evening", "evenings": "evening", "night": "night", "nights": "night",
             "tonight": "night", "overnight": "night", "noon": "noon", "midday": "noon", "midnight": "midnight"}
_RELATIVE_DAYS = {"today": "today", "tonight": "tonight", "tomorrow": "tomorrow", "yesterday": "yesterday"}
_TIME_UNITS = {"second": "second", "seconds": "second", "minute": "minute", "minutes": "minute", "hour": "hour",
               "hours": "hour", "day": "day", "days": "day", "week": "week", "weeks": "week", "weekend": "weekend",
               "weekends": "weekend", "fortnight": "fortnight", "month": "month", "months": "month",
               "quarter": "quarter", "year": "year", "years": "year", "decade": "decade", "decades": "decade"}
# "last" alone is often "last name"; before a time unit or a weekday it picks which one.
_RELATIVE = {"this": "this", "current": "this", "next": "next", "coming": "next", "upcoming": "next",
             "following": "next", "last": "last", "previous": "last", "past": "last", "prior": "last"}

# Which side of a number a question asks about, when a number follows within _BOUND_REACH words
# ("over the age of 18"); two-word cues first ("no more than" is a bound from above).
_BOUND_PHRASES = {("no", "more", "than"): "under", ("not", "more", "than"): "under", ("no", "less", "than"): "over",
                  ("not", "less", "than"): "over", ("no", "fewer", "than"): "over", ("at", "least"): "over",
                  ("at", "most"): "under"}
_OVER = frozenset({"over", "above", "exceeding", "exceeds", "beyond", "minimum", "min"})
_UNDER = frozenset({"under", "below", "beneath", "maximum", "max"})
_OVER_THAN = frozenset({"more", "greater", "higher", "larger", "bigger", "older", "longer"})
_UNDER_THAN = frozenset({"less", "fewer", "lower", "smaller", "younger", "shorter"})
_BOUND_REACH = 4
# Phrasal verbs, not bounds: "roll over my 401k", "turn over 3 pages", "take over 2 shifts".
_NOT_BOUND_AFTER = frozenset({"roll", "rolls", "rolled", "rolling", "turn", "turns", "turned", "turning", "take",
                              "takes", "took", "taking", "hand", "handed", "carry", "carried", "move", "moved",
                              "pass", "passed", "go", "goes", "went", "come", "came", "think", "thinking", "look",
                              "looking", "run", "ran", "hang", "start", "started", "sign", "signed", "switch",
                              "switched", "get", "got", "fall", "fell", "knock", "left", "leave"})
# After the number: "18 or older", "18 and over", "5 or fewer", "18 and up".
_AFTER_NUMBER = {w: "over" for w in ("older", "over", "more", "above", "up", "higher", "greater", "longer")} | \
                {w: "under" for w in ("younger", "under", "less", "fewer", "below", "lower", "smaller", "shorter")}
# "before" / "after" decide an answer ("refund before shipping?" / "after shipping?"), except in idioms.
_ORDER = {"before": "before", "after": "after", "afterwards": "after", "beforehand": "before"}
_NOT_ORDER_AFTER = frozenset({"look", "looks", "looking", "looked", "ask", "asked", "asking", "named", "name", "take",
                              "takes", "took", "taking", "ever", "never", "seek", "sought", "go", "chase"})

_PERIOD_CUES = frozenset({"a", "an", "per", "each", "every", "whole", "entire", "all"})

_NOT_BEFORE_ONE = frozenset({"which", "this", "that", "the", "each", "any", "every", "no", "some", "another",
                             "anyone", "someone", "everyone", "last", "next", "new", "old", "right",
                             "wrong", "other", "good", "best", "little", "big", "same",
                             # "how would one ...", "can one ...": the pronoun
                             "how", "what", "where", "when", "why", "if", "do", "does", "did", "can", "could",
                             "would", "will", "should", "must", "might", "may", "shall"})
_NOT_AFTER_ONE = frozenset({"of", "or", "and", "to", "is", "was", "for", "that", "which", "who", "please", "more",
                            "another", "in", "on", "at", "with", "i", "you", "it"})
_BEFORE_SECOND_UNIT = frozenset({"a", "one", "per", "every", "each", "just", "few", "another"})

_TOKEN = re.compile(
    r"(?P<time>\b\d{1,2}[:.]\d{2}\s*(?:[ap]\.?m\.?)?|\b\d{1,2}\s*[ap]\.?m\.?\b)"  # 10:30, 9am, 9 p.m.
    r"|(?P<num>\d+(?:[.,]\d+)*)(?:st|nd|rd|th)?"  # 12, 1,000, 3.5, 2nd
    r"|(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)?)",
    re.IGNORECASE,
)


def _time_value(raw: str) -> str:
    text = raw.lower().replace(" ", "").replace(".", ":").replace("::", ":")
    pm = "p" in text
    digits = re.match(r"(\d{1,2})(?::(\d{2}))?", text)
    assert digits is not None
    hour, minute = int(digits.group(1)), int(digits.group(2) or 0)
    if ("a" in text or pm) and hour <= 12:  # 12-hour clock
        hour = hour % 12 + (12 if pm else 0)
    return f"{hour}:{minute:02d}"


@functools.lru_cache(maxsize=8192)  # taught phrasings are read again for every message near them
def slot_values(text: str) -> dict[str, frozenset[str]]:
    """The closed-class values ``text`` names, by class (classes it does not name are absent)."""
    found: dict[str, set[str]] = {}

    def add(cls: str, value: str) -> None:
        found.setdefault(cls, set()).add(value)

    tokens = list(_TOKEN.finditer(text))
    words = [(m.group("word") or "").lower().replace("’", "'").removesuffix("'s") for m in tokens]
    for i, m in enumerate(tokens):
        previous, word = (words[i - 1] if i else ""), words[i]
        following = words[i + 1] if i + 1 < len(words) else ""
        if m.group("time"):
            add("number", _time_value(m.group("time")))
        elif m.group("num"):
            add("number", str(float(m.group("num").replace(",", ""))).removesuffix(".0"))
        elif word == "one":
            # "one day", "only one ticket" count; "which one", "the one", "one of", "this one" do not.
            if following and following not in _NOT_AFTER_ONE and previous not in _NOT_BEFORE_ONE:
                add("number", "1")
        elif word == "second":
            # "the second floor" is an ordinal; "a second", "per second", "one second" a unit.
            if previous in _BEFORE_SECOND_UNIT or not following:
                add("time_unit", "second")
            else:
                add("number", "2")
        elif word in _SPELLED:
            add("number", str(_SPELLED[word]))
        elif word in _ORDINALS:
            add("number", str(_ORDINALS[word]))
        elif word.removesuffix("s") in _WEEKDAYS:
            add("weekday", word.removesuffix("s"))
        elif word in _MONTHS or word in _MONTH_SHORT:
            add("month", _MONTH_SHORT.get(word, word))
        elif m.group("word") == "May" and m.start() > 0:
            add("month", "may")
        elif word in _DAYPARTS:
            add("daypart", _DAYPARTS[word])
        if word in _RELATIVE_DAYS:
            add("relative_day", _RELATIVE_DAYS[word])
        if word in _TIME_UNITS and word != "second" and (previous in _RELATIVE or previous in _PERIOD_CUES):
            # A period ("this week", "a year", "per month") decides an answer; a unit of count
            # ("how many vacation days", "hours of pto") is a way of asking the same thing.
            add("time_unit", _TIME_UNITS[word])
        if previous in _RELATIVE and (word in _TIME_UNITS or word.removesuffix("s") in _WEEKDAYS):
            add("relative", _RELATIVE[previous])
        if word in _ORDER and previous not in _NOT_ORDER_AFTER and following not in {"all", ""} \
                and following not in _RELATIVE_DAYS:  # "the day after tomorrow" names a day (relative_day)
            add("order", _ORDER[word])
    for side in _bounds(tokens, words, text):
        add("bound", side)
    return {cls: frozenset(values) for cls, values in found.items()}


def _is_number(m: re.Match[str], word: str) -> bool:
    return bool(m.group("time") or m.group("num")) or word in _SPELLED or word == "one"


def _bounds(tokens: list[re.Match[str]], words: list[str], text: str) -> Iterator[str]:
    """"over" or "under" for each bound on a number that ``text`` names."""
    numbers = [i for i, m in enumerate(tokens) if _is_number(m, words[i])]
    is_number = set(numbers)
    for n in numbers:
        # after it: "18 or older", "18+"
        if text[tokens[n].end():tokens[n].end() + 1] == "+":
            yield "over"
        elif n + 2 < len(words) and words[n + 1] in {"or", "and"} and words[n + 2] in _AFTER_NUMBER:
            yield _AFTER_NUMBER[words[n + 2]]
        # before it, the nearest cue within reach: "over the age of 18", "no more than 3"
        for i in range(n - 1, max(n - 1 - _BOUND_REACH, -1), -1):
            if i in is_number:
                break
            side = next((s for phrase, s in _BOUND_PHRASES.items()
                         if i + 1 >= len(phrase) and tuple(words[i + 1 - len(phrase):i + 1]) == phrase), None)
            if side is None and words[i] == "than" and i > 0:
                side = "over" if words[i - 1] in _OVER_THAN else "under" if words[i - 1] in _UNDER_THAN else None
            if side is None and (i == 0 or words[i - 1] not in _NOT_BOUND_AFTER):
                side = "over" if words[i] in _OVER else "under" if words[i] in _UNDER else None
            if side is not None:
                yield side
                break


def conflicts(a: Mapping[str, frozenset[str]], b: Mapping[str, frozenset[str]]) -> list[str]:
    """Classes both name with different values (``[]``: nothing tells them apart here)."""
    return [cls for cls in a if cls in b and a[cls] != b[cls]]


def differs_from_all(asked: str, questions: Iterable[str], answer: str = "") -> tuple[str, ...]:
    """Slot classes in which ``asked`` names a value that an answer's taught ``questions`` never
    name, among the classes they name at all; values its ``answer`` names count as taught too.

    An answer taught for "open on Saturdays?" differs for "open on Sunday?" (``weekday``); taught
    for Saturdays and Sundays, or with an answer that names both, it does not. A phrasing that
    names no weekday says nothing about weekdays ("opening hours?" beside "open on Saturdays?"
    does not cover Sunday), and a class only the answer names is not one the question was about
    ("how much is Pro?" → "$49": "how much is Pro for 2 users?" does not differ in number).
    """
    values = slot_values(asked)
    if not values:
        return ()
    known: dict[str, set[str]] = {}
    for text in questions:
        for cls, found in slot_values(text).items():
            if cls in values:
                known.setdefault(cls, set()).update(found)
    for cls, found in slot_values(answer).items():
        if cls in known:
            known[cls].update(found)
    return tuple(sorted(cls for cls, seen in known.items() if not values[cls] <= seen))


def asks_about_other(asked: str, questions: Iterable[str], answer: str = "", *, slots: bool = True,
                     swaps: bool = True) -> tuple[str, ...]:
    """What ``asked`` asks about that none of an answer's taught ``questions`` (nor the ``answer``) is
    about: slot classes (``differs_from_all``, with ``slots``) and open classes where it names a sibling
    of what a phrasing names (``minimal_pairs.sibling_swaps``, with ``swaps``). Such an answer can be
    related context, never the answer."""
    taught = list(questions)
    found = (differs_from_all(asked, taught, answer) if slots else ()) + \
        (sibling_swaps(asked, taught, answer) if swaps else ())
    return tuple(sorted(set(found)))
