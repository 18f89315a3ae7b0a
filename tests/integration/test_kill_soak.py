"""kill -9 at random moments loses nothing acknowledged (a small run of benchmarks/bench_kill_soak.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_correction_and_splits_no_channel() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_kill_soak.py"), "--kills", "8", "--clients", "12",
         "--seed", "7", "--json"], capture_output=True, text=True, timeout=600, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["acknowledged"] > 0 and result["moves"] > 0  # the kills landed in real work
    assert (result["lost"], result["duplicates"], result["split"], result["multi_active"]) == (0, 0, 0, 0)
