-- Why: at 30,000 users (SPEC 8) a digest fan-out queues tens of thousands of outbox rows, and
-- the worker looks for stale queued alerts on every round (several a second): by `status` alone
-- that visited every queued row each time. Housekeeping deletes digest logs by date, which
-- scanned the whole log (60 days of every user's digests).
CREATE INDEX outbox_queued_by_kind ON outbox (status, kind, created_at);
CREATE INDEX digest_log_by_date ON digest_log (local_date);
