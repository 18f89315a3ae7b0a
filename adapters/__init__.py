"""Adapters: thin translators between a chat platform and the engine.

Adapters import only the engine's public surface (``import engine``), never its
internals; ``tests/unit/test_boundaries.py`` checks that.
"""
