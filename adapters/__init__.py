"""Adapters: thin translators between a chat platform and the engine.

Every platform adapter (``discord``, ``slack``, ``telegram``) runs on the one runtime in
``base`` (tasks, de-duplication, the own-message filter, who may teach and manage,
streaming replies, feedback); ``texts`` words what the bot says on its own account,
``streaming`` delivers replies, ``settings`` holds each platform's configuration.

Adapters import only the engine's public surface (``import engine``), never its
internals; ``tests/unit/test_boundaries.py`` checks that.
"""
