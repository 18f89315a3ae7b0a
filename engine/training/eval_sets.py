"""The benchmarks' input files: labelled utterances, optionally narrowed to some domains.

Both ``heedful eval`` benchmarks read the same kind of files (JSON lines ``{text, label}``,
``episodes.load_utterances``) and may keep only the labels of some domains, usually
domains that meta-training never saw, so that the numbers measure transfer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .episodes import BadLine, Utterance, load_domains, load_utterances, split_by_domain
from .runs import Log, RunError, silent_log

__all__ = ["load_eval_sets", "skipped_report"]


def load_eval_sets(files: Mapping[str, Path | None], eval_domains: Sequence[str] = (), domains: Path | None = None,
                   unfiltered: Sequence[str] = ("--oos",), skipped: dict[str, list[BadLine]] | None = None,
                   ) -> dict[str, list[Utterance]]:
    """Load each named file (``None``: an empty set); with ``eval_domains``, keep only those
    domains' labels in every set not named in ``unfiltered`` (out-of-scope lines have no domain).

    ``files`` maps the name a person knows the file by (the command's option) to its path, so
    that a ``RunError`` names the right one. ``domains`` is the ``{domain: [labels]}`` map
    (default: ``domains.json`` beside the first file). Lines that cannot be used (not JSON,
    no text or label, a text the engine would refuse) go to ``skipped[name]`` when it is
    given, so that one bad line never loses a long run; without it they raise ``RunError``.
    """
    for name, path in files.items():
        if path is not None and not path.is_file():
            raise RunError(f"{name}: no such file {path}")
    sets: dict[str, list[Utterance]] = {}
    try:
        for name, path in files.items():
            bad: list[BadLine] | None = None if skipped is None else skipped.setdefault(name, [])
            sets[name] = load_utterances(path, bad) if path else []
    except (ValueError, UnicodeDecodeError) as err:
        raise RunError(str(err)) from None
    if eval_domains:
        first = next(path for path in files.values() if path is not None)
        domains = domains or first.parent / "domains.json"
        if not domains.is_file():
            raise RunError(f"--domains: no such file {domains} (needed for --eval-domains)")
        label_domains = load_domains(domains)
        try:
            for name in sets:
                if name not in unfiltered:
                    sets[name] = split_by_domain(sets[name], label_domains, list(eval_domains))[1]
        except ValueError as err:
            raise RunError(str(err)) from None
    return sets


def skipped_report(skipped: Mapping[str, Sequence[BadLine]],
                   log: Log = silent_log) -> dict[str, list[dict[str, object]]]:
    """Say up front which lines a run leaves out (``log``), and the same as JSON-ready data."""
    report: dict[str, list[dict[str, object]]] = {}
    for name, bad in skipped.items():
        if not bad:
            continue
        shown = ", ".join(f"line {b.line} ({b.why})" for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
        log(f"{name}: skipping {len(bad)} unusable line(s): {shown}")
        report[name] = [{"line": b.line, "why": b.why} for b in bad]
    return report
