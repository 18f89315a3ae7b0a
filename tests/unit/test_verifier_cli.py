"""``heedful meta-train verifier``: a short run writes a calibrated artifact; ``--recalibrate`` re-calibrates it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.learning.verifier import VerifierArtifact

TOPICS = {
    "shop": ["get a refund", "track my parcel", "change my delivery address", "cancel my order", "use a coupon",
             "reset my shop password"],
    "school": ["hand in my essay", "see my grades", "book an exam seat", "join the chess club", "borrow a library book",
               "change my timetable"],
    "travel": ["book a flight to paris", "cancel my hotel", "get a visa for japan", "rent a car at the airport",
               "add a bag to my flight", "change my seat"],
}
TEMPLATES = ["how do i {}", "can you help me {}", "i want to {}", "please {}", "help me {} on monday",
             "what is the way to {}", "is it possible to {} before 9 am"]


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    rows = [{"text": t.format(topic), "label": f"{domain}_{i}"} for domain, topics in TOPICS.items()
            for i, topic in enumerate(topics) for t in TEMPLATES]
    rows += [{"text": t, "label": "oos"} for t in ("tell me a joke", "what is the capital of peru",
                                                    "play some music", "how tall is everest")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "domains.json").write_text(json.dumps({d: [f"{d}_{i}" for i in range(len(topics))]
                                                        for d, topics in TOPICS.items()}))
    return path


def test_train_then_recalibrate(data: Path, tmp_path: Path) -> None:
    from bots.cli import app

    common = ["--data", str(data), "--holdout-domains", "travel", "--val-domains", "school", "--metric", "none",
              "--cache-dir", str(tmp_path / "cache"), "--json"]
    trained = tmp_path / "verifier.safetensors"
    run = CliRunner().invoke(app, ["meta-train", "verifier", *common, "--steps", "2", "--batch", "8",
                                   "--eval-every", "1", "--calib-episodes", "4", "--rank", "2", "--top-layers", "1",
                                   "--out", str(trained)])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["holdout_domains"] == ["travel"] and trained.is_file()

    again = tmp_path / "recalibrated.safetensors"
    run = CliRunner().invoke(app, ["meta-train", "verifier", *common, "--recalibrate", str(trained),
                                   "--calib-episodes", "6", "--related-rejection", "0.5", "--no-slot-check",
                                   "--out", str(again)])
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout.strip().splitlines()[-1])
    before, after = VerifierArtifact.load(trained), VerifierArtifact.load(again)
    # The same pair model, newly calibrated, with the record of both calibrations.
    assert after.digest == before.digest
    assert all(torch.equal(after.tensors[k], before.tensors[k]) for k in before.tensors)
    assert result["before"]["related_threshold"] == pytest.approx(before.related_threshold)
    assert after.related_threshold == pytest.approx(result["calibration"]["related_threshold"])
    assert after.meta["recalibration"]["slot_check"] is False
    assert after.meta["recalibration"]["related_rejection"] == 0.5
    assert after.meta["selected_step"] == before.meta["selected_step"]

    missing = CliRunner().invoke(app, ["meta-train", "verifier", *common, "--recalibrate", str(tmp_path / "nope"),
                                       "--out", str(again)])
    assert missing.exit_code != 0 and "no such verifier artifact" in missing.output

    # --init fine-tunes it: no --rank / --top-layers, the pair model's shape comes from the artifact.
    tuned = tmp_path / "tuned.safetensors"
    run = CliRunner().invoke(app, ["meta-train", "verifier", *common, "--steps", "1", "--batch", "8",
                                   "--eval-every", "1", "--calib-episodes", "4", "--init", str(trained),
                                   "--select", "last", "--out", str(tuned)])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    after = VerifierArtifact.load(tuned)
    assert summary["init"] == {"from": str(trained), "digest": before.digest} and summary["selected_step"] == 1
    assert after.config == before.config and after.tensors.keys() == before.tensors.keys()
    missing = CliRunner().invoke(app, ["meta-train", "verifier", *common, "--init", str(tmp_path / "nope"),
                                       "--out", str(tuned)])
    assert missing.exit_code != 0 and "no such verifier artifact" in missing.output
    elsewhere = [arg for arg in common if arg not in ("--metric", "none")] + ["--metric", "default"]
    other_space = CliRunner().invoke(app, ["meta-train", "verifier", *elsewhere, "--init", str(trained),
                                           "--out", str(tuned)])
    assert other_space.exit_code != 0 and "metric space" in other_space.output

