"""Taste: what one person prefers in the bot's replies, learned from a few of their 👍 / 👎.

A reply is described by cheap features that need no model (``features``): its length in words
and sentences, emoji, exclamations, casual and formal markers, a greeting, list lines, question
marks, its language (a stop-word language id for English, French, Spanish and German), and how it
mirrors the message it answers (same language, emoji when the asker used some, the same tone,
length against the question's). A person's *utility* for a reply is a Gaussian process over
these features: a mean ``φᵀμ`` and a covariance ``φᵀΣφ' + s²·exp(-½‖λ⊙(φ-φ')‖²)`` (a linear part
that generalises across contents, and a narrow part that remembers "this very style was
disliked"). Each signal is a noisy observation of it (``up`` for 👍, ``down`` for 👎, noise
``σ²``); the posterior mean ranks candidate replies. Everything is closed form: a k×k solve for
k signals.

``μ``, ``Σ``, ``s``, ``λ``, ``σ``, ``up`` and ``down`` are the *prior*, meta-learned across many
simulated people (``engine.training.preference_train``: on-policy episodes, the loss is whether
the candidate ranked first after k signals matches the person's hidden preference), so that the
population's structure (people tend to want their own language, a casual writer tends to want a
casual reply) is known before the first signal and a handful of signals go a long way. The
artifact is ``artifacts/preference.safetensors``. docs/LEARNING.md, "Taste".

The engine (``Engine._produce_preferred``) generates a few candidates in one batch, each asked
for one of the styles this person's taste ranks highest (``Taste.styles``; the first candidate
is the plain prompt), and replies with the candidate the taste scores highest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ARTIFACT",
    "FEATURES",
    "LANGUAGES",
    "Signal",
    "Style",
    "Taste",
    "TastePrior",
    "asker_vector",
    "combine",
    "features",
    "language",
    "load_prior",
    "prototype_index",
    "style_vector",
]

ARTIFACT = Path(__file__).parent / "artifacts" / "preference.safetensors"
FORMAT = "heedful-preference/1"

LANGUAGES = ("en", "fr", "es", "de")
LANGUAGE_NAMES = {"en": "English", "fr": "French", "es": "Spanish", "de": "German"}
LENGTHS = ("brief", "detailed")
TONES = ("formal", "casual")

STYLE_FEATURES = ("words", "sentences", "emoji", "emoji_count", "exclamations", "casual", "formal", "greeting",
                  "bullets", "questions", "lang_en", "lang_fr", "lang_es", "lang_de", "lang_other")
MIRROR_FEATURES = ("same_language", "emoji_mirror", "tone_mirror", "length_mirror")
FEATURES = STYLE_FEATURES + MIRROR_FEATURES
"""The feature names, in order: the reply's own, then how it mirrors the message it answers."""
_LANG = STYLE_FEATURES.index("lang_en")  # first language column
ASKER = ("emoji", "tone", "words", "lang_en", "lang_fr", "lang_es", "lang_de", "lang_other")

# -- language id ---------------------------------------------------------------------------


def _words(*lines: str) -> frozenset[str]:
    return frozenset(word for line in lines for word in line.split())


_STOP: dict[str, frozenset[str]] = {
    "en": _words(
        "the a an is are was to of and in on it you your for at with can be this that from by will what how i "
        "my me do does not there which when where why should would could have has"),
    "fr": _words(
        "le la les un une des est sont de du et en à au aux pour avec vous votre vos tu ton ta ce cette qui "
        "que dans sur il elle je mon ma mes pas ne c'est quand comment où pourquoi quel quelle peut faut être "
        "avoir"),
    "es": _words(
        "el la los las un una es son de del y en para con por que su sus tu usted se lo al este esta yo mi no "
        "cuándo cómo dónde qué cuál puedo hay muy está están"),
    "de": _words(
        "der die das ein eine ist sind und in im zu zum zur mit für auf sie ihr du dein ich mein nicht es den "
        "dem von wann wie wo was warum kann gibt man wird werden bei aus wohin welche welcher viele heute"),
}
_CHARS = {"fr": "çèêëîïôœùûÿ", "es": "ñ¿¡áíóú", "de": "ßäöü"}


def _tokens(text: str) -> list[str]:
    return re.findall(r"[\w'’]+", text.lower().replace("’", "'"))


