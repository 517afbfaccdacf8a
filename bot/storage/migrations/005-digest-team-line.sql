-- Why: a department head's digest ends with one line about their team (SPEC 12), and
-- `/digest team on|off` turns it off; on by default, as for every new link (SPEC 6).
ALTER TABLE user_settings ADD COLUMN digest_team INTEGER NOT NULL DEFAULT 1;
