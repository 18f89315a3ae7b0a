"""The two benchmark commands on a small CLINC150 slice (committed in ``tests/data``): JSON on the
last line of stdout.

``eval corrections`` runs the real engine path (feedback, then reply) with the tiny LLM,
so the test stays fast; the real model only changes how non-learned replies read.
"""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots.cli import app
from tests.conftest import MODELS_DIR, REPO

CLINC = REPO / "tests" / "data" / "clinc150"  # six labels of CLINC150 (CC BY 3.0; README there)
LABELS = ["translate", "transfer", "timer", "definition", "meaning_of_life", "insurance_change"]


def slice_file(source: Path, target: Path, labels: list[str] | None, per_label: int) -> Path:
    kept: dict[str, int] = {}
    lines = []
    for line in source.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if labels is not None and row["label"] not in labels:
            continue
        if kept.get(row["label"], 0) < per_label:
            kept[row["label"]] = kept.get(row["label"], 0) + 1
            lines.append(line)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "support": slice_file(CLINC / "support_5shot.jsonl", tmp_path / "s.jsonl", LABELS, 5),
        "query": slice_file(CLINC / "test.jsonl", tmp_path / "q.jsonl", LABELS, 6),
        "oos": slice_file(CLINC / "oos_test.jsonl", tmp_path / "o.jsonl", None, 20),
    }


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_eval_intents_json_side_by_side(files: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, ["eval", "intents", "--support", str(files["support"]), "--query",
                                      str(files["query"]), "--oos", str(files["oos"]), "--baseline",
                                      "--adapt-steps", "0,5", "--json"])  # the engine's gated adaptation too
    assert result.exit_code == 0, result.output
    data = last_json(result.stdout)
    assert data["n_labels"] == 6 and data["n_support"] == 30 and data["n_query"] == 36 and data["n_oos"] == 20
    for key in ("accuracy", "in_scope_recall", "oos_recall", "ms_per_query", "threshold"):
        assert data[key] >= 0.0 and (key == "ms_per_query" or data[key] <= 1.0)
    assert data["metric"].startswith("metric:") and data["baseline"]["metric"] == "cosine"
    assert data["accuracy"] > 0.6 and data["baseline"]["accuracy"] > 0.6  # six easy labels
    assert "accuracy_gain" in data
    # 30 corrections over 6 answers: the engine would adapt this channel; the job was judged.
    job = data["channel_adaptation"]
    assert job["held_out"] == 7 and "adapted_accuracy" in job and "score_shift" in job
    instant = data.get("instant", data)
    assert job["installed"] == ("instant" in data)
    if job["installed"]:
        assert job["bytes"] < 1_000_000 and 0.0 <= data["accuracy"] <= 1.0  # per-channel state stays small
    # The inner loop starts at the meta-learned metric: zero steps reproduces the instant path.
    zero, five = data["adaptation"]
    assert (zero["steps"], five["steps"]) == (0, 5) and zero["accuracy"] == instant["accuracy"]
    assert zero["oos_recall"] == instant["oos_recall"] and 0.0 <= five["accuracy"] <= 1.0
    assert five["adapter_bytes"] < 1_000_000


