"""The store: everything that must survive a restart (``Store``), on SQLite or PostgreSQL."""

from .database import is_postgres_url, redact_url
from .schema import MIGRATIONS
from .store import (
    AlreadyApplied,
    Derived,
    Spaces,
    Store,
    StoredAdminSession,
    StoredAdminToken,
    StoredAudit,
    StoredCorrection,
    StoredFact,
    StoredLoraVersion,
    StoredMessage,
    question_key,
)

__all__ = ["Store", "StoredCorrection", "StoredFact", "StoredMessage", "StoredLoraVersion", "StoredAudit",
           "AlreadyApplied", "StoredAdminToken", "StoredAdminSession", "Spaces", "Derived",
           "question_key", "MIGRATIONS", "is_postgres_url", "redact_url"]
