-- Why: number 5 is reserved for another branch's migration that is being written at the same
-- time (the loader refuses gaps). This placeholder changes nothing; when the real 005 lands,
-- this file is deleted (or, if it never does, 006 is renumbered to 005 and this file dropped).
SELECT 1;
