"""The database schema: numbered migrations, applied in order, the same on every backend.

Written in SQLite's dialect; ``postgres.translate_schema`` maps its few types for PostgreSQL
(``INTEGER PRIMARY KEY`` ids become identity columns, ``REAL`` double precision, ``BLOB`` bytea).
A migration is never edited once released: a change is a new migration.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MIGRATIONS"]

MIGRATIONS: Sequence[str] = (
    # 1: the foundation schema.
    """
    CREATE TABLE channels (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL,
        space TEXT NOT NULL,
        channel TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        UNIQUE (platform, space, channel)
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        channel_id INTEGER NOT NULL REFERENCES channels(id),
        thread TEXT NOT NULL DEFAULT '',
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        reply_id TEXT UNIQUE,
        platform_message_id TEXT NOT NULL DEFAULT '',
        reply_to TEXT NOT NULL DEFAULT '',
        question_id INTEGER REFERENCES messages(id),
        author_id TEXT NOT NULL DEFAULT '',
        author_name TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        explanation TEXT,
        complete INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_history ON messages (channel_id, thread, id);
    CREATE INDEX messages_platform ON messages (channel_id, platform_message_id);
    CREATE TABLE message_links (
        channel_id INTEGER NOT NULL REFERENCES channels(id),
        platform_message_id TEXT NOT NULL,
        message_id INTEGER NOT NULL REFERENCES messages(id),
        PRIMARY KEY (channel_id, platform_message_id)
    );
    CREATE TABLE corrections (
        id INTEGER PRIMARY KEY,
        channel_id INTEGER NOT NULL REFERENCES channels(id),
        message_id INTEGER REFERENCES messages(id),
        question TEXT NOT NULL,
        answer TEXT NOT NULL,
        author_id TEXT NOT NULL DEFAULT '',
        embedding BLOB NOT NULL,
        encoder TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        forgotten_at REAL
    );
    CREATE INDEX corrections_active ON corrections (channel_id, active);
    CREATE TABLE thumbs (
        id INTEGER PRIMARY KEY,
        channel_id INTEGER NOT NULL REFERENCES channels(id),
        message_id INTEGER NOT NULL REFERENCES messages(id),
        kind TEXT NOT NULL CHECK (kind IN ('up', 'down')),
        author_id TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE TABLE adapter_versions (
        id INTEGER PRIMARY KEY,
        channel_id INTEGER NOT NULL REFERENCES channels(id),
        version INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'candidate',
        weights BLOB,
        metrics TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        UNIQUE (channel_id, version)
    );
    """,
    # 2: background consolidation jobs survive restarts.
    """
    CREATE TABLE consolidation_jobs (
        channel_id INTEGER PRIMARY KEY REFERENCES channels(id),
        requested_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX adapter_versions_status ON adapter_versions (channel_id, status);
    """,
    # 3: "adapter" means a platform adapter only; a channel's trained LoRA weights are LoRA versions.
    """
    ALTER TABLE adapter_versions RENAME TO lora_versions;
    DROP INDEX adapter_versions_status;
    CREATE INDEX lora_versions_status ON lora_versions (channel_id, status);
    """,
    # 4: platform events whose feedback was applied, recorded in the same transaction as the
    # effect, so a redelivered event is recognised and applied at most once.
    """
    CREATE TABLE applied_events (
        channel_id INTEGER NOT NULL REFERENCES channels(id),
        event_id TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (channel_id, event_id)
    );
    """,
    # 5: who changed what the bot learned (the audit log); corrections by author (undo by
    # author, rate limits, per-user export and delete); corrections waiting for review.
    """
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        channel_id INTEGER REFERENCES channels(id),
        author_id TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE INDEX audit_log_channel ON audit_log (channel_id, id);
    CREATE INDEX audit_log_author ON audit_log (author_id, id);
    CREATE INDEX corrections_author ON corrections (author_id, created_at);
    CREATE INDEX messages_author ON messages (author_id);
    ALTER TABLE corrections ADD COLUMN review TEXT NOT NULL DEFAULT '';
    """,
    # 6: the admin console: managers' sign-in tokens (salted hashes only, each limited to one
    # space or, with scope '', to every space) and their sessions (hashes of the cookie's id).
    """
    CREATE TABLE admin_tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL DEFAULT '',
        salt BLOB NOT NULL,
        digest BLOB NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE admin_sessions (
        id_digest BLOB PRIMARY KEY,
        token_id INTEGER NOT NULL REFERENCES admin_tokens(id),
        csrf TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX messages_channel_time ON messages (channel_id, created_at);
    """,
    # 7: generality grows with use, reversibly. A correction is 'taught' (by a person) or
    # 'confirmed' (an asker's 👍 on an answer served from correction ``source_id`` made their
    # phrasing a member of that answer). Negatives: phrasings a served answer was corrected on,
    # "correction ``source_id``'s answer does NOT apply to messages like this"; in their own
    # table, so every query of active corrections stays as it was. Both go with their source.
    """
    ALTER TABLE corrections ADD COLUMN origin TEXT NOT NULL DEFAULT 'taught';
    ALTER TABLE corrections ADD COLUMN source_id INTEGER REFERENCES corrections(id);
    CREATE INDEX corrections_source ON corrections (source_id);
    CREATE TABLE negatives (
        id INTEGER PRIMARY KEY,
        channel_id INTEGER NOT NULL REFERENCES channels(id),
        source_id INTEGER NOT NULL REFERENCES corrections(id),
        message_id INTEGER REFERENCES messages(id),
        question TEXT NOT NULL,
        author_id TEXT NOT NULL DEFAULT '',
        embedding BLOB NOT NULL,
        encoder TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        forgotten_at REAL
    );
    CREATE INDEX negatives_active ON negatives (channel_id, active);
    CREATE INDEX negatives_source ON negatives (source_id);
    CREATE INDEX negatives_author ON negatives (author_id);
    """,
    # 8: the personal scope, narrower than the channel's (DESIGN.md, "Scopes"): a correction with a
    # ``person`` is that person's "just for me" correction and shapes only the replies to them (every
    # channel-wide query keeps to ``person = ''``); facts a person told about themselves, per channel.
    # Both are deleted, not deactivated, when the person asks to be forgotten.
    """
    ALTER TABLE corrections ADD COLUMN person TEXT NOT NULL DEFAULT '';
    CREATE INDEX corrections_person ON corrections (channel_id, person, active);
    CREATE TABLE personal_facts (
        id INTEGER PRIMARY KEY,
        channel_id INTEGER NOT NULL REFERENCES channels(id),
        person TEXT NOT NULL,
        text TEXT NOT NULL,
        embedding BLOB NOT NULL,
        encoder TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX personal_facts_person ON personal_facts (channel_id, person);
    CREATE INDEX personal_facts_by ON personal_facts (person);
    """,
    # 9: several processes share one database: a consolidation job is claimed (by a process id,
    # until a lease runs out) before it is trained, so that each is trained exactly once and a
    # claim left by a process that died is taken over when its lease ends.
    """
    ALTER TABLE consolidation_jobs ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE consolidation_jobs ADD COLUMN claimed_until REAL NOT NULL DEFAULT 0;
    """,
    # 10: a person's taste is read from their 👍 / 👎 in one channel (learning/personal.py).
    """
    CREATE INDEX thumbs_person ON thumbs (channel_id, author_id);
    """,
)
