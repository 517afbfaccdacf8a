-- Why: outbox rows target a chat, not only a Telegram user (a project chat has no user), and
-- finished rows are found by finished_at for retention and /stats; digest_log records what
-- became of each digest's message (queued until the outbox sends it, then sent, failed or
-- dropped) through its outbox row id, and for which Bitrix24 account it was made, so that a
-- relink to another account starts a fresh log; link codes keep what /link resolved, so that
-- /verify checks the code and writes the link in one transaction with no network call between.
-- SQLite cannot change a CHECK or a NOT NULL in place: each table is rebuilt and copied.

CREATE TABLE outbox_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id          INTEGER NOT NULL,           -- where the message goes
    telegram_user_id INTEGER REFERENCES users ON DELETE CASCADE,  -- whom it is for; NULL for a chat
    kind             TEXT    NOT NULL,           -- alert, digest, quiet, notice
    text             TEXT    NOT NULL,           -- cleared once the row is sent, failed or dropped
    reply_markup     TEXT,
    status           TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'dropped')),
    not_before       REAL    NOT NULL,
    created_at       REAL    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    finished_at      REAL,
    error            TEXT
);
INSERT INTO outbox_new (id, chat_id, telegram_user_id, kind, text, reply_markup, status, not_before,
                        created_at, attempts, finished_at, error)
    SELECT id, chat_id, telegram_user_id, kind,
           CASE WHEN status IN ('queued', 'sending') THEN text ELSE '' END,
           reply_markup, status, not_before, created_at, attempts,
           CASE WHEN status IN ('queued', 'sending') THEN finished_at ELSE COALESCE(finished_at, created_at) END,
           error
    FROM outbox;

CREATE TABLE digest_log_new (
    telegram_user_id INTEGER NOT NULL REFERENCES users ON DELETE CASCADE,
    local_date       TEXT    NOT NULL,
    due_at           REAL    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('queued', 'sent', 'skipped', 'failed', 'dropped')),
    counters         TEXT,                       -- JSON {role: {name: value}} of the digest
    bitrix_user_id   INTEGER,                    -- the Bitrix24 account it was made for
    outbox_id        INTEGER,                    -- the message that carries it (no FK: retention differs)
    PRIMARY KEY (telegram_user_id, local_date)
);
INSERT INTO digest_log_new (telegram_user_id, local_date, due_at, status, counters, bitrix_user_id, outbox_id)
    SELECT d.telegram_user_id, d.local_date, d.due_at,
           CASE WHEN q.id IS NOT NULL THEN 'queued' ELSE d.status END,
           d.counters, l.bitrix_user_id, q.id
    FROM digest_log d
    LEFT JOIN links l ON l.telegram_user_id = d.telegram_user_id
    LEFT JOIN outbox q ON q.id = (
        SELECT MAX(o.id) FROM outbox o
        WHERE o.telegram_user_id = d.telegram_user_id AND o.kind = 'digest'
          AND o.status IN ('queued', 'sending') AND d.status = 'sent' AND o.created_at >= d.due_at - 1800);

DROP TABLE digest_log;
ALTER TABLE digest_log_new RENAME TO digest_log;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox (status, not_before);
CREATE INDEX outbox_finished ON outbox (finished_at);
CREATE INDEX outbox_by_chat ON outbox (chat_id, status);
CREATE INDEX outbox_by_user ON outbox (telegram_user_id, status);
CREATE INDEX digest_log_by_outbox ON digest_log (outbox_id);

-- A code pending at the upgrade is dropped: it lasts 10 minutes, and /link sends a new one.
DROP TABLE link_codes;
CREATE TABLE link_codes (
    telegram_user_id INTEGER PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    bitrix_user_id   INTEGER NOT NULL,
    code_hash        TEXT    NOT NULL,           -- HMAC-SHA-256, keyed from the bot token
    expires_at       REAL    NOT NULL,
    tries_left       INTEGER NOT NULL,
    full_name        TEXT    NOT NULL,           -- as user.get returned it at /link
    time_zone        TEXT    NOT NULL            -- the profile's TIME_ZONE at /link ('' if none)
);
CREATE INDEX link_codes_expiry ON link_codes (expires_at);
CREATE INDEX limit_events_by_time ON limit_events (at);
CREATE INDEX links_checked ON links (checked_at);