def language(text: str) -> str:
    """The language of ``text`` by stop words (and a few letters): ``en``, ``fr``, ``es``, ``de``,
    or ``other`` when nothing decides."""
    tokens = _tokens(text)
    lower = text.lower()
    scores = {lang: sum(t in words for t in tokens) + 1.5 * sum(lower.count(c) > 0 for c in _CHARS.get(lang, ""))
              for lang, words in _STOP.items()}
    best = max(scores, key=lambda k: scores[k])
    ranked = sorted(scores.values(), reverse=True)
    if ranked[0] < 1 or ranked[0] == ranked[1]:
        return "other"
    return best


# -- features ------------------------------------------------------------------------------

_CASUAL_WORDS = _words(
    "hey hi yo yeah yep yup cool awesome gonna wanna btw lol cheers okay ok nope thx pls folks buddy easy "
    "super totally haha ha salut coucou ouais génial tkt sympa bisous hop nickel trop stp dis tu toi ton ta "
    "tes t'inquiète voilà hola oye vale guay porfa ey buenas listo súper tú te chao moin na klar passt geil "
    "tschüss du dich dir dein deine ciao")
_CASUAL_PHRASES = ("sure thing", "no worries", "ok so", "hope that helps", "have fun", "good one", "easy one",
                   "à plus", "ça aide", "qué tal", "claro que sí", "que te sirva", "alles klar", "bis dann",
                   "viel spaß", "das hilft", "na klar")
_FORMAL_WORDS = _words(
    "certainly kindly regards sincerely dear furthermore additionally therefore however assist disposal "
    "pleasure allow gladly vous votre vos veuillez cordialement certainement madame monsieur n'hésitez "
    "également toutefois permettez volontiers remercie usted ustedes cordialmente atentamente estimado "
    "estimada asimismo permítame disculpe agradezco gusto gerne selbstverständlich freundlichen grüßen "
    "geehrte zudem außerdem entschuldigen herzlichen")
_FORMAL_PHRASES = ("thank you", "of course", "i would be glad", "please let me know", "kind regards", "good morning",
                   "excuse me", "in advance", "many thanks", "bien sûr", "je vous", "por supuesto", "desde luego",
                   "con mucho gusto", "muchas gracias", "buenos días", "buenas tardes", "vielen dank", "guten tag",
                   "guten morgen", "mit freundlichen")
_GERMAN_FORMAL = frozenset(("Sie", "Ihnen", "Ihre", "Ihrer", "Ihr"))
_GREETINGS = _words(
    "hey hi hello yo salut coucou bonjour bonsoir hola oye ey buenas hallo moin servus dear guten")
_EMOJI = re.compile("[\U0001F300-\U0001FAFF\U00002600-\U000027BF\U0001F1E6-\U0001F1FF\U00002B50\U00002B55"
                    "\U00002934\U00002935\U00003030\U0000303D\U00003297\U00003299\U0001F004\U0001F0CF]")
