-- Why: the first schema. Users and their links, per-user settings and alert thresholds, alert
-- state, the last good counters, the digest log, the outbox of bulk messages, hashed link codes,
-- limit records (which outlive /forget, so no foreign key) and admin-notice state.
-- Times are Unix seconds (REAL) in UTC; local dates are ISO 'YYYY-MM-DD' text.

CREATE TABLE users (
    telegram_user_id INTEGER PRIMARY KEY,
    chat_id          INTEGER NOT NULL,
    language_code    TEXT,                       -- Telegram's language_code when it is en or ru
    blocked          INTEGER NOT NULL DEFAULT 0, -- the user blocked the bot: no polling, no messages
    created_at       REAL    NOT NULL,
    last_seen_at     REAL    NOT NULL
);

CREATE TABLE links (
    telegram_user_id INTEGER PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    bitrix_user_id   INTEGER NOT NULL UNIQUE,
    full_name        TEXT    NOT NULL,
    linked_at        REAL    NOT NULL,
    checked_at       REAL    NOT NULL            -- last daily user.get re-check
);

CREATE TABLE user_settings (
    telegram_user_id INTEGER PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    timezone         TEXT    NOT NULL,
    digest_enabled   INTEGER NOT NULL,
    digest_time      TEXT    NOT NULL,           -- HH:MM, kept while digests are off
    digest_days      TEXT    NOT NULL,           -- comma list, 0 = Monday
    digest_empty     INTEGER NOT NULL,
    alerts_enabled   INTEGER NOT NULL,
    quiet_start      TEXT,
    quiet_end        TEXT,
    pause_until      TEXT,                       -- local date the user is back
    language         TEXT,                       -- explicit /language choice
    digest_saved_at  REAL    NOT NULL            -- when digest time, days or zone last changed
);

CREATE TABLE alert_thresholds (
    telegram_user_id INTEGER NOT NULL REFERENCES users ON DELETE CASCADE,
    counter          TEXT    NOT NULL,
    threshold        INTEGER NOT NULL CHECK (threshold BETWEEN 1 AND 9999),
    PRIMARY KEY (telegram_user_id, counter)
);

CREATE TABLE alert_state (
    telegram_user_id INTEGER NOT NULL REFERENCES users ON DELETE CASCADE,
    counter          TEXT    NOT NULL,
    alerted          INTEGER NOT NULL,
    peak             INTEGER NOT NULL,
    snooze_until     REAL,
    held             INTEGER NOT NULL,
    baseline_needed  INTEGER NOT NULL,
    PRIMARY KEY (telegram_user_id, counter)
);

CREATE TABLE counter_snapshots (
    telegram_user_id INTEGER NOT NULL REFERENCES users ON DELETE CASCADE,
    role             TEXT    NOT NULL,
    counters         TEXT,                       -- JSON object, NULL for "no access" ([])
    read_at          REAL    NOT NULL,
    PRIMARY KEY (telegram_user_id, role)
);

CREATE TABLE digest_log (
    telegram_user_id INTEGER NOT NULL REFERENCES users ON DELETE CASCADE,
    local_date       TEXT    NOT NULL,
    due_at           REAL    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('sent', 'skipped')),
    counters         TEXT,                       -- JSON {role: {name: value}} of a sent digest
    PRIMARY KEY (telegram_user_id, local_date)
);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    telegram_user_id INTEGER NOT NULL REFERENCES users ON DELETE CASCADE,
    chat_id          INTEGER NOT NULL,
    kind             TEXT    NOT NULL,           -- alert, digest, quiet, notice
    text             TEXT    NOT NULL,
    reply_markup     TEXT,                       -- JSON inline keyboard
    status           TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'dropped')),
    not_before       REAL    NOT NULL,
    created_at       REAL    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    finished_at      REAL,
    error            TEXT
);
CREATE INDEX outbox_pending ON outbox (status, not_before);

CREATE TABLE link_codes (
    telegram_user_id INTEGER PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    bitrix_user_id   INTEGER NOT NULL,
    code_hash        TEXT    NOT NULL,           -- HMAC-SHA-256, keyed from the bot token
    expires_at       REAL    NOT NULL,
    tries_left       INTEGER NOT NULL
);

CREATE TABLE limit_events (
    kind             TEXT    NOT NULL,           -- lookup, code_tg, code_b24
    subject          INTEGER NOT NULL,
    at               REAL    NOT NULL
);
CREATE INDEX limit_events_by_subject ON limit_events (kind, subject, at);

CREATE TABLE admin_notices (
    cause            TEXT    PRIMARY KEY,
    first_seen_at    REAL    NOT NULL,
    last_told_at     REAL,
    active           INTEGER NOT NULL
);

CREATE TABLE meta (
    key              TEXT    PRIMARY KEY,
    value            TEXT    NOT NULL
);
