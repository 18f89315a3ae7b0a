"""heedful in Slack: slack-bolt's async app over Socket Mode or the HTTP Events API.

``bots.runner`` calls ``create(engine, settings)`` when ``HEEDFUL_SLACK_BOT_TOKEN``
is set, then ``await adapter.start()`` / ``await adapter.stop()``. Set-up:
``docs/slack.md``; the app manifest: ``deploy/slack-manifest.yaml``.

- ``adapter``: events, gestures and commands -> engine calls
- ``transport``: Socket Mode handler and the signature-checking HTTP receiver
- ``web``: Slack Web API facts (identity, admins, posting reply messages)
- ``markup``, ``views``: pure text and Block Kit functions
"""

from __future__ import annotations

from engine import Engine

from ..settings import SlackSettings
from .adapter import SlackAdapter, SlackStartError

__all__ = ["SlackAdapter", "SlackStartError", "create"]


def create(engine: Engine, settings: SlackSettings) -> SlackAdapter:
    """The Slack adapter for ``settings`` (not started yet)."""
    return SlackAdapter(engine, settings)
