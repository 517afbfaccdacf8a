-- Why: the digest lists the most overdue tasks under the counters (SPEC 11); `/digest tasks
-- on|off` turns those lines on or off, default on for every user, new or existing.
ALTER TABLE user_settings ADD COLUMN digest_tasks INTEGER NOT NULL DEFAULT 1;