_CONTRACTION = re.compile(r"\b[a-z]+'(?:s|t|re|ll|ve|d|m)\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)


def _tone_counts(text: str) -> tuple[int, int]:
    """(casual, formal) marker counts: slang, contractions and a lowercase start; polite words and phrases."""
    lower = text.lower().replace("’", "'")
    tokens = _tokens(text)
    casual = sum(t in _CASUAL_WORDS for t in tokens) + sum(lower.count(p) for p in _CASUAL_PHRASES)
    casual += len(_CONTRACTION.findall(lower))
    stripped = text.lstrip()
    casual += int(bool(stripped) and stripped[0].isalpha() and stripped[0].islower())
    formal = sum(t in _FORMAL_WORDS for t in tokens) + sum(lower.count(p) for p in _FORMAL_PHRASES)
    formal += sum(w in _GERMAN_FORMAL for w in re.findall(r"\w+", text)[1:])
    return casual, formal


def _one_hot(lang: str) -> list[float]:
    return [float(lang == code) for code in (*LANGUAGES, "other")]


def style_vector(text: str) -> np.ndarray:
    """The reply's own features (``STYLE_FEATURES``), float32."""
    words = len(re.findall(r"\w+", text))
    sentences = sum(1 for s in _SENTENCE.split(text.strip()) if re.search(r"\w", s))
    emoji = len(_EMOJI.findall(text))
    casual, formal = _tone_counts(text)
    tokens = _tokens(text)
    greeting = float(bool(tokens) and tokens[0] in _GREETINGS)
    values = [math.log1p(words), math.log1p(sentences), float(emoji > 0), math.log1p(emoji),
              math.log1p(text.count("!") + text.count("¡")), math.log1p(casual), math.log1p(formal), greeting,
              math.log1p(len(_BULLET.findall(text))), math.log1p(text.count("?")), *_one_hot(language(text))]
    return np.asarray(values, dtype=np.float32)


def asker_vector(text: str) -> np.ndarray:
    """What a reply may mirror of the message it answers (``ASKER``): emoji used, tone (-1 formal,
    +1 casual), length, language."""
    casual, formal = _tone_counts(text)
    values = [float(bool(_EMOJI.search(text))), float(np.sign(casual - formal)),
              math.log1p(len(re.findall(r"\w+", text))), *_one_hot(language(text))]
    return np.asarray(values, dtype=np.float32)


def combine(styles: np.ndarray, asker: np.ndarray) -> np.ndarray:
    """The full features (``FEATURES``) of replies with style vectors ``styles`` (n, S) answering a
    message with asker vector ``asker`` (A,) or one per reply (n, A)."""
    styles = np.atleast_2d(styles).astype(np.float32)
    asker = np.broadcast_to(np.atleast_2d(asker), (styles.shape[0], len(ASKER))).astype(np.float32)
    same = (styles[:, _LANG:_LANG + len(LANGUAGES)] * asker[:, 3:3 + len(LANGUAGES)]).sum(1)
    emoji = styles[:, 2] * (2.0 * asker[:, 0] - 1.0)
    tone = np.sign(styles[:, 5] - styles[:, 6]) * asker[:, 1]
    length = (styles[:, 0] - 3.0) * (asker[:, 2] - 2.0)
    return np.concatenate([styles, np.stack([same, emoji, tone, length], 1)], 1).astype(np.float32)


def features(reply: str, asked: str) -> np.ndarray:
    """``FEATURES`` of ``reply`` as an answer to the message ``asked``."""
    return np.asarray(combine(style_vector(reply), asker_vector(asked))[0], dtype=np.float32)


# -- styles the engine can ask the model for ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Style:
    """One style a candidate reply is asked for (and a simulated person may want)."""

    length: str  # brief | detailed
    tone: str  # formal | casual
    emoji: bool
    language: str  # en | fr | es | de

    def hint(self) -> str:
        """The instruction that asks the model for this style."""
        length = "Answer in one short sentence." if self.length == "brief" else \
            "Answer in detail, in three or four sentences."
        tone = "Use a formal, polite tone." if self.tone == "formal" else "Use a casual, friendly tone."
        emoji = "Include a fitting emoji." if self.emoji else "Do not use emoji."
        return f"{length} {tone} {emoji} Answer in {LANGUAGE_NAMES[self.language]}."

    def label(self) -> str:
        return f"{self.length}, {self.tone}, {'emoji' if self.emoji else 'no emoji'}, {self.language}"


def prototype_index(length: str, tone: str, emoji: bool) -> int:
    """Row of a (length, tone, emoji) style in ``TastePrior.prototypes``."""
    return LENGTHS.index(length) * 4 + TONES.index(tone) * 2 + (0 if emoji else 1)


def styles_for(asked_language: str) -> list[Style]:
    """The styles worth asking for when answering a message in ``asked_language``: every length, tone
    and emoji choice, in that language and in English."""
    languages = dict.fromkeys([asked_language if asked_language in LANGUAGES else "en", "en"])
    return [Style(length, tone, emoji, lang) for lang, length, tone, emoji
            in product(languages, LENGTHS, TONES, (True, False))]


# -- the prior ---------------------------------------------------------------------------------


@dataclass
class TastePrior:
    """The meta-learned prior of every person's utility over ``FEATURES`` (module docstring)."""

    mean: np.ndarray  # μ (D)
    cov_factor: np.ndarray  # L (D, D): Σ = L Lᵀ
    rbf_scale: float  # s²
    rbf_width: np.ndarray  # λ (D)
    noise: float  # σ²
    up: float  # the observed utility of a 👍
    down: float  # ... of a 👎
    center: np.ndarray  # standardisation of the raw features (D)
    spread: np.ndarray
    prototypes: np.ndarray  # (8, S) style vectors of the (length, tone, emoji) styles, language columns zero
    record: dict[str, Any] = field(default_factory=dict)
    name: str = "preference"

    @classmethod
    def neutral(cls) -> TastePrior:
        """A prior that knows nothing about people: zero mean, unit covariance, no narrow part."""
        dims, style = len(FEATURES), len(STYLE_FEATURES)
        return cls(np.zeros(dims, np.float32), np.eye(dims, dtype=np.float32), 0.0, np.ones(dims, np.float32), 1.0,
                   1.0, -1.0, np.zeros(dims, np.float32), np.ones(dims, np.float32),
                   np.zeros((8, style), np.float32), name="neutral")

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray((np.atleast_2d(raw) - self.center) / self.spread, dtype=np.float64)

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        cov = self.cov_factor.astype(np.float64)
        linear = (a @ cov) @ (b @ cov).T
        if self.rbf_scale <= 0:
            return linear
        width = self.rbf_width.astype(np.float64)
        diff = (a[:, None, :] - b[None, :, :]) * width
        return np.asarray(linear + self.rbf_scale * np.exp(-0.5 * (diff ** 2).sum(-1)), dtype=np.float64)

    def fit(self, signals: np.ndarray, liked: np.ndarray) -> np.ndarray:
        """The posterior weights ``α`` of standardised ``signals`` (k, D) with 👍 (True) / 👎 labels."""
        if not len(signals):
            return np.zeros(0)
        target = np.where(liked, self.up, self.down) - signals @ self.mean.astype(np.float64)
        gram = self._kernel(signals, signals) + self.noise * np.eye(len(signals))
        return np.linalg.solve(gram, target)

    def predict(self, candidates: np.ndarray, signals: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """The posterior mean utility of standardised ``candidates`` (n, D)."""
        base = candidates @ self.mean.astype(np.float64)
        if not len(signals):
            return base
        return np.asarray(base + self._kernel(candidates, signals) @ alpha, dtype=np.float64)

    def prototype(self, style: Style) -> np.ndarray:
        """The style vector a reply of ``style`` typically has."""
        vector = np.array(self.prototypes[prototype_index(style.length, style.tone, style.emoji)], dtype=np.float32)
        vector[_LANG:_LANG + len(LANGUAGES) + 1] = _one_hot(style.language)
        return vector

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.mean, self.cov_factor, self.rbf_width, self.center, self.spread,
                                      self.prototypes))