def test_eval_intents_rerank_decides_as_the_engine_serves(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("HEEDFUL_LEARNING_VERIFY_MEMBERS", "3")  # the engine's settings, from the environment
    result = CliRunner().invoke(app, ["eval", "intents", "--support", str(files["support"]), "--query",
                                      str(files["query"]), "--oos", str(files["oos"]), "--no-adapt", "--rerank",
                                      "--json"])
    assert result.exit_code == 0, result.output
    data = last_json(result.stdout)
    rerank = data["rerank"]
    assert rerank["verifier"].startswith("verifier:") and (rerank["answers"], rerank["members"]) == (3, 3)
    assert rerank["slot_check"] is True and rerank["near_copy_veto"] is True and rerank["pair_veto"] == "all"
    assert rerank["n_query"] == data["n_query"] and rerank["n_oos"] == data["n_oos"]
    assert rerank["metric"] == data["metric"] and rerank["n_labels"] == data["n_labels"] == len(LABELS)
    # The engine's radius for answers taught 5 times, not the metric's intent scope.
    assert rerank["radius"] >= data["threshold"]
    # The verifier only vetoes inside the radius: it cannot accept a question the radius turned away.
    plain = rerank["without_verifier"]
    assert rerank["in_scope_recall"] <= plain["in_scope_recall"] and rerank["oos_recall"] >= plain["oos_recall"]
    assert rerank["accuracy_accepted"] <= rerank["in_scope_recall"]
    assert data["rerank_gain"] == round(rerank["accuracy"] - data["accuracy"], 4)
    bad = CliRunner().invoke(app, ["eval", "intents", "--support", str(files["support"]), "--query",
                                   str(files["query"]), "--no-adapt", "--rerank", "--verifier", "/nope"])
    assert bad.exit_code == 2 and "no verifier artifact" in bad.output


def test_eval_intents_keeps_only_the_eval_domains(files: dict[str, Path]) -> None:
    domains = json.loads((CLINC / "domains.json").read_text())
    wanted = next(d for d, labels in domains.items() if "translate" in labels)
    result = CliRunner().invoke(app, ["eval", "intents", "--support", str(files["support"]), "--query",
                                      str(files["query"]), "--domains", str(CLINC / "domains.json"),
                                      "--eval-domains", wanted, "--no-adapt", "--json"])
    assert result.exit_code == 0, result.output
    data = last_json(result.stdout)
    kept = [label for label in LABELS if label in domains[wanted]]
    assert data["n_labels"] == len(kept) and data["n_support"] == 5 * len(kept)
    bad = CliRunner().invoke(app, ["eval", "intents", "--support", str(files["support"]), "--query",
                                   str(files["query"]), "--domains", str(CLINC / "domains.json"),
                                   "--eval-domains", "no_such_domain"])
    assert bad.exit_code == 2 and "error:" in bad.output


def test_eval_intents_missing_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "intents", "--support", str(tmp_path / "nope.jsonl"),
                                      "--query", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_eval_corrections_through_the_engine(files: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_MODELS_DIR", str(MODELS_DIR))
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path / "data"))
    plot = tmp_path / "curve.png"
    result = CliRunner().invoke(app, [
        "eval", "corrections", "--support", str(files["support"]), "--query", str(files["query"]),
        "--oos", str(files["oos"]), "--mode", "metric", "--model", "tiny:0", "--limit", "10",
        "--curve", "1,5", "--curve-queries", "4", "--max-new-tokens", "4", "--concurrency", "4",
        "--plot", str(plot), "--json",
    ])
    assert result.exit_code == 0, result.output
    data = last_json(result.stdout)
    assert data["mode"] == "metric" and data["channels"] == 2 and data["taught_labels"] == 5
    assert data["isolation_violations"] == 0
    assert data["reliability"] == 1.0  # a corrected question asked again gets its own channel's answer
    for key in ("generality", "locality"):
        assert 0.0 <= data[key] <= 1.0
    assert data["correction_to_effect_ms"]["n"] >= 1 and data["correction_to_effect_ms"]["p99"] is not None
    assert [p["corrections"] for p in data["curve"]] == [1, 5]
    assert plot.exists() and plot.stat().st_size > 0


