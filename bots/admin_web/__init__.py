"""The admin console: web pages where a community's managers see and steer what the bot learned.

Served by ``heedful run`` under ``/admin`` on the same HTTP server as ``/metrics``
(``bots.http_server``); managers sign in with a token from ``heedful admin create``.
"""

from __future__ import annotations

from .app import console_app
from .cli import admin_cli

__all__ = ["console_app", "admin_cli"]