def load_prior(path: str | Path = ARTIFACT) -> TastePrior:
    """The prior in a ``heedful-preference/1`` artifact (``ValueError`` for another file)."""
    from ..nn.artifact_file import load_artifact

    header, tensors = load_artifact(path, FORMAT, "preference")
    if list(header.get("features", [])) != list(FEATURES):
        raise ValueError(f"{path}: its features differ from this version's; meta-train it again")

    def array(name: str) -> np.ndarray:
        return tensors[name].float().numpy().astype(np.float32)

    return TastePrior(array("mean"), array("cov_factor"), float(header["rbf_scale"]), array("rbf_width"),
                      float(header["noise"]), float(header["up"]), float(header["down"]), array("center"),
                      array("spread"), array("prototypes"), record=dict(header.get("record", {})),
                      name=str(header.get("name", Path(path).stem)))


def save_prior(prior: TastePrior, path: str | Path) -> Path:
    """Write ``prior`` as a ``heedful-preference/1`` artifact."""
    import torch

    from ..nn.artifact_file import save_artifact

    tensors = {name: torch.from_numpy(np.ascontiguousarray(getattr(prior, name), dtype=np.float32))
               for name in ("mean", "cov_factor", "rbf_width", "center", "spread", "prototypes")}
    header = {"features": list(FEATURES), "rbf_scale": prior.rbf_scale, "noise": prior.noise, "up": prior.up,
              "down": prior.down, "name": prior.name, "record": prior.record}
    return save_artifact(path, FORMAT, header, tensors)


# -- one person's taste ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signal:
    """One judgement of a reply by the person it answered: its features and whether they liked it.

    ``key`` identifies its source (``thumb:<message id>``, ``correction:<id>``): a newer judgement
    of the same reply replaces the older."""

    key: str
    liked: bool
    features: np.ndarray  # raw ``FEATURES`` (float32)
    created_at: float = 0.0


