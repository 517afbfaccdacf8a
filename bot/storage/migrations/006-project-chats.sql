-- Why: project chats (SPEC 13). A Telegram group follows one Bitrix24 workgroup: the binding
-- records its binder (re-checked daily and before each digest), its own digest settings and
-- the states of a chat's life (suspended: the binder is no longer accountable; removed: the bot
-- left the chat; archived: the project is closed; gone_since: the first of the two empty
-- reads a day apart that end it). project_digest_log keeps one row per chat and local date
-- with the overdue count of that digest (the baseline of "change since the last one"); it
-- follows its binding when a group becomes a supergroup (ON UPDATE CASCADE). project_offers
-- hold the Connect/Cancel offer for 10 minutes; the buttons carry only its id. Outbox rows get
-- the forum topic they go to.
CREATE TABLE project_bindings (
    chat_id                 INTEGER PRIMARY KEY,
    message_thread_id       INTEGER,             -- forum topic where Connect was pressed
    group_id                INTEGER NOT NULL,
    group_name              TEXT    NOT NULL,
    binder_telegram_user_id INTEGER NOT NULL,    -- no FK: /forget suspends the binding, it does not delete it
    binder_bitrix_user_id   INTEGER NOT NULL,
    bound_at                REAL    NOT NULL,
    checked_at              REAL    NOT NULL,    -- last re-check of the binder and the project
    suspended               INTEGER NOT NULL DEFAULT 0,
    removed                 INTEGER NOT NULL DEFAULT 0,
    archived                INTEGER NOT NULL DEFAULT 0,
    gone_since              REAL,
    timezone                TEXT    NOT NULL,
    digest_enabled          INTEGER NOT NULL DEFAULT 1,
    digest_time             TEXT    NOT NULL,
    digest_days             TEXT    NOT NULL,
    digest_empty            INTEGER NOT NULL DEFAULT 0,
    language                TEXT    NOT NULL,
    digest_saved_at         REAL    NOT NULL
);
CREATE INDEX project_bindings_by_group ON project_bindings (group_id);
CREATE INDEX project_bindings_by_binder ON project_bindings (binder_telegram_user_id);

CREATE TABLE project_digest_log (
    chat_id    INTEGER NOT NULL REFERENCES project_bindings ON DELETE CASCADE ON UPDATE CASCADE,
    local_date TEXT    NOT NULL,
    due_at     REAL    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('queued', 'sent', 'skipped', 'failed', 'dropped')),
    overdue    INTEGER,
    outbox_id  INTEGER,
    PRIMARY KEY (chat_id, local_date)
);
CREATE INDEX project_digest_log_by_outbox ON project_digest_log (outbox_id);

CREATE TABLE project_offers (
    offer_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id           INTEGER NOT NULL,
    message_thread_id INTEGER,
    telegram_user_id  INTEGER NOT NULL,
    bitrix_user_id    INTEGER NOT NULL,
    group_id          INTEGER NOT NULL,
    group_name        TEXT    NOT NULL,
    expires_at        REAL    NOT NULL
);

ALTER TABLE outbox ADD COLUMN message_thread_id INTEGER;
