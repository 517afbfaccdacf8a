-- Why: Bitrix24 events (SPEC 14). An event names only a task, and a task's members cannot be
-- read back once someone was removed from it or it was deleted: task_members keeps the
-- linked members last seen on each task (bitrix_user_id 0 marks a task known to have none).
-- alert_state.alerted_at keeps a growing counter's alerts to one per poll interval, and
-- outbox.caused_at the receipt time of the event behind a message, for its latency.
CREATE TABLE task_members (
    task_id INTEGER NOT NULL,
    bitrix_user_id INTEGER NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (task_id, bitrix_user_id)
) WITHOUT ROWID;
CREATE INDEX task_members_by_user ON task_members (bitrix_user_id);
CREATE INDEX task_members_by_seen ON task_members (seen_at);
ALTER TABLE alert_state ADD COLUMN alerted_at REAL;
ALTER TABLE outbox ADD COLUMN caused_at REAL;