class Taste:
    """One person's taste in one channel: their signals under the shared prior."""

    def __init__(self, prior: TastePrior, signals: Iterable[Signal] = ()) -> None:
        self.prior = prior
        self._signals: dict[str, Signal] = {}
        self._fitted: tuple[np.ndarray, np.ndarray] | None = None
        for signal in signals:
            self.add(signal)

    def __len__(self) -> int:
        return len(self._signals)

    @property
    def signals(self) -> list[Signal]:
        return list(self._signals.values())

    @property
    def up(self) -> int:
        return sum(s.liked for s in self._signals.values())

    @property
    def down(self) -> int:
        return len(self) - self.up

    def add(self, signal: Signal) -> None:
        """Learn from ``signal`` (replacing an older one of the same source)."""
        self._signals.pop(signal.key, None)
        self._signals[signal.key] = signal
        self._fitted = None

    def discard(self, key: str) -> None:
        """Forget the signal from source ``key``, if any."""
        if self._signals.pop(key, None) is not None:
            self._fitted = None

    def keep(self, limit: int) -> None:
        """Keep only the ``limit`` newest signals (by arrival)."""
        for key in list(self._signals)[: max(0, len(self._signals) - limit)]:
            self.discard(key)

    def _posterior(self) -> tuple[np.ndarray, np.ndarray]:
        if self._fitted is None:
            signals = list(self._signals.values())
            matrix = self.prior.standardise(np.stack([s.features for s in signals])) if signals \
                else np.zeros((0, len(FEATURES)))
            self._fitted = (matrix, self.prior.fit(matrix, np.asarray([s.liked for s in signals], dtype=bool)))
        return self._fitted

    def score_features(self, raw: np.ndarray) -> np.ndarray:
        """Posterior mean utility of replies with raw ``FEATURES`` rows ``raw``."""
        matrix, alpha = self._posterior()
        return self.prior.predict(self.prior.standardise(raw), matrix, alpha)

    def scores(self, replies: Sequence[str], asked: str) -> list[float]:
        """How much this person should like each of ``replies`` to their message ``asked``."""
        if not replies:
            return []
        raw = combine(np.stack([style_vector(r) for r in replies]), asker_vector(asked))
        return [float(s) for s in self.score_features(raw)]

    def styles(self, asked: str, limit: int) -> list[tuple[Style, float]]:
        """The ``limit`` styles this person should like best for an answer to ``asked``, with their
        predicted utility, best first."""
        asker = asker_vector(asked)
        grid = styles_for(language(asked))
        utility = self.score_features(combine(np.stack([self.prior.prototype(s) for s in grid]), asker))
        order = np.argsort(-utility, kind="stable")[:limit]
        return [(grid[i], float(utility[i])) for i in order]

    def leanings(self, asked: str) -> dict[str, tuple[str, float]]:
        """What the taste prefers on each dimension for an answer to ``asked``: the preferred pole and
        its margin (the mean predicted utility of prototype replies with it minus with the other)."""
        asker = asker_vector(asked)
        grid = styles_for(language(asked))
        utility = self.score_features(combine(np.stack([self.prior.prototype(s) for s in grid]), asker))

        def margin(pick: str, a: Any, b: Any) -> tuple[str, float]:
            first = np.mean([u for s, u in zip(grid, utility, strict=True) if getattr(s, pick) == a])
            second = np.mean([u for s, u in zip(grid, utility, strict=True) if getattr(s, pick) == b])
            diff = float(first - second)
            return (str(a) if diff >= 0 else str(b)), round(abs(diff), 3)

        found = {"length": margin("length", "brief", "detailed"), "tone": margin("tone", "formal", "casual")}
        wants, gap = margin("emoji", True, False)
        found["emoji"] = ("emoji" if wants == "True" else "no emoji", gap)
        languages = list(dict.fromkeys(s.language for s in grid))
        if len(languages) > 1:
            found["language"] = margin("language", languages[0], languages[1])
        return found

    def summary(self, asked: str) -> dict[str, Any]:
        """The profile as ``/why`` shows it: signals seen and what they taught, per dimension."""
        return {"signals": len(self), "up": self.up, "down": self.down, "prior": self.prior.name,
                "leanings": {k: {"prefers": v[0], "margin": v[1]} for k, v in self.leanings(asked).items()}}

    @property
    def nbytes(self) -> int:
        """What this taste holds in memory, roughly: the signals' features and keys, the fitted posterior."""
        held = sum(s.features.nbytes + len(s.key) + 24 for s in self._signals.values())
        if self._fitted is not None:
            held += self._fitted[0].nbytes + self._fitted[1].nbytes
        return held