@pytest.mark.real_model
def test_eval_corrections_both_paths_with_the_real_model(files: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``--mode both``: the engine as it serves (metric + per-channel adapters consolidated in the
    background from the shipped init), the metric path alone, and the LoRA side-by-side with its
    baselines, in one JSON object and three plots."""
    monkeypatch.setenv("HEEDFUL_MODELS_DIR", str(MODELS_DIR))
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path / "data"))
    plot = tmp_path / "curve.png"
    result = CliRunner().invoke(app, [
        "eval", "corrections", "--support", str(files["support"]), "--query", str(files["query"]),
        "--oos", str(files["oos"]), "--mode", "both", "--limit", "4", "--curve", "1", "--curve-queries", "2",
        "--max-new-tokens", "8", "--tasks", "2", "--inner-steps", "1", "--max-steps", "2", "--lora-curve", "",
        "--plot", str(plot), "--json",
    ])
    assert result.exit_code == 0, result.output
    data = last_json(result.stdout)
    assert data["mode"] == "both" and data["lora"] is True
    metric, lora = data["metric_path"], data["lora_path"]
    assert metric["reliability"] == 1.0 and metric["isolation_violations"] == 0 and metric["lora"] is False
    # Both channels were taught enough for a consolidation; each candidate was judged and stored.
    assert sum(data["adapters"].values()) >= 2 and not metric["adapters"]
    assert data["reliability"] == 1.0 and data["isolation_violations"] == 0
    assert lora["path"] == "lora" and lora["tasks"] == 2 and lora["inner_steps"] == 1
    assert set(lora["baselines"]) == {"none", "standard_sgd", "standard_adam"}
    assert set(lora["variants"]) == {"meta_adam"}
    assert lora["baselines"]["none"]["locality"] == 1.0  # no adaptation replies exactly as the base model
    for m in (lora, *lora["baselines"].values(), *lora["variants"].values()):
        assert all(0.0 <= m[k] <= 1.0 for k in ("reliability", "generality", "locality"))
        assert m["query_loss"] > 0
    # One inner step of fine-tuning lowers the loss of the corrected answers below no adaptation.
    assert lora["query_loss"] < lora["baselines"]["none"]["query_loss"]
    for path in ("metric", "lora", "both"):
        drawn = tmp_path / f"curve-{path}.png"
        assert drawn.stat().st_size > 1000


def test_eval_corrections_lora_refuses_an_init_for_another_model(files: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_MODELS_DIR", str(MODELS_DIR))
    args = ["eval", "corrections", "--support", str(files["support"]), "--query", str(files["query"])]
    wrong = CliRunner().invoke(app, [*args, "--mode", "lora", "--model", "tiny:0", "--tasks", "1"])
    assert wrong.exit_code == 2 and "does not fit" in wrong.output  # the shipped init is SmolLM2's
    bogus = CliRunner().invoke(app, [*args, "--mode", "gradient"])
    assert bogus.exit_code == 2 and "--mode must be" in bogus.output
    missing = CliRunner().invoke(app, [*args, "--mode", "lora", "--lora-init", str(tmp_path / "no.safetensors")])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_bad_input_lines_are_skipped_and_reported_not_fatal(files: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """One unusable line in a query file must not lose a long run: it is reported up front, by line."""
    monkeypatch.setenv("HEEDFUL_MODELS_DIR", str(MODELS_DIR))
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path / "data"))
    good = files["query"].read_text(encoding="utf-8").splitlines()
    query = tmp_path / "q-bad.jsonl"
    query.write_text("\n".join([good[0], '{"text": "", "label": "x"}', "not json at all", good[1],
                                '{"text": "\\u0007  \\u001b[31m", "label": "x"}', '{"text": "no label"}',
                                *good[2:]]) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, [
        "eval", "corrections", "--support", str(files["support"]), "--query", str(query),
        "--oos", str(files["oos"]), "--mode", "metric", "--model", "tiny:0", "--limit", "4",
        "--curve", "1", "--curve-queries", "2", "--max-new-tokens", "4", "--json",
    ])
    assert result.exit_code == 0, result.output
    data = last_json(result.stdout)
    assert [b["line"] for b in data["skipped_lines"]["--query"]] == [2, 3, 5, 6]
    assert "skipping 4 unusable line(s)" in result.stderr
    intents = CliRunner().invoke(app, ["eval", "intents", "--support", str(files["support"]), "--query", str(query),
                                       "--json"])
    assert intents.exit_code == 0, intents.output
    assert len(last_json(intents.stdout)["skipped_lines"]["--query"]) == 4
