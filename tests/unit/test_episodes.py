"""Episode sampling: seeded, no query in its own support set, no label leak across domain splits."""

import json
from pathlib import Path

import numpy as np
import pytest

from engine.training.episodes import (
    OOS,
    EpisodeConfig,
    EpisodeSampler,
    Utterance,
    UtterancePool,
    load_domains,
    load_utterances,
    split_by_domain,
)

DOMAINS = {"bank": ["balance", "transfer", "card"], "home": ["lights", "alarm", "music"]}


def utterances(per_label: int = 12, oos: int = 10) -> list[Utterance]:
    out = [Utterance(f"{label} question {i}", label) for labels in DOMAINS.values() for label in labels
           for i in range(per_label)]
    return out + [Utterance(f"something else {i}", OOS) for i in range(oos)]


def domain_of() -> dict[str, str]:
    return {label: domain for domain, labels in DOMAINS.items() for label in labels}


def test_load_utterances_and_domains(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "hi", "label": "greet"}\n\n{"text": "no idea", "label": "oos"}\n')
    assert load_utterances(path) == [Utterance("hi", "greet"), Utterance("no idea", OOS)]
    (tmp_path / "domains.json").write_text(json.dumps(DOMAINS))
    assert load_domains(tmp_path / "domains.json")["alarm"] == "home"
    path.write_text('{"text": "label missing"}\n')
    with pytest.raises(ValueError, match=r"data\.jsonl:1"):
        load_utterances(path)


def test_load_utterances_reads_clinc_layout(tmp_path: Path) -> None:
    path = tmp_path / "data_full.json"
    path.write_text(json.dumps({"train": [["hi there", "greet"]], "val": [["x", "greet"]],
                                "oos_train": [["what is a moon", "oos"]]}))
    assert load_utterances(path) == [Utterance("hi there", "greet"), Utterance("what is a moon", OOS)]
    path.write_text(json.dumps([["hi", "greet"]]))
    with pytest.raises(ValueError, match="train"):
        load_utterances(path)


def test_same_seed_same_episodes_other_seed_other_episodes() -> None:
    pool = UtterancePool(utterances())
    config = EpisodeConfig(n_way=3, k_shot=4, n_query=3, n_oos=6)
    a, b = EpisodeSampler(pool, config, seed=7).take(5), EpisodeSampler(pool, config, seed=7).take(5)
    for x, y in zip(a, b, strict=True):
        assert x.labels == y.labels and np.array_equal(x.support, y.support) and np.array_equal(x.query, y.query)
        assert np.array_equal(x.oos, y.oos)
    c = EpisodeSampler(pool, config, seed=8).take(5)
    assert any(not np.array_equal(x.support, z.support) for x, z in zip(a, c, strict=True))


def test_no_query_in_its_own_support_set_and_oos_is_out_of_scope() -> None:
    pool = UtterancePool([*utterances(), Utterance("balance question 0", "balance")])  # a duplicate line
    assert len(pool) == len(utterances())  # duplicates are dropped: they would be their own paraphrase
    config = EpisodeConfig(n_way=2, n_way_max=4, k_shot=5, n_query=5, n_oos=8)
    for episode in EpisodeSampler(pool, config, seed=0).take(50):
        n, k = episode.support.shape
        assert 2 <= n <= 4 and k == 5 and len(episode.labels) == n
        used = np.concatenate([episode.support.reshape(-1), episode.query, episode.oos])
        assert len(set(used.tolist())) == len(used), "an utterance is used twice in one episode"
        support_texts = {pool.texts[i] for i in episode.support.reshape(-1)}
        assert not support_texts & {pool.texts[i] for i in episode.query}
        for row, label in enumerate(episode.labels):
            assert {pool.labels[i] for i in episode.support[row]} == {label}
        assert [pool.labels[i] for i in episode.query] == [episode.labels[r] for r in episode.query_labels]
        assert not {pool.labels[i] for i in episode.oos} & set(episode.labels)
        assert len(episode.oos) > 0


def test_mixed_shots_per_episode() -> None:
    pool = UtterancePool(utterances())
    config = EpisodeConfig(n_way=2, k_shot=5, k_shot_min=1, n_query=3, n_oos=4)
    shots = set()
    for episode in EpisodeSampler(pool, config, seed=3).take(60):
        n, k = episode.support.shape
        shots.add(k)
        used = np.concatenate([episode.support.reshape(-1), episode.query])
        assert len(set(used.tolist())) == len(used) and len(episode.query) == n * 3
    assert shots == {1, 2, 3, 4, 5}


def test_too_few_labels_is_an_error() -> None:
    with pytest.raises(ValueError, match="need that many labels"):
        EpisodeSampler(UtterancePool(utterances()), EpisodeConfig(n_way=7))


def test_split_by_domain_leaks_no_label() -> None:
    kept, held = split_by_domain(utterances(), domain_of(), ["home"])
    kept_labels, held_labels = {u.label for u in kept}, {u.label for u in held}
    assert held_labels == set(DOMAINS["home"])
    assert not (kept_labels - {OOS}) & held_labels
    assert OOS in kept_labels and OOS not in held_labels  # oos lines calibrate the radius: training side
    assert len(kept) + len(held) == len(utterances())
    # episodes of the kept side never draw a held-out label, not even as an out-of-scope query
    for episode in EpisodeSampler(UtterancePool(kept), EpisodeConfig(n_way=3, n_oos=10), seed=1).take(20):
        assert not set(episode.labels) & held_labels
        assert not {UtterancePool(kept).labels[i] for i in episode.oos} & held_labels
    with pytest.raises(ValueError, match="unknown domains"):
        split_by_domain(utterances(), domain_of(), ["garden"])
