"""Fuzz: no event or interaction, however malformed, raises out of a handler or stores anything.

Hypothesis draws events for every platform handler (``tests/fakes/fuzz.py``: Slack
events, commands, shortcuts and modal submissions; Telegram messages, commands, edits,
button presses and reactions; Discord gateway messages, reactions, deletions and
interactions), well-formed with random content, or malformed (a field heedful relies on
missing or of the wrong type). Each goes through the real platform library into the
running adapter; the soak (``benchmarks/bench_fuzz_events.py``) runs 100,000 and more.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings

from tests.fakes.fuzz import Case, FuzzRig, cases

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*attribute `retry_after` will be of type `datetime.timedelta`:telegram.warnings.PTBDeprecationWarning",
    "ignore::pytest.PytestUnraisableExceptionWarning",
)


def test_no_event_raises_out_of_a_handler_and_no_malformed_one_stores_anything(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    rig = FuzzRig(tmp_path)
    loop.run_until_complete(rig.__aenter__())
    seen: dict[str, int] = {}
    try:
        @seed(20261206)
        @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(cases(rig.bot_id, rig.guild.id, rig.channel["id"]))
        def check(case: Case) -> None:
            outcome = loop.run_until_complete(rig.deliver(case))
            assert outcome.errors == [], (case, outcome.errors)
            if case.malformed:
                assert outcome.writes == [], (case, outcome.writes)
            key = f"{case.platform}:{'malformed' if case.malformed else 'valid'}"
            seen[key] = seen.get(key, 0) + 1

        check()
    finally:
        loop.run_until_complete(rig.__aexit__(None, None, None))
        loop.close()
    assert all(seen.get(f"{p}:{k}", 0) > 10 for p in ("slack", "telegram", "discord") for k in ("valid", "malformed"))
    assert rig.engine.writes, "well-formed events did reach the engine"
