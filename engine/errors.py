"""One root error type; each subclass says who should act on it."""

from __future__ import annotations

__all__ = ["HeedfulError", "InputError", "NotFound", "Overloaded", "EngineClosed", "GenerationError"]


class HeedfulError(Exception):
    """Root of every error the engine raises on purpose."""


class InputError(HeedfulError):
    """The user's input cannot be used; ``str(err)`` is safe to show to that user."""


class NotFound(HeedfulError):
    """The referenced reply, message or correction does not exist in this channel."""


class Overloaded(HeedfulError):
    """Too many requests are waiting for the model; try again in ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineClosed(HeedfulError):
    """The engine is not running (not started yet, or stopped)."""


class GenerationError(HeedfulError):
    """The model failed while producing a reply; the engine itself is still usable."""
